"""What the compact crypto overhead leaves for the face code on small photos.

Robust payload = envelope 6 + compact crypto (public key 42, passphrase 20; 51 / 28 before
the AES-GCM-64 modes) + image size 6 + compact face record ~12 + face code (>= 4 bytes).
A 250x250 photo offers 59 bytes: 20 too few for a public-key code before, still 11 too
few now (the 32-byte X25519 ephemeral key alone is over half of it); the next capacity
step (71 bytes, from 256x256) now carries one. Passphrase mode gains the 8 tag bytes.

Since the masking (``stego/masking.py``) a photo carries only what its textured part
holds invisibly, so the pipeline tries the denser layouts, down to the fine one (the
photo's own resolution) for photos of ~200 px; a photo too small for any code says so
(stderr and the JSON report), never silently.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from refacex.anonymize import CROP_PADDING
from refacex.audit.distortions import apply
from refacex.audit.metrics import psnr
from refacex.faces.align import transform_points, warp_face
from refacex.io.images import write_image
from refacex.payload import crypto
from refacex.payload.facecode import codec
from refacex.payload.format import decode_payload, inspect_payload
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.payload.sitekeys import SiteKey
from refacex.pipeline import MIN_CODE_BYTES, anonymize, build_robust_payload, encode_output
from refacex.recover import recover
from refacex.stego.robust import LAYOUTS, capacity_bytes

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


@pytest.mark.parametrize("side", [200, 250])
def test_small_photo_carries_a_code_that_survives_jpeg75(astronaut: np.ndarray, analyzer,
                                                         side: int) -> None:
    """200-250 px, public-key mode (the largest overhead): every face gets a code of at
    least ``MIN_CODE_BYTES``, embedded invisibly, found and decoded after JPEG 75."""
    priv = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    img = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    res = anonymize(img, SealKeys(recipients=[priv.public_key()], site=SITE), method="blur")
    assert res.robust_status in LAYOUTS
    assert res.faces[0].robust_code_bytes >= MIN_CODE_BYTES
    data, m = apply("jpeg75", res.image, encode_output(res, ".png"))
    rec = recover(data, OpenKeys(private_key=priv, trusted=[SITE.public]))
    assert rec.tier == "robust"
    f = analyzer.detector.detect(img)[0]
    restored = warp_face(rec.image, transform_points(m, f.kps), 128, CROP_PADDING).crop
    blurred = warp_face(res.image, f.kps, 128, CROP_PADDING).crop
    original = warp_face(img, f.kps, 128, CROP_PADDING).crop
    # A 19-50 B code is a coarse face (~22-24 dB here), not the blurred one.
    assert psnr(original, restored) >= 20.0 and not np.array_equal(restored, blurred)


def test_tiny_photo_says_it_has_no_robust_tier(tom: np.ndarray, tmp_path: Path) -> None:
    """64 px: nothing fits even on the fine layout. One warning line on stderr, the JSON
    report says why, the exit code is unchanged (0) and the vault still carries it."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "refacex", *args], capture_output=True,
                              text=True, timeout=600)

    r = run("keygen", "--out", str(tmp_path / "keys"), "--no-passphrase")
    assert r.returncode == 0, r.stderr
    write_image(tmp_path / "tiny.png", cv2.resize(tom, (64, 64), interpolation=cv2.INTER_AREA))
    r = run("anonymize", str(tmp_path / "tiny.png"), "-o", str(tmp_path / "out"),
            "--recipient", str(tmp_path / "keys" / "refacex.pub"), "--method", "blur", "--json")
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if "robust tier" in ln]
    assert len(warnings) == 1 and "none, image too small" in warnings[0], r.stderr
    report = json.loads(r.stdout)["files"][str(tmp_path / "tiny.png")]
    assert report["robust"] == "none, image too small" and report["robust_bytes"] == 0
    assert (tmp_path / "out" / "tiny.png").is_file()
