"""Undo an anonymisation with the right key.

Order of preference per image: the **vault** (exact original pixels) when it is present,
intact and matches the image's size; otherwise the **robust** in-pixel tier (a close
reconstruction that survives re-encoding, resizing and mild crops). A wrong key is an
error for the whole image (``WrongKeyError``) — nothing is restored; a damaged vault
falls back to the robust tier and says so.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from refacex.errors import NoPayloadError, PayloadError, WrongKeyError
from refacex.faces.align import (
    feather_mask,
    invert_affine,
    template,
    transform_points,
    warp_to_roi,
)
from refacex.faces.masks import face_mask
from refacex.io.images import decode_image
from refacex.payload.facecode import CODE_PADDING, CODE_SIZE, codec
from refacex.payload.format import Payload, decode_payload
from refacex.payload.keyring import OpenKeys
from refacex.stego import robust


@dataclass
class RecoverResult:
    image: np.ndarray
    tier: str  # "vault" | "robust"
    faces: list[dict] = field(default_factory=list)  # per face: index, tier, how placed
    notes: list[str] = field(default_factory=list)


def _restore_vault(img: np.ndarray, payload: Payload) -> RecoverResult:
    out = img.copy()
    faces = []
    # Reverse order: where edit regions overlap, the first face's original wins, which
    # is what the image held before any face was edited.
    for rec in reversed(payload.faces):
        x, y, w, h = rec.rect
        patch = decode_image(rec.data, name=f"vault face {rec.index}")
        if patch.shape[:2] != (h, w):
            raise PayloadError(f"vault face {rec.index}: stored region does not match its size")
        out[y:y + h, x:x + w] = patch
        faces.append({"index": rec.index, "tier": "vault", "rect": list(rec.rect)})
    return RecoverResult(out, "vault", sorted(faces, key=lambda f: f["index"]))


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
        face = _match(m, detections)
        decoded = fc.decode(rec.data)
        mask = _edit_mask(img, m, face, fa)
        out = _blend_low_frequencies(out, decoded, m, mask)
        faces.append({"index": rec.index, "tier": "robust", "placed_by": "decoder-geometry",
                      "code_bytes": len(rec.data)})
    return RecoverResult(out, "robust", faces)


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
                           mask: np.ndarray) -> np.ndarray:
    """Replace the received face's low frequencies (what the code describes) by the
    decoded ones, keeping its detail: ``out = img + up(decoded - down(img))`` inside the
    mask. The swap keeps the original eyes and mouth interior, so their detail is real;
    elsewhere the donor's fine detail is weak and the decoded face dominates."""
    received = cv2.warpAffine(img, m, (CODE_SIZE, CODE_SIZE), flags=cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REFLECT_101)
    delta = decoded.astype(np.float32) - received.astype(np.float32)
    warped = warp_to_roi(delta, feather_mask(CODE_SIZE, mask, feather=0.06), m,
                         img.shape[:2])
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
        notes.append(f"vault unusable ({exc}); trying the robust tier")
    if vblob is not None:
        try:
            payload = decode_payload(vblob, **keys.crypto_kwargs())
            if tuple(payload.image_size) != (img.shape[1], img.shape[0]):
                notes.append("vault is for a different image size (resized?); "
                             "using the robust tier")
            else:
                res = _restore_vault(img, payload)
                res.notes = notes
                return res
        except WrongKeyError:
            raise
        except PayloadError as exc:
            vault_error = exc
            notes.append(f"vault rejected: {exc}; trying the robust tier")
    try:
        located = robust.locate(img)
    except NoPayloadError:
        if vault_error is not None:
            # Keep the vault's error class (tampered, unsupported...): it is the finding.
            raise type(vault_error)(f"{vault_error} (and no robust payload to fall back on)"
                                    ) from None
        raise NoPayloadError("no refacex payload in this image (neither vault nor robust "
                             "tier): it was not anonymised by refacex, or too damaged") from None
    payload = decode_payload(located.data, **keys.crypto_kwargs())
    res = _restore_robust(img, payload, located)
    res.notes = notes
    return res


class _CallableModule(types.ModuleType):
    """``refacex.recover`` is both this subpackage and the API function (see
    ``refacex.anonymize``): calling the module forwards to ``refacex.api.recover``."""

    def __call__(self, *args, **kwargs):
        from refacex.api import recover as api_recover

        return api_recover(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
