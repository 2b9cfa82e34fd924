"""Undo an anonymisation with the right key.

Order of preference per image: the **vault** (exact original pixels) when it is present,
opens with the key, was made by a trusted site and is bound to *this* image; otherwise the
**robust** in-pixel tier (a close reconstruction that survives re-encoding, resizing and
mild crops). Whatever stops the vault (damaged, wrong key, forged, moved from another
image, resized) is said in a note and the robust tier is tried; only when that fails too
is the image an error, carrying the most telling of the two reasons.

Nothing decoded is trusted before use: every face record is checked against the image
(rectangle inside it, stored patch of the stated size, finite placement, known code) and
a bad record is a per-face error, never a crash or a half-restored file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from refacex.anonymize.base import CROP_PADDING as VAULT_PADDING
from refacex.errors import (
    BindingError,
    NoPayloadError,
    PayloadError,
    RefacexError,
    UntrustedPayloadError,
)
from refacex.faces.align import (
    feather_mask,
    invert_affine,
    template,
    transform_points,
    warp_to_roi,
)
from refacex.faces.masks import face_mask
from refacex.io.images import decode_image
from refacex.payload import learned_code
from refacex.payload.binding import image_binding
from refacex.payload.facecode import CODE_PADDING, CODE_SIZE, codec
from refacex.payload.format import FaceRecord, Payload, decode_payload
from refacex.payload.keyring import OpenKeys
from refacex.stego import robust


@dataclass
class RecoverResult:
    image: np.ndarray
    tier: str  # "vault" | "robust"
    faces: list[dict] = field(default_factory=list)  # per face: index, tier, how placed
    notes: list[str] = field(default_factory=list)
    #: Why a vault present in the file was not used (its error class), else None.
    vault_refused: str | None = None


def _check_provenance(payload: Payload, keys: OpenKeys, tier: str, notes: list[str]) -> None:
    """Refuse a payload no trusted site made (unless the user accepts unsigned ones)."""
    if payload.provenance.startswith("site:") or payload.provenance == "passphrase":
        return
    what = ("is not signed" if payload.provenance == "unsigned" else
            f"is signed by site {payload.provenance.split(':', 1)[1]}, which you do not trust")
    if keys.allow_unsigned:
        notes.append(f"{tier} payload {what}; used because unsigned payloads were allowed")
        return
    raise UntrustedPayloadError(
        f"{tier} payload {what}: anyone with the public key could have written it "
        "(add the site's key with --trust SITE.pub, or --allow-unsigned to accept it)")


def _vault_patch(rec: FaceRecord, shape: tuple[int, ...]) -> np.ndarray:
    """The stored original of one face, checked against the image before decoding."""
    x, y, w, h = (int(v) for v in rec.rect)
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > shape[1] or y + h > shape[0]:
        raise PayloadError(f"face {rec.index}: region {list(rec.rect)} is not inside the "
                           f"{shape[1]}x{shape[0]} image")
    if rec.codec not in ("png", "webp-lossless"):
        raise PayloadError(f"face {rec.index}: unknown vault codec {rec.codec!r}")
    try:  # size from the header first: a forged record must not make us decode a bomb
        with Image.open(io.BytesIO(rec.data)) as im:
            size = im.size
    except Exception:
        raise PayloadError(f"face {rec.index}: stored region is not an image") from None
    if size != (w, h):
        raise PayloadError(f"face {rec.index}: stored region is {size[0]}x{size[1]}, "
                           f"not {w}x{h}")
    try:
        patch = decode_image(rec.data, name=f"face {rec.index}")
    except RefacexError as exc:
        raise PayloadError(str(exc)) from None
    if patch.shape[:2] != (h, w):
        raise PayloadError(f"face {rec.index}: stored region does not match its size")
    return patch


def _restore_vault(img: np.ndarray, payload: Payload) -> RecoverResult:
    """Paste every valid face record back; bad records are per-face errors."""
    out = img.copy()
    faces = []
    # Reverse order: where edit regions overlap, the first face's original wins, which
    # is what the image held before any face was edited.
    for rec in reversed(payload.faces):
        try:
            patch = _vault_patch(rec, img.shape)
        except PayloadError as exc:
            faces.append({"index": rec.index, "tier": "none", "error": str(exc)})
            continue
        x, y, w, h = (int(v) for v in rec.rect)
        out[y:y + h, x:x + w] = patch
        faces.append({"index": rec.index, "tier": "vault", "rect": [x, y, w, h],
                      "kps": _kps(rec.affine, rec.crop_size, VAULT_PADDING)})
    return _result(out, "vault", sorted(faces, key=lambda f: f["index"]), "the vault")


def _kps(m: np.ndarray, size: int, padding: float) -> list[list[float]]:
    """The face's five landmarks in the restored image, from the record's placement
    (image -> aligned crop ``m``): where ``refacex search`` reads the restored identity."""
    pts = transform_points(invert_affine(np.asarray(m, np.float64)), template(size, padding))
    return np.round(pts, 2).tolist()


def _result(out: np.ndarray, tier: str, faces: list[dict], what: str) -> RecoverResult:
    """The restored image, with a note per face that could not be restored; an error when
    not one face could (the file then falls back, or fails, as a whole)."""
    if not any(f["tier"] == tier for f in faces):
        raise PayloadError(f"no face record of {what} is usable"
                           + (f" ({faces[0]['error']})" if faces else " (it holds none)"))
    notes = [f"face {f['index']} not restored: {f['error']}" for f in faces if "error" in f]
    return RecoverResult(out, tier, faces, notes)


def _from_vault(img: np.ndarray, blob: bytes, keys: OpenKeys, notes: list[str]
                ) -> RecoverResult:
    """Open, authenticate and check the vault against this very image, then restore."""
    payload = decode_payload(blob, **keys.crypto_kwargs())
    _check_provenance(payload, keys, "vault", notes)
    if tuple(payload.image_size) != (img.shape[1], img.shape[0]):
        raise BindingError(f"vault is for a {payload.image_size[0]}x{payload.image_size[1]} "
                           f"image, this one is {img.shape[1]}x{img.shape[0]} (resized?)")
    if payload.binding is None:
        if not keys.allow_unsigned:
            raise BindingError("vault is not bound to an image (written before 1.2): it "
                               "could belong to another image (--allow-unsigned to use it)")
        notes.append("vault is not bound to an image; used because unsigned payloads "
                     "were allowed")
    elif payload.binding != image_binding(img, [r.rect for r in payload.faces]):
        raise BindingError("vault belongs to another image (its face regions do not match "
                           "this image's pixels)")
    return _restore_vault(img, payload)


def _code_mask() -> np.ndarray:
    """Where a decoded face code is trusted: an ellipse over brows-to-chin in code space."""
    t = template(CODE_SIZE, CODE_PADDING)
    m = np.zeros((CODE_SIZE, CODE_SIZE), np.uint8)
    eyes, mouth = t[:2].mean(0), t[3:].mean(0)
    center = (eyes + mouth) / 2 + np.array([0, -0.05 * CODE_SIZE])
    axes = (0.40 * CODE_SIZE, 0.48 * CODE_SIZE)
    cv2.ellipse(m, (center * 16).astype(int).tolist(), (np.array(axes) * 16).astype(int).tolist(),
                0, 0, 360, 255, -1, cv2.LINE_AA, shift=4)
    return m


def _centre(m: np.ndarray) -> np.ndarray:
    """Image point at the centre of the crop that ``m`` (image -> crop) cuts out."""
    return invert_affine(m) @ np.array([CODE_SIZE / 2, CODE_SIZE / 2, 1.0])


def _match(m: np.ndarray, detections: list, tolerance: float = 0.35):
    """The detection whose centre lies near the crop ``m`` describes, or None."""
    centre = _centre(m)
    best, best_d = None, tolerance * _size(m)
    for f in detections:
        d = float(np.linalg.norm(f.box[:2] + f.box[2:] / 2 - centre))
        if d < best_d:
            best, best_d = f, d
    return best


def _size(m: np.ndarray) -> float:
    """Side length, in image pixels, of the crop that ``m`` cuts out."""
    return float(np.linalg.norm(invert_affine(m)[:, 0]) * CODE_SIZE)


def _restore_robust(img: np.ndarray, payload: Payload, located: robust.Located
                    ) -> RecoverResult:
    """Blend each face's decoded code back in, placed by the decoder's own geometry.

    The stored transforms are exact for the original; the robust decoder says where the
    received image sits on the original's grid (its synchronisation: resize scale, crop
    offset, to a fraction of a pixel), so composing the two places every face exactly,
    with no reliance on re-detecting anonymised faces (whose landmarks sit a few pixels
    off the original's).
    """
    from refacex.pipeline import analyzer

    fa = analyzer()
    detections = fa.detector.detect(img)
    out = img.copy()
    faces = []
    fc = codec()
    back = np.vstack([located.to_original(*payload.image_size), [0.0, 0.0, 1.0]])
    mats = [np.asarray(r.affine, np.float64) @ back for r in payload.faces]
    for rec, m in zip(payload.faces, mats, strict=True):
        try:
            decoded, received = _robust_face(rec, m, img, fc)
        except PayloadError as exc:
            faces.append({"index": rec.index, "tier": "none", "error": str(exc)})
            continue
        face = _match(m, detections)
        mask = _edit_mask(img, m, face, fa)
        out = _blend_low_frequencies(out, decoded, m, mask, received)
        faces.append({"index": rec.index, "tier": "robust", "placed_by": "decoder-geometry",
                      "code": rec.codec, "code_bytes": len(rec.data),
                      "kps": _kps(m, CODE_SIZE, CODE_PADDING)})
    return _result(out, "robust", faces, "the in-pixel payload")


def _robust_face(rec: FaceRecord, m: np.ndarray, img: np.ndarray, fc
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one compact face code after checking its placement lies on the image:
    (decoded face, the received face it was decoded against, or None for the PCA code)."""
    if rec.codec not in ("pca-v1", learned_code.NAME):
        raise PayloadError(f"face {rec.index}: unknown face code {rec.codec!r}")
    if not np.all(np.isfinite(m)):
        raise PayloadError(f"face {rec.index}: placement is not finite")
    side, (cx, cy) = _size(m), _centre(m)
    h, w = img.shape[:2]
    if not (4.0 <= side <= 4.0 * max(h, w)) or not (-side <= cx <= w + side
                                                    and -side <= cy <= h + side):
        raise PayloadError(f"face {rec.index}: placement is outside the image")
    try:
        if rec.codec == "pca-v1":
            return fc.decode(rec.data), None
        if not learned_code.available():
            raise PayloadError(f"face {rec.index}: this install lacks the {rec.codec} "
                               "recovery model")
        received = learned_code.cut(img, m)
        return learned_code.codec().decode(rec.data, received), received
    except (ValueError, IndexError) as exc:
        raise PayloadError(f"face {rec.index}: face code unusable ({exc})") from None


def _edit_mask(img: np.ndarray, m: np.ndarray, face, fa) -> np.ndarray:
    """Where the anonymiser may have changed pixels, in code-crop space (float 0..1).

    Anonymisers edit the landmark face mask (jaw, brows, a forehead band); swaps keep the
    landmarks, so the mask re-measured on the received image matches the edited region.
    Hair and background outside it are already original and must not be overwritten by
    the low-resolution code. Without a re-detected face, a generous ellipse is used.
    """
    if face is None:
        return _code_mask().astype(np.float32) / 255.0
    fa.describe(img, face, landmarks=True, pose=False)
    lm = transform_points(m, face.landmarks)
    mask = face_mask((CODE_SIZE, CODE_SIZE), lm, forehead=1.0).astype(np.float32) / 255.0
    grow = max(1, int(round(0.06 * CODE_SIZE))) | 1
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    return mask


def _blend_low_frequencies(img: np.ndarray, decoded: np.ndarray, m: np.ndarray,
                           mask: np.ndarray, received: np.ndarray | None = None
                           ) -> np.ndarray:
    """Replace the received face's low frequencies (what the code describes, up to the
    decoded crop's resolution) by the decoded ones, keeping its detail:
    ``out = img + up(decoded - down(img))`` inside the mask (``mask`` at ``CODE_SIZE``).
    The swap keeps the original eyes and mouth interior, so their detail is real;
    elsewhere the donor's fine detail is weak and the decoded face dominates.
    ``received``: the crop ``decoded`` was computed from (the learned code's recovery
    network sees it), else it is cut here."""
    size = decoded.shape[0]
    ms = np.asarray(m, np.float64) * (size / CODE_SIZE)
    if received is None:
        received = cv2.warpAffine(img, ms, (size, size), flags=cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_REFLECT_101)
    delta = decoded.astype(np.float32) - received.astype(np.float32)
    if mask.shape[0] != size:
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    warped = warp_to_roi(delta, feather_mask(size, mask, feather=0.06), ms, img.shape[:2])
    if warped is None:
        return img
    (x, y, w, h), up, alpha = warped
    out = img.copy()
    roi = out[y:y + h, x:x + w].astype(np.float32)
    out[y:y + h, x:x + w] = np.clip(roi + alpha * up + 0.5, 0, 255).astype(np.uint8)
    return out


def recover(data: bytes | Path | str, keys: OpenKeys, sidecar: bytes | None = None
            ) -> RecoverResult:
    """Recover the original from an anonymised file's bytes (or path)."""
    from refacex.stego import vault

    name = "<bytes>"
    if isinstance(data, str | Path):
        path = Path(data)
        if sidecar is None:
            sidecar = vault.read_sidecar(path)
        data, name = path.read_bytes(), str(path)
    img = decode_image(data, name=name)
    notes: list[str] = []
    vault_error: PayloadError | None = None
    try:
        vblob = vault.extract(data) or sidecar
    except PayloadError as exc:
        vblob, vault_error = None, exc
        notes.append(f"vault not used: {exc}; trying the robust tier")
    if vblob is not None:
        try:
            res = _from_vault(img, vblob, keys, notes)
            res.notes = notes + res.notes
            return res
        except PayloadError as exc:
            vault_error = exc
            notes.append(f"vault not used: {exc}; trying the robust tier")
    try:
        located = robust.locate(img)
    except NoPayloadError:
        if vault_error is not None:
            # Keep the vault's error class (wrong key, tampered...): it is the finding.
            raise type(vault_error)(f"{vault_error} (and no robust payload to fall back on)"
                                    ) from None
        raise NoPayloadError("no refacex payload in this image (neither vault nor robust "
                             "tier): it was not anonymised by refacex, or too damaged") from None
    try:
        payload = decode_payload(located.data, **keys.crypto_kwargs())
        _check_provenance(payload, keys, "in-pixel", notes)
        res = _restore_robust(img, payload, located)
    except PayloadError as exc:
        if vault_error is None:
            raise
        raise type(exc)(f"{exc}; the vault was not usable either ({vault_error})") from None
    res.notes = notes + res.notes
    res.vault_refused = type(vault_error).__name__ if vault_error is not None else None
    return res
