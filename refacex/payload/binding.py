"""Bind a vault payload to the anonymised image it was made for.

Why: the vault says "paste these original pixels at these rectangles". Without a binding,
the vault of anonymised photo A attached to photo B of the same size (two frames of one
camera) pastes A's face into B, and ``recover`` reports success. The binding is a digest
of the *anonymised* image's geometry and of the pixels of every face region the vault
restores, taken from the output file as decoded; it travels inside the ciphertext (and
under the site's signature), and ``recover`` recomputes it before restoring anything.

Only the face regions are hashed, so edits elsewhere (a caption, a cropped-out margin that
keeps the size) do not block exact recovery, while any change to a face region does. The
pixels are those a decoder yields: lossless formats are exact by definition; for JPEG the
writer hashes its own output decoded by the same OpenCV build that recovery uses.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

import numpy as np

BINDING_LEN = 16
_CONTEXT = b"refacex image binding v1\0"


def image_binding(image: np.ndarray, rects: Iterable[tuple[int, int, int, int]]) -> bytes:
    """16-byte digest of ``image``'s size and the pixels inside ``rects`` (x, y, w, h).

    Rectangles are clipped to the image (a clipped rectangle hashes what is there), so a
    forged rectangle cannot make this raise.
    """
    h, w = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    d = hashlib.sha256(_CONTEXT + struct.pack("<III", w, h, channels))
    for x, y, rw, rh in rects:
        x0, y0 = max(0, int(x)), max(0, int(y))
        x1, y1 = min(w, int(x) + int(rw)), min(h, int(y) + int(rh))
        d.update(struct.pack("<iiii", x0, y0, max(0, x1 - x0), max(0, y1 - y0)))
        if x1 > x0 and y1 > y0:
            d.update(np.ascontiguousarray(image[y0:y1, x0:x1]).tobytes())
    return d.digest()[:BINDING_LEN]
