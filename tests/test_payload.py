"""Tests for refacex.payload: keys, sealing modes, tamper/wrong-key separation, the format."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from refacex.errors import (
    NoPayloadError,
    PayloadError,
    RefacexError,
    TamperedPayloadError,
    UnsupportedPayloadError,
    WrongKeyError,
)
from refacex.payload import crypto, keys
from refacex.payload import format as fmt
from refacex.payload.format import FaceRecord, Payload

CHEAP = crypto.ScryptParams(log2_n=4, r=8, p=1)
ENV = fmt.ENVELOPE_LEN


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real scrypt costs take 0.1-0.4 s each; the format stores the cost, so cheap is fine."""
    monkeypatch.setattr(crypto, "VAULT_SCRYPT", CHEAP)
    monkeypatch.setattr(crypto, "COMPACT_SCRYPT", CHEAP)
    monkeypatch.setattr(keys, "KEYFILE_SCRYPT", CHEAP)


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]], dtype=np.float64)


def _payload(tier: str = "vault", n_faces: int = 2) -> Payload:
    faces = [
        FaceRecord(
            index=i,
            affine=_similarity(0.45 + 0.1 * i, 0.1 * (i + 1), -120.0 * i + 3.25, -87.5),
            crop_size=112,
            rect=(100 + 300 * i, 200, 150, 160),
            codec="png" if tier == "vault" else "pca-v1",
            data=os.urandom(200 + i),
            mask=b"\x89PNGmask" if i == 1 else None,
        )
        for i in range(n_faces)
    ]
    return Payload(
        tier=tier,
        image_size=(4000, 3000),
        faces=faces,
        method="gaussian-blur",
        extra={"engine": "opencv", "seed": -7, "strength": 0.5, "blob": b"\x00\x01"},
    )


def _assert_same(a: Payload, b: Payload, affine_tol_px: float) -> None:
    assert (a.tier, a.image_size, a.method, a.extra) == (b.tier, b.image_size, b.method, b.extra)
    assert len(a.faces) == len(b.faces)
    for fa, fb in zip(a.faces, b.faces, strict=True):
        assert (fa.index, fa.crop_size, fa.rect, fa.codec, fa.data, fa.mask) == (
            fb.index,
            fb.crop_size,
            fb.rect,
            fb.codec,
            fb.data,
            fb.mask,
        )
        assert fmt.affine_error_px(fa.affine, fb.affine, fa.crop_size) <= affine_tol_px


@pytest.fixture
def k1() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


@pytest.fixture
def k2(k1: X25519PrivateKey) -> X25519PrivateKey:
    """Another key whose 1-byte compact hint differs from k1's (1 in 256 random keys share
    it; that case is tested on its own), so wrong-key expectations are deterministic."""
    while True:
        k = X25519PrivateKey.generate()
        if crypto.key_id(k.public_key())[0] != crypto.key_id(k1.public_key())[0]:
            return k


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("tier", ["vault", "robust"])
@pytest.mark.parametrize("compact", [False, True])
def test_round_trip_public_key(tier: str, compact: bool, k1: X25519PrivateKey) -> None:
    p = _payload(tier)
    blob = fmt.encode_payload(p, recipients=[k1.public_key()], compact=compact)
    out = fmt.decode_payload(blob, private_key=k1)
    _assert_same(p, out, affine_tol_px=0.16 if compact else 0.0)
    if not compact:
        np.testing.assert_array_equal(out.faces[0].affine, p.faces[0].affine)


@pytest.mark.parametrize("tier", ["vault", "robust"])
@pytest.mark.parametrize("compact", [False, True])
def test_round_trip_passphrase(tier: str, compact: bool) -> None:
    p = _payload(tier)
    blob = fmt.encode_payload(p, passphrase=b"correct horse", compact=compact)
    out = fmt.decode_payload(blob, passphrase=b"correct horse")
    _assert_same(p, out, affine_tol_px=0.16 if compact else 0.0)


def test_compact_defaults_to_tier(k1: X25519PrivateKey) -> None:
    robust = fmt.encode_payload(_payload("robust"), recipients=[k1.public_key()])
    vault = fmt.encode_payload(_payload("vault"), recipients=[k1.public_key()])
    assert fmt.inspect_payload(robust)["mode"] == "compact-public-key"
    assert fmt.inspect_payload(vault)["mode"] == "public-key"


def test_empty_payload_round_trip(k1: X25519PrivateKey) -> None:
    p = Payload(tier="robust", image_size=(1, 1))
    out = fmt.decode_payload(fmt.encode_payload(p, recipients=[k1.public_key()]), private_key=k1)
    assert out.faces == [] and out.method == "" and out.image_size == (1, 1)


def test_seal_needs_exactly_one_key_kind(k1: X25519PrivateKey) -> None:
    with pytest.raises(ValueError):
        crypto.seal(b"x")
    with pytest.raises(ValueError):
        crypto.seal(b"x", recipients=[k1.public_key()], passphrase=b"pw")
    with pytest.raises(PayloadError):
        crypto.seal(b"x", passphrase=b"")


# ---------------------------------------------------------------------- recipients, wrong key


def test_two_recipients_each_open_third_is_wrong_key(k1: X25519PrivateKey, k2: X25519PrivateKey):
    k3 = X25519PrivateKey.generate()
    p = _payload("vault")
    blob = fmt.encode_payload(p, recipients=[k1.public_key(), k2.public_key()])
    for k in (k1, k2):
        _assert_same(p, fmt.decode_payload(blob, private_key=k), 0.0)
    with pytest.raises(WrongKeyError) as ei:
        fmt.decode_payload(blob, private_key=k3)
    assert crypto.key_id(k3.public_key()).hex() in str(ei.value)
    info = fmt.inspect_payload(blob)
    assert info["recipients"] == 2
    assert info["key_ids"] == [crypto.key_id(k.public_key()).hex() for k in (k1, k2)]


def test_duplicate_recipients_are_sealed_once(k1: X25519PrivateKey) -> None:
    blob = crypto.seal(b"x", recipients=[k1.public_key(), k1.public_key()])
    assert crypto.describe(blob)["recipients"] == 1


def test_compact_seals_for_first_recipient_only(k1: X25519PrivateKey, k2: X25519PrivateKey):
    blob = crypto.seal(b"data", recipients=[k1.public_key(), k2.public_key()], compact=True)
    assert crypto.open_sealed(blob, private_key=k1) == b"data"
    with pytest.raises(WrongKeyError):
        crypto.open_sealed(blob, private_key=k2)


def test_compact_wrong_key_sharing_the_hint_byte_reads_as_tampered(k1: X25519PrivateKey):
    """Documented limit of the 1-byte hint: 1 wrong key in 256 gets past it, and a 64-bit
    GCM tag cannot tell "wrong key" from "changed bytes"; it never decrypts, and the
    message names both causes."""
    hint = crypto.key_id(k1.public_key())[0]
    while True:
        other = X25519PrivateKey.generate()
        if crypto.key_id(other.public_key())[0] == hint and other.private_bytes_raw() != (
            k1.private_bytes_raw()
        ):
            break
    blob = fmt.encode_payload(_payload("robust", 1), recipients=[k1.public_key()])
    with pytest.raises(TamperedPayloadError, match="another key"):
        fmt.decode_payload(blob, private_key=other)
    # A flipped ciphertext byte with the right key gets the same class (and message).
    bad = bytearray(blob)
    bad[-1] ^= 1
    with pytest.raises(TamperedPayloadError):
        fmt.decode_payload(bytes(bad), private_key=k1)


@pytest.mark.parametrize("compact", [False, True])
def test_wrong_passphrase_is_wrong_key(compact: bool) -> None:
    blob = fmt.encode_payload(_payload("robust"), passphrase=b"right", compact=compact)
    with pytest.raises(WrongKeyError):
        fmt.decode_payload(blob, passphrase=b"wrong")


@pytest.mark.parametrize("compact", [False, True])
def test_key_kind_mismatch_is_wrong_key(compact: bool, k1: X25519PrivateKey) -> None:
    by_pass = crypto.seal(b"x", passphrase=b"pw", compact=compact)
    by_key = crypto.seal(b"x", recipients=[k1.public_key()], compact=compact)
    with pytest.raises(WrongKeyError, match="passphrase"):
        crypto.open_sealed(by_pass, private_key=k1)
    with pytest.raises(WrongKeyError, match="private key"):
        crypto.open_sealed(by_key, passphrase=b"pw")


def test_aad_is_authenticated(k1: X25519PrivateKey) -> None:
    blob = crypto.seal(b"x", recipients=[k1.public_key()], aad=b"ctx")
    assert crypto.open_sealed(blob, private_key=k1, aad=b"ctx") == b"x"
    with pytest.raises(TamperedPayloadError):
        crypto.open_sealed(blob, private_key=k1, aad=b"cty")


# ------------------------------------------------------------------------ tamper detection

T, W, N = TamperedPayloadError, WrongKeyError, NoPayloadError


def _layout(mode: str, n_recipients: int = 1) -> list[tuple[int, type[Exception]]]:
    """Expected error class when the byte at each offset (of the sealed part) is XOR 0x01'd.

    This is the table in docs/payload-format.md: bytes that feed key selection or key
    derivation read as WrongKeyError, everything else as TamperedPayloadError.
    """
    if mode == "public-key":
        # mode, ephemeral pub, count, [key id, wrapped key]*n, nonce. First slot = opener's.
        spans = [(1, T), (32, T), (1, T)]
        for i in range(n_recipients):
            spans += [(8, W if i == 0 else T), (48, T)]
        spans += [(12, T)]
    elif mode == "passphrase":
        # mode, log2_n (4->5 still valid), r (8->9 valid), p (1->0 invalid), salt, check, nonce
        spans = [(1, T), (1, W), (1, W), (1, T), (16, W), (4, W), (12, T)]
    elif mode == "compact-public-key":  # mode, ephemeral pub, 1-byte key-id hint
        spans = [(1, T), (32, T), (1, W)]
    elif mode == "compact-public-key-legacy":  # 0x44: 2-byte hint
        spans = [(1, T), (32, T), (2, W)]
    else:  # compact-passphrase (new and legacy): mode, log2_n, salt, check
        spans = [(1, T), (1, W), (8, W), (2, W)]
    out: list[tuple[int, type[Exception]]] = []
    for length, exc in spans:
        out += [(len(out) + j, exc) for j in range(length)]
    return out


CASES = [
    ("public-key", 1),
    ("public-key", 2),
    ("passphrase", 0),
    ("compact-public-key", 1),
    ("compact-passphrase", 0),
    ("compact-public-key-legacy", 1),
    ("compact-passphrase-legacy", 0),
]


def _seal_legacy(p: Payload, recipient: X25519PrivateKey | None) -> bytes:
    """A robust payload as refacex 1.0 wrote it (mode 0x44 / 0x88, envelope version 1.0)."""
    env = _envelope(minor=0, tier=fmt.TIERS[p.tier])
    pt = fmt.encode_plaintext(p, compact=True)
    if recipient is None:
        return env + crypto._seal_compact_passphrase_legacy(pt, b"pw", env)
    return env + crypto._seal_compact_pubkey_legacy(pt, recipient.public_key(), env)


def _seal_case(mode: str, n: int, k1: X25519PrivateKey, k2: X25519PrivateKey) -> bytes:
    p = _payload("robust", n_faces=1)
    if mode.endswith("-legacy"):
        return _seal_legacy(p, None if "passphrase" in mode else k1)
    compact = mode.startswith("compact")
    if "passphrase" in mode:
        return fmt.encode_payload(p, passphrase=b"pw", compact=compact)
    return fmt.encode_payload(
        p, recipients=[k1.public_key(), k2.public_key()][: max(n, 1)], compact=compact
    )


@pytest.mark.parametrize(("mode", "n"), CASES)
def test_every_byte_flip_is_classified(
    mode: str, n: int, k1: X25519PrivateKey, k2: X25519PrivateKey
) -> None:
    blob = _seal_case(mode, n, k1, k2)
    key = {"passphrase": b"pw"} if "passphrase" in mode else {"private_key": k1}
    assert fmt.inspect_payload(blob)["mode"] == mode
    header = _layout(mode, n)
    expected: list[type[Exception]] = [N, N, N, T, T, T]  # magic x3, version, tier, faces
    expected += [exc for _, exc in header]
    body = len(blob) - len(expected)
    assert body > fmt.inspect_payload(blob)["tag_bytes"]
    expected += [T] * body  # ciphertext and its tag (16 bytes, or 8 in the new compact modes)
    seen = set()
    for pos, exc in enumerate(expected):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(PayloadError) as ei:
            fmt.decode_payload(bytes(bad), **key)
        assert type(ei.value) is exc, f"offset {pos}: {type(ei.value).__name__}: {ei.value}"
        assert "\n" not in str(ei.value)
        seen.add(exc)
    assert {T, W, N} <= seen


@pytest.mark.parametrize(("mode", "n"), CASES)
def test_any_corruption_or_truncation_never_opens(
    mode: str, n: int, k1: X25519PrivateKey, k2: X25519PrivateKey
) -> None:
    blob = _seal_case(mode, n, k1, k2)
    key = {"passphrase": b"pw"} if "passphrase" in mode else {"private_key": k1}
    for pos in range(len(blob)):
        bad = bytearray(blob)
        bad[pos] ^= 0xFF
        with pytest.raises(PayloadError):
            fmt.decode_payload(bytes(bad), **key)
    for cut in range(len(blob)):
        with pytest.raises(NoPayloadError if cut == 0 else TamperedPayloadError):
            fmt.decode_payload(blob[:cut], **key)
    with pytest.raises(TamperedPayloadError):
        fmt.decode_payload(blob + b"\x00", **key)


# ------------------------------------------------------------------ freshness of nonces/salts


@pytest.mark.parametrize(("mode", "n"), CASES)
def test_two_seals_differ(mode: str, n: int, k1: X25519PrivateKey, k2: X25519PrivateKey) -> None:
    a, b = (_seal_case(mode, n, k1, k2) for _ in range(2))
    pa, pb = crypto._parse(a[ENV:]), crypto._parse(b[ENV:])
    if "public-key" in mode:
        assert pa.eph_pub != pb.eph_pub  # fresh ephemeral key => fresh KEKs/content key
    else:
        assert pa.salt != pb.salt  # fresh salt => fresh key
    if not mode.startswith("compact"):
        assert pa.nonce != pb.nonce
    assert pa.ciphertext != pb.ciphertext


# ------------------------------------------------- compact AES-GCM-64 modes, legacy compact modes


def test_mode_bytes_differ_in_at_least_4_bits() -> None:
    values = list(crypto.MODE_NAMES)
    assert len(values) == 7
    for i, a in enumerate(values):
        for b in values[i + 1 :]:
            assert bin(a ^ b).count("1") >= 4, (hex(a), hex(b))


@pytest.mark.parametrize("kind", ["public-key", "passphrase"])
def test_new_compact_seals_use_gcm64(kind: str, k1: X25519PrivateKey) -> None:
    key = {"recipients": [k1.public_key()]} if kind == "public-key" else {"passphrase": b"pw"}
    blob = fmt.encode_payload(_payload("robust", 1), **key)
    info = fmt.inspect_payload(blob)
    assert info["mode"] == f"compact-{kind}" and info["version"] == "1.2"
    assert info["aead"] == "aes-256-gcm" and info["tag_bytes"] == crypto.COMPACT_TAG_LEN == 8
    pubkey = kind == "public-key"
    assert blob[ENV] == (crypto.MODE_COMPACT_PUBKEY if pubkey else crypto.MODE_COMPACT_PASSPHRASE)
    if kind == "public-key":
        assert info["key_id_hint"] == crypto.key_id(k1.public_key())[:1].hex()


@pytest.mark.parametrize("kind", ["public-key", "passphrase"])
def test_compact_tag_is_standard_gcm_tag_truncated(kind: str, k1: X25519PrivateKey) -> None:
    """The ciphertext is plain AES-256-GCM (zero nonce, AD = aad || header) and the stored
    tag is the first 8 bytes of the standard 16-byte tag: checked against AESGCM."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    pt, aad = b"a robust face code", b"envelope"
    if kind == "public-key":
        sealed = crypto.seal(pt, recipients=[k1.public_key()], aad=aad, compact=True)
        p = crypto._parse(sealed)
        eph = crypto.X25519PublicKey.from_public_bytes(p.eph_pub)
        raw = crypto.raw_public(k1.public_key())
        key = crypto._hkdf(k1.exchange(eph), p.eph_pub + raw, crypto._COMPACT_GCM_INFO)
    else:
        sealed = crypto.seal(pt, passphrase=b"pw", aad=aad, compact=True)
        p = crypto._parse(sealed)
        assert p.params is not None
        key, _ = crypto.scrypt_derive(b"pw", p.salt, p.params, crypto.COMPACT_CHECK_LEN)
    full = AESGCM(key).encrypt(bytes(12), pt, aad + p.header)
    assert p.ciphertext == full[:-16] + full[-16:-8]
    assert len(sealed) - len(pt) == crypto.overhead(f"compact-{kind}")


def test_compact_gcm_refuses_a_truncated_or_extended_tag(k1: X25519PrivateKey) -> None:
    blob = crypto.seal(b"code", recipients=[k1.public_key()], compact=True)
    for bad in (blob[:-1], blob + b"\x00", blob[:-8] + bytes(8), blob[:-4]):
        with pytest.raises(TamperedPayloadError):
            crypto.open_sealed(bad, private_key=k1)


# Written by refacex 1.0 (modes 0x44 / 0x88) before the AES-GCM-64 modes existed: the key is
# X25519 private bytes 01 02 .. 20, the passphrase b"legacy pw" (scrypt log2 N = 4); the
# payload is one pca-v1 face with data 00 01 .. 06 in a 250x250 image.
LEGACY_KEY = bytes(range(1, 33))
LEGACY_PUBKEY_BLOB = bytes.fromhex(
    "524658100201442707689ea844bebd2cedacff20f6a13eef0a30edc7575936b99b7bf70ff2c649aaa849"
    "2b631633b5c918a2af4532d7031af0c760904afd3d2fe0bf3268e1395e39af9581eb939f39a6001275"
)
LEGACY_PASSPHRASE_BLOB = bytes.fromhex(
    "524658100201880404ca8c536e33d6746d82d7d8b254b4c3c086c6e4ac0e4e9d31bfba6a65d99d32b0"
    "aa8f8ac3fa9182e0703ce09df5fe030be6b9a3"
)


def test_legacy_compact_fixtures_still_open(k1: X25519PrivateKey) -> None:
    legacy_key = X25519PrivateKey.from_private_bytes(LEGACY_KEY)
    for blob, key, mode in (
        (LEGACY_PUBKEY_BLOB, {"private_key": legacy_key}, "compact-public-key-legacy"),
        (LEGACY_PASSPHRASE_BLOB, {"passphrase": b"legacy pw"}, "compact-passphrase-legacy"),
    ):
        info = fmt.inspect_payload(blob)
        assert (info["version"], info["mode"], info["aead"], info["tag_bytes"]) == (
            "1.0", mode, "chacha20-poly1305", 16
        )
        out = fmt.decode_payload(blob, **key)
        assert out.tier == "robust" and out.image_size == (250, 250)
        assert [(f.codec, f.data, f.crop_size) for f in out.faces] == [
            ("pca-v1", bytes(range(7)), 48)
        ]
    with pytest.raises(WrongKeyError):
        fmt.decode_payload(LEGACY_PUBKEY_BLOB, private_key=k1)
    with pytest.raises(WrongKeyError):
        fmt.decode_payload(LEGACY_PASSPHRASE_BLOB, passphrase=b"not it")
    bad = bytearray(LEGACY_PUBKEY_BLOB)
    bad[-3] ^= 1
    with pytest.raises(TamperedPayloadError):
        fmt.decode_payload(bytes(bad), private_key=legacy_key)


@pytest.mark.parametrize("kind", ["public-key", "passphrase"])
def test_legacy_compact_round_trip_and_wrong_key(
    kind: str, k1: X25519PrivateKey, k2: X25519PrivateKey
) -> None:
    p = _payload("robust", n_faces=2)
    p.faces[1].mask = None  # compact records need no mask
    blob = _seal_legacy(p, k1 if kind == "public-key" else None)
    assert fmt.inspect_payload(blob)["mode"] == f"compact-{kind}-legacy"
    right = {"private_key": k1} if kind == "public-key" else {"passphrase": b"pw"}
    wrong = {"private_key": k2} if kind == "public-key" else {"passphrase": b"pw2"}
    _assert_same(p, fmt.decode_payload(blob, **right), affine_tol_px=0.16)
    with pytest.raises(WrongKeyError):
        fmt.decode_payload(blob, **wrong)


def test_new_compact_is_smaller_than_legacy() -> None:
    assert crypto.overhead("compact-public-key") == 42 <= crypto.overhead(
        "compact-public-key-legacy"
    ) - 9
    assert crypto.overhead("compact-passphrase") == crypto.overhead(
        "compact-passphrase-legacy"
    ) - 8


# ------------------------------------------------------------------------------------ keys


def test_keygen_files_and_modes(tmp_path: Path) -> None:
    pub_path, key_path = keys.generate_keypair(tmp_path / "k", b"secret")
    assert pub_path.name == "refacex.pub" and key_path.name == "refacex.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    pub_text, key_text = pub_path.read_text(), key_path.read_text()
    assert pub_text.startswith("-----BEGIN REFACEX PUBLIC KEY-----\n")
    assert key_text.startswith("-----BEGIN REFACEX PRIVATE KEY-----\n")
    pub = keys.load_public_key(pub_path)
    kid = keys.key_id(pub).hex()
    assert f"Key-Id: {kid}" in pub_text and f"Key-Id: {kid}" in key_text
    assert "scrypt" in key_text
    assert not list(tmp_path.glob("k/.*"))  # no temp files left behind

    with pytest.raises(keys.KeyPassphraseError, match="passphrase"):
        keys.load_private_key(key_path, None)
    with pytest.raises(keys.KeyPassphraseError, match="wrong passphrase"):
        keys.load_private_key(key_path, b"not it")
    priv = keys.load_private_key(key_path, b"secret")
    assert crypto.raw_public(priv.public_key()) == crypto.raw_public(pub)

    blob = fmt.encode_payload(_payload(), recipients=[pub])
    assert fmt.decode_payload(blob, private_key=priv).method == "gaussian-blur"


def test_keygen_clear_private_key(tmp_path: Path) -> None:
    pub_path, key_path = keys.generate_keypair(tmp_path, None)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert "Protection: none" in key_path.read_text()
    priv = keys.load_private_key(key_path, None)
    assert crypto.raw_public(priv.public_key()) == crypto.raw_public(keys.load_public_key(pub_path))


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    keys.generate_keypair(tmp_path, None)
    before = (tmp_path / "refacex.key").read_bytes()
    with pytest.raises(keys.KeyFileError, match="already exists"):
        keys.generate_keypair(tmp_path, None)
    assert (tmp_path / "refacex.key").read_bytes() == before
    keys.generate_keypair(tmp_path, None, overwrite=True)
    assert (tmp_path / "refacex.key").read_bytes() != before


def test_key_file_errors(tmp_path: Path) -> None:
    pub_path, key_path = keys.generate_keypair(tmp_path, b"pw")
    cases = []
    with pytest.raises(keys.KeyFileError, match="public key") as ei:
        keys.load_private_key(pub_path, b"pw")
    cases.append(ei.value)
    with pytest.raises(keys.KeyFileError, match="PRIVATE") as ei:
        keys.load_public_key(key_path)
    cases.append(ei.value)
    with pytest.raises(keys.KeyFileError, match="no such key file") as ei:
        keys.load_public_key(tmp_path / "missing.pub")
    cases.append(ei.value)

    junk = tmp_path / "junk"
    junk.write_bytes(b"\xff\xd8\xff\xe0 not a key")
    with pytest.raises(keys.KeyFileError, match="not a refacex key file") as ei:
        keys.load_public_key(junk)
    cases.append(ei.value)

    garbled = tmp_path / "garbled.pub"
    lines = pub_path.read_text().splitlines()
    garbled.write_text("\n".join(lines[:-2] + ["!!!!"] + lines[-1:]) + "\n")
    with pytest.raises(keys.KeyFileError, match="damaged") as ei:
        keys.load_public_key(garbled)
    cases.append(ei.value)

    truncated = tmp_path / "trunc.key"
    truncated.write_text("\n".join(key_path.read_text().splitlines()[:-1]))
    with pytest.raises(keys.KeyFileError, match="damaged") as ei:
        keys.load_private_key(truncated, b"pw")
    cases.append(ei.value)

    # A flipped byte in the encrypted private key: the passphrase check passes, AEAD fails.
    text = key_path.read_text().splitlines()
    import base64

    body = bytearray(base64.b64decode("".join(text[4:-1])))
    body[-1] ^= 1
    (tmp_path / "flip.key").write_text(
        "\n".join(text[:4] + [base64.b64encode(bytes(body)).decode()] + text[-1:]) + "\n"
    )
    with pytest.raises(keys.KeyFileError, match="damaged") as ei:
        keys.load_private_key(tmp_path / "flip.key", b"pw")
    assert not isinstance(ei.value, keys.KeyPassphraseError)
    cases.append(ei.value)

    other = X25519PrivateKey.generate()
    lied = pub_path.read_text().replace(
        keys.key_id(keys.load_public_key(pub_path)).hex(), keys.key_id(other.public_key()).hex()
    )
    (tmp_path / "lied.pub").write_text(lied)
    with pytest.raises(keys.KeyFileError, match="Key-Id"):
        keys.load_public_key(tmp_path / "lied.pub")

    for exc in cases:
        assert isinstance(exc, RefacexError) and "\n" not in str(exc)


def test_passphrase_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"hunter2\n")
    assert keys.read_passphrase_file(f) == b"hunter2"
    f.write_bytes(b"hunter2\r\n")
    assert keys.read_passphrase_file(f) == b"hunter2"
    f.write_bytes(b"ends in space \n\n")
    assert keys.read_passphrase_file(f) == b"ends in space \n"
    f.write_bytes(b"no newline")
    assert keys.read_passphrase_file(f) == b"no newline"
    for content in (b"", b"\n"):
        f.write_bytes(content)
        with pytest.raises(keys.PassphraseFileError, match="empty"):
            keys.read_passphrase_file(f)
    with pytest.raises(keys.PassphraseFileError, match="no such"):
        keys.read_passphrase_file(tmp_path / "nope")


# -------------------------------------------------------------------- format evolution rules


def _envelope(
    major: int = fmt.FORMAT_MAJOR, minor: int = fmt.FORMAT_MINOR, tier: int = 1
) -> bytes:
    return fmt.MAGIC + bytes([(major << 4) | minor, tier, 1])


def test_unknown_tlv_tags_are_skipped(k1: X25519PrivateKey) -> None:
    p = _payload("robust", n_faces=1)
    face = fmt._encode_face(p.faces[0], compact=True) + b"\x3f\x03new"  # unknown face field
    pt = bytearray()
    fmt.put_record(pt, 99, b"a learned code from the future")  # unknown top-level record
    fmt.put_record(pt, 1000, b"")  # multi-byte tag, empty value
    fmt.put_record(pt, fmt.TAG_METHOD, p.method.encode())
    fmt.put_record(pt, fmt.TAG_IMAGE_SIZE, b"\xa0\x1f\xb8\x17")  # 4000, 3000
    fmt.put_record(pt, fmt.TAG_FACE, face)
    env = _envelope(minor=min(fmt.FORMAT_MINOR + 1, 15), tier=2)  # written by a newer minor
    blob = env + crypto.seal(bytes(pt), recipients=[k1.public_key()], aad=env, compact=True)
    out = fmt.decode_payload(blob, private_key=k1)
    assert out.image_size == (4000, 3000) and out.method == p.method
    assert len(out.faces) == 1 and out.faces[0].data == p.faces[0].data


def test_future_major_version_is_unsupported(k1: X25519PrivateKey) -> None:
    blob = fmt.encode_payload(_payload(), recipients=[k1.public_key()])
    future = _envelope(major=fmt.FORMAT_MAJOR + 1) + blob[ENV:]
    with pytest.raises(UnsupportedPayloadError, match="upgrade"):
        fmt.decode_payload(future, private_key=k1)
    assert fmt.inspect_payload(future)["supported"] is False
    with pytest.raises(TamperedPayloadError):
        fmt.decode_payload(_envelope(major=0) + blob[ENV:], private_key=k1)


def test_unknown_mode_newer_minor_is_unsupported_else_tampered(k1: X25519PrivateKey) -> None:
    sealed = bytearray(crypto.seal(b"x", recipients=[k1.public_key()]))
    sealed[0] = 0x99  # a mode this release does not know
    with pytest.raises(UnsupportedPayloadError) as ei:
        fmt.decode_payload(_envelope(minor=fmt.FORMAT_MINOR + 1) + sealed, private_key=k1)
    assert type(ei.value) is not TamperedPayloadError
    with pytest.raises(TamperedPayloadError):
        fmt.decode_payload(_envelope() + sealed, private_key=k1)


def test_not_a_payload() -> None:
    for blob in (b"", b"\x89PNG\r\n\x1a\n", os.urandom(64).replace(b"R", b"r"), b"rfx\x10\x01"):
        with pytest.raises(NoPayloadError):
            fmt.decode_payload(blob, passphrase=b"pw")
        with pytest.raises(NoPayloadError):
            fmt.inspect_payload(blob)


def test_malformed_authenticated_plaintext_is_payload_error(k1: X25519PrivateKey) -> None:
    env = _envelope()
    for pt in (b"", b"\x03\x05ab"):  # no image size / record runs past the end
        blob = env + crypto.seal(pt, recipients=[k1.public_key()], aad=env)
        with pytest.raises(PayloadError, match="malformed") as ei:
            fmt.decode_payload(blob, private_key=k1)
        assert not isinstance(ei.value, TamperedPayloadError | WrongKeyError)


def test_inspect_needs_no_key_and_shows_no_face_data(k1: X25519PrivateKey) -> None:
    blob = fmt.encode_payload(_payload("vault"), passphrase=b"pw")
    info = fmt.inspect_payload(blob)
    assert info["version"] == "1.2" and info["tier"] == "vault" and info["mode"] == "passphrase"
    assert info["recipients"] == 0 and info["scrypt"] == CHEAP.as_dict()
    # Since 1.2 not even the face count is public; no face data is.
    assert "faces" not in info and blob[5] == 0
    assert not any(isinstance(v, bytes) for v in info.values())
    assert info["total_bytes"] == len(blob)


def test_unknown_codec_id_is_reported_not_fatal(k1: X25519PrivateKey) -> None:
    fmt.register_codec("test-codec-77", 77)
    try:
        p = _payload("robust", n_faces=1)
        p.faces[0].codec = "test-codec-77"
        blob = fmt.encode_payload(p, recipients=[k1.public_key()])
    finally:
        del fmt.CODECS["test-codec-77"]
    assert fmt.decode_payload(blob, private_key=k1).faces[0].codec == "unknown-77"
    with pytest.raises(ValueError):
        fmt.register_codec("png", 9)
    with pytest.raises(ValueError):
        fmt.register_codec("another", fmt.CODECS["png"])


# --------------------------------------------------------------------- overhead and geometry


def test_crypto_overhead_matches_documented_numbers(k1: X25519PrivateKey) -> None:
    documented = {  # docs/payload-format.md, "Overhead"
        ("public-key", 1): 118,
        ("public-key", 2): 174,
        ("passphrase", 0): 52,
        ("compact-public-key", 1): 42,
        ("compact-passphrase", 0): 20,
        ("compact-public-key-legacy", 1): 51,
        ("compact-passphrase-legacy", 0): 28,
    }
    k2 = X25519PrivateKey.generate()
    for (mode, n), number in documented.items():
        assert crypto.overhead(mode, max(n, 1)) == number
        p = _payload("robust", n_faces=1)
        compact = mode.startswith("compact")
        blob = _seal_case(mode, n, k1, k2)
        plaintext = fmt.encode_plaintext(p, compact=compact)
        assert len(blob) - len(plaintext) == fmt.ENVELOPE_LEN + number == 6 + number


def test_robust_face_fixed_overhead() -> None:
    """Documented: 26 bytes in the worked example, at most 31 for images up to 8000 px."""
    data = bytes(100)
    face = FaceRecord(
        0,
        _similarity(112 / 200, 0.05, -1100.0, -800.0),
        112,
        (1900, 1350, 220, 240),
        "pca-v1",
        data,
    )
    rec = bytearray()
    fmt.put_record(rec, fmt.TAG_FACE, fmt._encode_face(face, compact=True))
    assert len(rec) - len(data) == 26
    # Worst case for <= 8000 px: every varint at its largest size (centre and crop-width
    # vector components >= 1024 px need 3 bytes each).
    inv = _similarity(8000 / 200, math.pi / 4, 0, 0)
    inv[:, 2] = np.array([4000.0, 4000.0]) - inv[:, :2] @ np.array([100.0, 100.0])
    worst = FaceRecord(
        127, fmt._invert_affine(inv), 200, (7999, 7999, 7999, 7999), "pca-v1", bytes(300)
    )
    rec = bytearray()
    fmt.put_record(rec, fmt.TAG_FACE, fmt._encode_face(worst, compact=True))
    assert len(rec) - 300 == 31


def test_compact_similarity_accuracy_up_to_8000px() -> None:
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(2000):
        crop = int(rng.choice([96, 112, 128, 256]))
        face_px = rng.uniform(12, 8000)  # image pixels the crop spans
        angle = rng.uniform(-math.pi, math.pi)
        centre = rng.uniform(0, 8000, size=2)
        inv = _similarity(face_px / crop, angle, 0, 0)
        inv[:, 2] = centre - inv[:, :2] @ np.array([crop / 2, crop / 2])
        a = fmt._invert_affine(inv)
        tag, value = fmt._encode_affine(a, crop, compact=True)
        assert tag == fmt.FTAG_AFFINE_SIM_Q8 and len(value) <= 12
        back = fmt._decode_affine(tag, value, crop)
        worst = max(worst, fmt.affine_error_px(a, back, crop))
    assert worst < 0.16  # bound: sqrt(2)/16 + 1/16 = 0.151 px


def test_non_similarity_falls_back_to_float32() -> None:
    a = np.array([[0.5, 0.1, -300.0], [0.02, 0.7, -2000.0]])  # shear + anisotropic scale
    tag, value = fmt._encode_affine(a, 112, compact=True)
    assert tag == fmt.FTAG_AFFINE_F32
    assert fmt.affine_error_px(a, fmt._decode_affine(tag, value, 112), 112) < 0.01


def test_invalid_face_records_are_refused() -> None:
    p = _payload("robust", n_faces=1)
    for change in (
        {"codec": "no-such-codec"},
        {"rect": (-1, 0, 10, 10)},
        {"affine": np.zeros((2, 3))},
        {"affine": np.full((2, 3), np.nan)},
    ):
        f = FaceRecord(**{**p.faces[0].__dict__, **change})
        with pytest.raises(ValueError):
            fmt.encode_plaintext(Payload("robust", (10, 10), [f]), compact=True)
