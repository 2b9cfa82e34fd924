"""What the compact crypto overhead leaves for the face code on small photos.

Robust payload = envelope 6 + compact crypto (public key 42, passphrase 20; 51 / 28 before
the AES-GCM-64 modes) + image size 6 + compact face record ~12 + face code (>= 4 bytes).
A 250x250 photo offers 59 bytes: 20 too few for a public-key code before, still 11 too
few now (the 32-byte X25519 ephemeral key alone is over half of it); the next capacity
step (71 bytes, from 256x256) now carries one. Passphrase mode gains the 8 tag bytes.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from refacex.payload import crypto
from refacex.payload.facecode import codec
from refacex.payload.format import decode_payload, inspect_payload
from refacex.payload.keyring import SealKeys
from refacex.payload.sitekeys import SiteKey
from refacex.pipeline import build_robust_payload
from refacex.stego.robust import capacity_bytes

#: Fixed site key: the donor choice (and so exact numbers) depends on it.
SITE = SiteKey(bytes(range(32, 64)))


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cost is stored in the header (1 byte whatever its value): sizes are unchanged.
    monkeypatch.setattr(crypto, "COMPACT_SCRYPT", crypto.ScryptParams(log2_n=4))


def _one_face(astronaut: np.ndarray, analyzer, size: int):
    img = cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_AREA)
    faces = [f for f in analyzer.detector.detect(img) if f.score >= 0.6]
    assert len(faces) == 1
    return img, faces[0]


def _robust(img: np.ndarray, face, keys: SealKeys) -> tuple[bytes | None, int]:
    h, w = img.shape[:2]
    blob, sizes = build_robust_payload(img, [(0, face)], keys, capacity_bytes(h, w))
    return blob, sizes[0]


def test_public_key_code_now_fits_from_the_71_byte_step(
    astronaut: np.ndarray, analyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    priv = X25519PrivateKey.generate()
    keys = SealKeys(recipients=[priv.public_key()], site=SITE)
    img, face = _one_face(astronaut, analyzer, 256)
    assert capacity_bytes(256, 256) == 71
    blob, code_bytes = _robust(img, face, keys)
    assert blob is not None and code_bytes >= 4
    assert inspect_payload(blob)["mode"] == "compact-public-key-auth"
    code = decode_payload(blob, private_key=priv, trusted=[SITE.public]).faces[0].data
    assert len(code) == code_bytes and codec().decode(code).shape == (48, 48, 3)
    # With the 1.0 compact seal (51 bytes) the same photo carried no code at all.
    monkeypatch.setattr(crypto, "_seal_compact_pubkey",
                        lambda pt, r, aad, _sender=None:
                        crypto._seal_compact_pubkey_legacy(pt, r, aad))
    assert _robust(img, face, keys) == (None, 0)


def test_250px_passphrase_code_grows_by_the_tag_bytes(
    astronaut: np.ndarray, analyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = SealKeys(passphrase=b"pw")
    img, face = _one_face(astronaut, analyzer, 250)
    assert capacity_bytes(250, 250) == 59
    blob, new = _robust(img, face, keys)
    assert blob is not None and len(blob) <= 59
    assert decode_payload(blob, passphrase=b"pw").faces[0].data[:1]
    monkeypatch.setattr(
        crypto, "_seal_compact_passphrase", crypto._seal_compact_passphrase_legacy
    )
    _, old = _robust(img, face, keys)
    assert 0 < old < new and new - old >= 6  # 8 bytes freed; code sizes are stepped
