"""Security: recovery never restores the wrong face, forged payloads never crash or deceive.

Each case asserts the exact outcome (error class and message, tier, per-face error), not
only "no crash". The adversaries: someone holding only ``refacex.pub`` (can seal, cannot
sign), someone moving a genuine vault to another image, a stranger site, and a buggy or
compromised trusted site writing malformed records.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from refacex.errors import (
    BindingError,
    NoPayloadError,
    PayloadError,
    UntrustedPayloadError,
    WrongKeyError,
)
from refacex.io.images import decode_image, encode_image
from refacex.payload import format as fmt
from refacex.payload.binding import image_binding
from refacex.payload.format import FaceRecord, Payload, encode_payload, inspect_payload
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.payload.sitekeys import SiteKey
from refacex.pipeline import anonymize, encode_output
from refacex.recover import recover
from refacex.stego import robust, vault

SITE = SiteKey(bytes(range(100, 132)))
STRANGER = SiteKey(bytes(range(1, 33)))
# Fixed keys whose compact 1-byte hints differ, so "wrong key" is never the 1-in-256 case.
KEY = X25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = X25519PrivateKey.from_private_bytes(bytes(range(64, 96)))


def _opener(**kw) -> OpenKeys:
    return OpenKeys(private_key=KEY, trusted=[SITE.public], **kw)


@pytest.fixture(scope="module")
def pair(astronaut):
    """Two anonymised images of the same size (two frames of one camera), both tiers."""
    seal = SealKeys(recipients=[KEY.public_key()], site=SITE)
    b_img = np.clip(astronaut.astype(int) + 12, 0, 255).astype(np.uint8)
    a = anonymize(astronaut, seal, method="blur")
    b = anonymize(b_img, seal, method="blur")
    return a, b, b_img


def _vault_of(data: bytes) -> bytes:
    blob = vault.extract(data)
    assert blob is not None
    return blob


def _rects_equal(a, b, faces) -> bool:
    return all(np.array_equal(a[y:y + h, x:x + w], b[y:y + h, x:x + w])
               for x, y, w, h in (f["rect"] for f in faces))


def test_hint_bytes_differ():
    from refacex.payload.crypto import key_id, raw_public

    assert key_id(raw_public(KEY.public_key()))[0] != key_id(raw_public(OTHER.public_key()))[0]


# ------------------------------------------------------------------------------ splice


def test_spliced_vault_is_refused_and_robust_tier_used(pair, astronaut):
    a, b, b_img = pair
    data_a, data_b = encode_output(a, ".png"), encode_output(b, ".png")
    spliced = vault.attach(vault.strip(data_b), _vault_of(data_a))
    res = recover(spliced, _opener())
    assert res.tier == "robust" and res.vault_refused == "BindingError"
    assert any("belongs to another image" in n for n in res.notes)
    # A's exact original face was not pasted into B.
    assert not any(np.array_equal(res.image[y:y + h, x:x + w], astronaut[y:y + h, x:x + w])
                   for x, y, w, h in (r.rect for r in a.vault_payload.faces))


def test_spliced_vault_without_robust_tier_is_a_binding_error(astronaut):
    seal = SealKeys(recipients=[KEY.public_key()], site=SITE)
    other = np.clip(astronaut.astype(int) - 9, 0, 255).astype(np.uint8)
    a = anonymize(astronaut, seal, method="blur", tiers=("vault",))
    b = anonymize(other, seal, method="blur", tiers=("vault",))
    for suffix in (".png", ".jpg"):
        data_b = encode_output(b, suffix)
        spliced = vault.attach(vault.strip(data_b), _vault_of(encode_output(a, suffix)))
        with pytest.raises(BindingError, match="belongs to another image"):
            recover(spliced, _opener())
        # the genuine file still restores exactly
        res = recover(data_b, _opener())
        assert res.tier == "vault" and _rects_equal(res.image, other, res.faces)


def test_vault_of_a_resized_copy_says_so(pair):
    a, _b, _ = pair
    data = encode_output(a, ".png")
    img = decode_image(data)
    small = encode_image(img[:-2, :-2], ".png")
    res = recover(vault.attach(small, _vault_of(data)), _opener())
    assert res.tier == "robust" and any("512x512 image, this one is 510x510" in n
                                        for n in res.notes)


# ------------------------------------------------------------------------------ forgery


def _forge(img: np.ndarray, patch: np.ndarray, rect, *, site: SiteKey | None,
           bind: bool = True, faces: list[FaceRecord] | None = None) -> bytes:
    """What a holder of the .pub (and maybe a site key) can write: any face, sealed."""
    x, y, w, h = rect
    rec = FaceRecord(index=0, affine=np.array([[1.0, 0, -x], [0, 1.0, -y]]), crop_size=256,
                     rect=rect, codec="png", data=encode_image(patch, ".png"))
    faces = [rec] if faces is None else faces
    p = Payload(tier="vault", image_size=(img.shape[1], img.shape[0]), faces=faces,
                method="blur")
    if bind:
        p.binding = image_binding(img, [f.rect for f in faces])
    blob = encode_payload(p, recipients=[KEY.public_key()], compact=False, site=site)
    return vault.attach(encode_image(img, ".png"), blob)


@pytest.fixture(scope="module")
def canvas() -> np.ndarray:
    """Small, so the fall-back in-pixel search after a refused vault is instant."""
    return np.full((48, 48, 3), 128, np.uint8)


def test_unsigned_forgery_with_the_pub_is_refused(canvas):
    grey = np.full((16, 16, 3), 7, np.uint8)
    data = _forge(canvas, grey, (8, 8, 16, 16), site=None)
    with pytest.raises(UntrustedPayloadError, match="vault payload is not signed"):
        recover(data, _opener())
    # Told otherwise, it is used, and the note says why.
    res = recover(data, _opener(allow_unsigned=True))
    assert res.tier == "vault" and any("unsigned payloads were allowed" in n for n in res.notes)


def test_forgery_signed_by_an_untrusted_site_is_refused(canvas):
    data = _forge(canvas, np.zeros((16, 16, 3), np.uint8), (8, 8, 16, 16), site=STRANGER)
    with pytest.raises(UntrustedPayloadError,
                       match=f"signed by site {STRANGER.public.site_id.hex()}, which you do "
                             "not trust"):
        recover(data, _opener())


def test_signature_record_cannot_be_moved_to_a_forgery(canvas):
    """A forger copies a genuine signature record into a payload of their own."""
    genuine = _forge(canvas, np.zeros((16, 16, 3), np.uint8), (8, 8, 16, 16), site=SITE)
    payload = fmt.decode_payload(_vault_of(genuine), private_key=KEY,
                                 trusted=[SITE.public])
    assert payload.provenance == f"site:{SITE.public.site_id.hex()}"
    site_id, sig, _ = payload.signature
    p = Payload(tier="vault", image_size=(48, 48), faces=payload.faces, method="evil")
    p.binding = payload.binding
    env = fmt.MAGIC + bytes([0x12, 1, 0])
    pt = fmt.encode_plaintext(p, compact=False)
    rec = bytearray()
    fmt.put_record(rec, fmt.TAG_SIGNATURE, site_id + sig)
    from refacex.payload import crypto

    blob = env + crypto.seal(pt + bytes(rec), recipients=[KEY.public_key()], aad=env)
    with pytest.raises(PayloadError, match="does not verify"):
        recover(vault.attach(encode_image(canvas, ".png"), blob), _opener())


def test_robust_tier_forged_with_the_pub_is_refused(canvas):
    face = FaceRecord(index=0, affine=np.array([[2.0, 0, 0], [0, 2.0, 0]]), crop_size=96,
                      rect=(0, 0, 0, 0), codec="pca-v1", data=b"\x00")
    p = Payload(tier="robust", image_size=(320, 320), faces=[face])
    for site in (None, STRANGER):
        blob = encode_payload(p, recipients=[KEY.public_key()], site=site)
        img = robust.embed(np.full((320, 320, 3), 120, np.uint8), blob)
        with pytest.raises(UntrustedPayloadError):
            recover(encode_image(img, ".png"), _opener())


# ------------------------------------------------------------------ malformed, but trusted


def _signed(canvas, faces: list[FaceRecord]) -> bytes:
    return _forge(canvas, np.zeros((1, 1, 3), np.uint8), (0, 0, 1, 1), site=SITE, faces=faces)


def _face(rect, patch_hw, index=0) -> FaceRecord:
    return FaceRecord(index=index, affine=np.array([[1.0, 0, 0], [0, 1.0, 0]]),
                      crop_size=256, rect=rect, codec="png",
                      data=encode_image(np.zeros((*patch_hw, 3), np.uint8), ".png"))


@pytest.mark.parametrize(("rect", "patch", "message"), [
    ((40, 40, 16, 16), (16, 16), "is not inside the 48x48 image"),   # partly outside
    ((100, 100, 8, 8), (8, 8), "is not inside the 48x48 image"),     # fully outside
    ((8, 8, 16, 16), (10000, 10000), "stored region is 10000x10000, not 16x16"),
    ((8, 8, 16, 16), (12, 16), "stored region is 16x12, not 16x16"),
])
def test_bad_face_record_is_a_per_face_error(canvas, rect, patch, message):
    good = _face((0, 0, 8, 8), (8, 8), index=1)
    res = recover(_signed(canvas, [_face(rect, patch), good]), _opener())
    assert res.tier == "vault"
    bad = [f for f in res.faces if f["index"] == 0][0]
    assert bad["tier"] == "none" and message in bad["error"]
    assert [f["tier"] for f in res.faces if f["index"] == 1] == ["vault"]


def test_vault_whose_every_face_is_bad_is_a_file_error(canvas):
    with pytest.raises(PayloadError, match="no face record of the vault is usable"):
        recover(_signed(canvas, [_face((100, 0, 8, 8), (8, 8))]), _opener())
    with pytest.raises(PayloadError, match="it holds none"):
        recover(_signed(canvas, []), _opener())


def test_too_many_faces_and_nan_affine_are_malformed(canvas, monkeypatch):
    many = [_face((0, 0, 1, 1), (1, 1), index=i) for i in range(fmt.MAX_FACES + 1)]
    with pytest.raises(PayloadError, match="more than 4096 faces"):
        recover(_signed(canvas, many), _opener())
    monkeypatch.setattr(fmt, "_check_affine", lambda a: np.asarray(a, np.float64))
    nan = _face((0, 0, 8, 8), (8, 8))
    nan.affine = np.full((2, 3), np.nan)
    with pytest.raises(PayloadError, match="affine is not finite"):
        recover(_signed(canvas, [nan]), _opener())


@pytest.mark.parametrize(("code", "message"), [
    (b"", "face code unusable"),
    (b"\xff", "face code unusable (not a face code of this codec version)"),
    (b"\xfe\x01", "face code unusable"),
])
def test_bad_robust_face_code_is_a_per_face_error(code, message):
    from refacex.payload.facecode import CODE_SIZE, codec

    level = len(codec().levels) - 1
    if code == b"\xfe\x01":
        code = bytes([level, 1])  # truncated: the best level needs far more bits
    m = np.array([[CODE_SIZE / 200, 0, -60 * CODE_SIZE / 200],
                  [0, CODE_SIZE / 200, -60 * CODE_SIZE / 200]])
    face = FaceRecord(index=0, affine=m, crop_size=CODE_SIZE, rect=(0, 0, 0, 0),
                      codec="pca-v1", data=code)
    p = Payload(tier="robust", image_size=(320, 320), faces=[face])
    blob = encode_payload(p, recipients=[KEY.public_key()], site=SITE)
    img = robust.embed(np.full((320, 320, 3), 120, np.uint8), blob)
    with pytest.raises(PayloadError, match="no face record of the in-pixel payload") as ei:
        recover(encode_image(img, ".png"), _opener())
    assert message in str(ei.value)


# ---------------------------------------------------------------------- wrong-key vault


def test_vault_for_another_key_falls_back_to_the_robust_tier(pair):
    a, _b, _ = pair
    data = encode_output(a, ".png")
    other_vault = encode_payload(a.vault_payload, recipients=[OTHER.public_key()],
                                 compact=False, site=SITE)
    res = recover(vault.attach(vault.strip(data), other_vault), _opener())
    assert res.tier == "robust" and res.vault_refused == "WrongKeyError"
    assert any("not for key" in n and "vault not used" in n for n in res.notes)


def test_vault_key_id_bytes_changed_falls_back_to_the_robust_tier(pair):
    a, _b, _ = pair
    data = encode_output(a, ".png")
    blob = bytearray(_vault_of(data))
    blob[6 + 1 + 32 + 1] ^= 0xFF  # first byte of the first recipient's key id
    res = recover(vault.attach(vault.strip(data), bytes(blob)), _opener())
    assert res.tier == "robust" and any("not for key" in n for n in res.notes)


def test_wrong_key_everywhere_is_a_wrong_key_error(pair):
    a, _b, _ = pair
    with pytest.raises(WrongKeyError, match="not for key"):
        recover(encode_output(a, ".png"), OpenKeys(private_key=OTHER, trusted=[SITE.public]))


def test_no_payload_is_still_no_payload(canvas):
    with pytest.raises(NoPayloadError):
        recover(encode_image(canvas, ".png"), _opener())


# ------------------------------------------------------------------- what is public


def test_inspect_shows_no_face_count_nor_site(pair):
    a, _b, _ = pair
    info = inspect_payload(_vault_of(encode_output(a, ".png")))
    assert "faces" not in info and info["version"] == "1.2"
    assert SITE.public.site_id.hex() not in repr(info)
    r_info = inspect_payload(robust.extract(a.image))
    assert "faces" not in r_info and r_info["mode"] == "compact-public-key-auth"


def test_donor_secret_comes_from_the_site_not_the_pub():
    pub = KEY.public_key()
    k1 = SealKeys(recipients=[pub], site=SITE).donor_key
    k2 = SealKeys(recipients=[pub], site=STRANGER).donor_key
    assert k1 == SITE.donor_secret and k1 != k2
    with pytest.raises(ValueError, match="needs a site key"):
        SealKeys(recipients=[pub])


def test_site_key_files_round_trip(tmp_path):
    from refacex.payload.keys import KeyFileError
    from refacex.payload.sitekeys import generate_site_key, load_site_key, load_site_public

    pub, key = generate_site_key(tmp_path)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    site = load_site_key(key)
    assert load_site_public(pub) == site.public.__class__(site.public.ed25519,
                                                          site.public.x25519, "site.pub")
    with pytest.raises(KeyFileError, match="already exists"):
        generate_site_key(tmp_path)
    with pytest.raises(KeyFileError, match="expected a site.key"):
        load_site_key(pub)
    text = key.read_text().replace("Key-Id: ", "Key-Id: 00")
    key.write_text(text)
    with pytest.raises(KeyFileError, match="Key-Id line does not match"):
        load_site_key(key)


def test_binding_never_raises_on_forged_rects():
    img = np.zeros((10, 10, 3), np.uint8)
    assert len(image_binding(img, [(-5, -5, 100, 100), (50, 50, 3, 3)])) == 16
    assert struct.calcsize("<iiii") == 16
