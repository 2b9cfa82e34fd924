"""The shipped learned face code (``learned-v1``), at run time: no torch, OpenCV only.

It is the robust tier's default code; these check that the files are the registered ones,
that a shared (metadata-free JPEG 75) photo recovers through it clearly above what was
received, and that ``--robust-code pca`` still gives the licence-clean PCA code."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from refacex.anonymize import CROP_PADDING
from refacex.audit.distortions import jpeg
from refacex.audit.metrics import psnr
from refacex.faces.align import warp_face
from refacex.io.images import encode_image
from refacex.payload import crypto, learned_code
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.payload.sitekeys import SiteKey
from refacex.pipeline import anonymize
from refacex.recover import recover

SITE = SiteKey(bytes(range(32, 64)))
KEY = X25519PrivateKey.from_private_bytes(bytes(range(32)))

pytestmark = pytest.mark.skipif(not learned_code.available(),
                                reason="learned recovery model not installed")


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch):
    monkeypatch.setattr(crypto, "VAULT_SCRYPT", crypto.ScryptParams(log2_n=12, r=8, p=1))


def test_shipped_model_is_the_registered_one():
    for fname, digest in learned_code.MODELS.items():
        assert digest is not None, f"{fname} has no registered sha256"
        assert hashlib.sha256((learned_code.DATA / fname).read_bytes()).hexdigest() == digest


def _shared_and_recovered(img, code: str):
    res = anonymize(img, SealKeys(recipients=[KEY.public_key()], site=SITE), method="swap",
                    tiers=("robust",), robust_code=code)
    shared = jpeg(res.image, 75)  # pixels only: no metadata, no vault
    rec = recover(encode_image(shared, ".jpg", 95),
                  OpenKeys(private_key=KEY, trusted=[SITE.public]))
    return res, shared, rec


@pytest.mark.parametrize("code,name", [("learned", learned_code.NAME), ("pca", "pca-v1")])
def test_robust_recovery_through_each_code(astronaut, analyzer, code, name):
    """Both codes bring the face clearly back from what was received (tight 112 px crop
    of the 512 px astronaut after JPEG 75)."""
    res, shared, rec = _shared_and_recovered(astronaut, code)
    assert rec.tier == "robust" and [f["code"] for f in rec.faces] == [name]
    f = analyzer.detector.detect(astronaut)[0]
    crop = lambda im: warp_face(im, f.kps, 112, 0.0).crop  # noqa: E731
    got, floor = psnr(crop(astronaut), crop(rec.image)), psnr(crop(astronaut), crop(shared))
    assert got >= floor + 2.5, (got, floor)
    # and the context crop (hair, background) is not made worse by the code
    ctx = lambda im: warp_face(im, f.kps, 128, CROP_PADDING).crop  # noqa: E731
    assert psnr(ctx(astronaut), ctx(rec.image)) > psnr(ctx(astronaut), ctx(shared))


def test_auto_takes_the_learned_code_where_it_wins(astronaut):
    """Short codes (a 250 px photo) get the learned code, long ones (the 512 px
    astronaut: ~100 B) the PCA code, which restores as much there."""
    import cv2

    small = cv2.resize(astronaut, (250, 250), interpolation=cv2.INTER_AREA)
    assert [f["code"] for f in _shared_and_recovered(small, "auto")[2].faces] == [
        learned_code.NAME]
    assert [f["code"] for f in _shared_and_recovered(astronaut, "auto")[2].faces] == ["pca-v1"]
