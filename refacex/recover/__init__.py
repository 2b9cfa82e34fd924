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
from refacex.faces.align import invert_affine, paste_back, similarity_transform, template
from refacex.io.images import decode_image
from refacex.payload.facecode import CODE_PADDING, CODE_SIZE, codec
from refacex.payload.format import Payload, decode_payload
from refacex.payload.keyring import OpenKeys


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


def _place(matrix_code: np.ndarray, shape_hw: tuple[int, int], detections: list) -> tuple:
    """Best image->code transform for the current image: re-detected landmarks when a
    face is found where the stored geometry (rescaled) says, else the stored geometry."""
    inv = invert_affine(matrix_code)
    centre = inv @ np.array([CODE_SIZE / 2, CODE_SIZE / 2, 1.0])
    size = np.linalg.norm(inv[:, 0]) * CODE_SIZE
    best, best_d = None, 0.5 * size
    for f in detections:
        c = f.box[:2] + f.box[2:] / 2
        d = float(np.linalg.norm(c - centre))
        if d < best_d:
            best, best_d = f, d
    if best is not None:
        return similarity_transform(best.kps, template(CODE_SIZE, CODE_PADDING)), "redetected"
    return matrix_code, "stored-geometry"


def _restore_robust(img: np.ndarray, payload: Payload) -> RecoverResult:
    from refacex.pipeline import analyzer

    h, w = img.shape[:2]
    pw, ph = payload.image_size
    # The stored geometry is in the original's pixels; map to this image's size (resizes
    # keep the aspect ratio; a small crop shifts things, which re-detection corrects).
    s = np.array([[pw / w, 0, 0], [0, ph / h, 0], [0, 0, 1.0]])
    detections = analyzer().detector.detect(img)
    out = img.copy()
    mask = _code_mask()
    faces = []
    fc = codec()
    for rec in payload.faces:
        stored = np.asarray(rec.affine, np.float64) @ s
        m, how = _place(stored, (h, w), detections)
        face = fc.decode(rec.data)
        out = paste_back(out, face, m, mask=mask, feather=0.08)
        faces.append({"index": rec.index, "tier": "robust", "placed_by": how,
                      "code_bytes": len(rec.data)})
    return RecoverResult(out, "robust", faces)


def recover(data: bytes | Path | str, keys: OpenKeys, sidecar: bytes | None = None
            ) -> RecoverResult:
    """Recover the original from an anonymised file's bytes (or path)."""
    from refacex.stego import robust, vault

    if isinstance(data, str | Path):
        path = Path(data)
        if sidecar is None:
            sidecar = vault.read_sidecar(path)
        data = path.read_bytes()
    img = decode_image(data)
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
        rblob = robust.extract(img)
    except NoPayloadError:
        if vault_error is not None:
            # Keep the vault's error class (tampered, unsupported...): it is the finding.
            raise type(vault_error)(f"{vault_error} (and no robust payload to fall back on)"
                                    ) from None
        raise NoPayloadError("no refacex payload in this image (neither vault nor robust "
                             "tier): it was not anonymised by refacex, or too damaged") from None
    payload = decode_payload(rblob, **keys.crypto_kwargs())
    res = _restore_robust(img, payload)
    res.notes = notes
    return res


class _CallableModule(types.ModuleType):
    """``refacex.recover`` is both this subpackage and the API function (see
    ``refacex.anonymize``): calling the module forwards to ``refacex.api.recover``."""

    def __call__(self, *args, **kwargs):
        from refacex.api import recover as api_recover

        return api_recover(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
