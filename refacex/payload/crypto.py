"""Authenticated encryption of recovery payloads (public-key and passphrase modes).

Everything here is built from ``cryptography`` primitives — X25519, HKDF-SHA256, scrypt,
ChaCha20-Poly1305 and AES-256-GCM — and only glues them together; no home-made primitives.

Six modes, each identified by the first byte of a sealed blob (any two values differ in at
least 4 bits, so a single flipped bit never turns one valid mode into another). New seals
use the first four; the two legacy compact modes are only opened (files written before
1.1):

* ``MODE_PUBKEY`` (full, vault tier): random content key, one ephemeral X25519 key per
  seal, the content key wrapped once per recipient under a key-encryption key derived by
  ECDH + HKDF. Any number of recipients; an 8-byte key id per recipient.
* ``MODE_PASSPHRASE`` (full): scrypt with a 16-byte random salt and the cost stored in the
  header; a 4-byte check value derived from the scrypt output tells a wrong passphrase
  from a tampered payload.
* ``MODE_COMPACT_PUBKEY`` (robust in-pixel tier, every byte costs capacity): a single
  recipient; the content key is derived directly from ECDH with the fresh ephemeral key, so
  it is never reused and a zero nonce is safe; 1-byte key-id hint; AES-256-GCM with the tag
  truncated to 64 bits (42 bytes of overhead).
* ``MODE_COMPACT_PASSPHRASE``: 8-byte salt, cheaper scrypt (it runs once per image), 2-byte
  check value, zero nonce (the key is fresh because the salt is); AES-256-GCM, 64-bit tag
  (20 bytes of overhead).
* ``MODE_COMPACT_PUBKEY_LEGACY`` / ``MODE_COMPACT_PASSPHRASE_LEGACY`` (format 1.0, open
  only): the same with ChaCha20-Poly1305 (16-byte tag), and a 2-byte hint in public-key mode.

The 64-bit GCM tag (a length NIST SP 800-38D allows, §5.2.1.2, with the usage limits of
its Appendix C) is what makes the compact modes compact. Its cost: a forged or altered blob
is accepted with probability about ``l * 2**-64`` per attempt, ``l`` being the message
length in 16-byte blocks (GCM's bound for truncated tags: ~2**-60 for a typical robust
payload of ~100 bytes, ~2**-56 for the largest, ~4.7 kB), instead of ~2**-100 or less with
a 16-byte tag. Each compact key encrypts exactly one message (fresh ephemeral key or fresh
salt per seal, so the fixed zero nonce is never reused under a key), which leaves an
attacker only blind forgery attempts against one image's key; the attacks on truncated GCM
tags that recover the hash key need ~2**56+ such attempts for their first step. The tag
length is fixed by the mode, never taken from the blob.

The whole clear header (and the caller's ``aad``, e.g. the payload envelope) is the AEAD
associated data, so it cannot be altered without ``open_sealed`` noticing.

Why a wrong key and tampering can be told apart: the key id / check value are compared
*before* any AEAD is attempted; a mismatch means "not your key" (``WrongKeyError``). When
they match, the key is right, so an AEAD failure can only mean the bytes changed
(``TamperedPayloadError``) — except by chance: a wrong key matches the compact 1-byte hint
with probability 1/256 (and a wrong passphrase the 2-byte check value with 1/65536); the
tag cannot say which of the two happened, so that case is reported as tampering and the
message says a wrong key is possible. The exceptions are the bytes that feed key
selection/derivation themselves (key ids, KDF cost, salt, check value): altering them is
indistinguishable from a wrong key without a secret, and is reported as ``WrongKeyError``
— see docs/payload-format.md for the exact table.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from refacex.errors import (
    PayloadError,
    TamperedPayloadError,
    UnsupportedPayloadError,
    UntrustedPayloadError,
    WrongKeyError,
)

MODE_PUBKEY = 0x11
MODE_PASSPHRASE = 0x22
MODE_COMPACT_PUBKEY = 0x0F  # AES-256-GCM, 64-bit tag, 1-byte key-id hint (format 1.1)
MODE_COMPACT_PASSPHRASE = 0xF0  # AES-256-GCM, 64-bit tag (format 1.1)
MODE_COMPACT_PUBKEY_AUTH = 0xC3  # as 0x0F, key also agreed with the sender site (1.2)
MODE_COMPACT_PUBKEY_LEGACY = 0x44  # ChaCha20-Poly1305, 2-byte hint: opened, never written
MODE_COMPACT_PASSPHRASE_LEGACY = 0x88  # ChaCha20-Poly1305: opened, never written

MODE_NAMES = {
    MODE_PUBKEY: "public-key",
    MODE_PASSPHRASE: "passphrase",
    MODE_COMPACT_PUBKEY: "compact-public-key",
    MODE_COMPACT_PUBKEY_AUTH: "compact-public-key-auth",
    MODE_COMPACT_PASSPHRASE: "compact-passphrase",
    MODE_COMPACT_PUBKEY_LEGACY: "compact-public-key-legacy",
    MODE_COMPACT_PASSPHRASE_LEGACY: "compact-passphrase-legacy",
}
COMPACT_MODES = frozenset(
    {MODE_COMPACT_PUBKEY, MODE_COMPACT_PUBKEY_AUTH, MODE_COMPACT_PASSPHRASE,
     MODE_COMPACT_PUBKEY_LEGACY, MODE_COMPACT_PASSPHRASE_LEGACY}
)
_GCM_MODES = frozenset({MODE_COMPACT_PUBKEY, MODE_COMPACT_PUBKEY_AUTH, MODE_COMPACT_PASSPHRASE})
_COMPACT_PUBKEY_MODES = frozenset(
    {MODE_COMPACT_PUBKEY, MODE_COMPACT_PUBKEY_AUTH, MODE_COMPACT_PUBKEY_LEGACY})
_PASSPHRASE_MODES = frozenset(
    {MODE_PASSPHRASE, MODE_COMPACT_PASSPHRASE, MODE_COMPACT_PASSPHRASE_LEGACY}
)

KEY_LEN = 32  # ChaCha20-Poly1305 / AES-256 key, X25519 public key
NONCE_LEN = 12
TAG_LEN = 16  # ChaCha20-Poly1305 tag (full modes, legacy compact modes)
COMPACT_TAG_LEN = 8  # truncated AES-GCM tag (compact modes)
KEY_ID_LEN = 8
KEY_HINT_LEN = 2  # legacy compact public-key mode
COMPACT_KEY_HINT_LEN = 1
WRAPPED_KEY_LEN = KEY_LEN + TAG_LEN
SALT_LEN = 16
COMPACT_SALT_LEN = 8
CHECK_LEN = 4
COMPACT_CHECK_LEN = 2
MAX_RECIPIENTS = 255

_ZERO_NONCE = bytes(NONCE_LEN)
_WRAP_INFO = b"refacex v1 key-wrap"
_COMPACT_INFO = b"refacex v1 compact content key"  # legacy 0x44
_COMPACT_GCM_INFO = b"refacex v1.1 compact aes-256-gcm-64 content key"
_COMPACT_AUTH_INFO = b"refacex v1.2 compact authenticated aes-256-gcm-64 content key"


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost: N = 2**log2_n, block size r, parallelism p (memory ~ 128 * r * N bytes)."""

    log2_n: int
    r: int = 8
    p: int = 1

    def as_dict(self) -> dict[str, int]:
        return {"log2_n": self.log2_n, "r": self.r, "p": self.p}


#: Cost used by new full passphrase seals (32 MiB, ~0.1 s). Stored in each header, so it can
#: be raised later (or lowered in tests) without a format change.
VAULT_SCRYPT = ScryptParams(log2_n=15, r=8, p=1)
#: Cost used by new compact passphrase seals (16 MiB, ~0.05 s): it runs once per image. Only
#: log2_n is stored; r=8 and p=1 are fixed by the compact format.
COMPACT_SCRYPT = ScryptParams(log2_n=14, r=8, p=1)
#: Opening refuses costs above this memory (a forged header must not exhaust RAM).
MAX_SCRYPT_MEMORY = 1 << 30


class UnknownModeError(UnsupportedPayloadError):
    """The mode byte names no mode this release knows (newer writer, or a damaged header).

    A separate class so the payload envelope, which knows the format version, can decide
    between "newer than me" and "corrupt".
    """


def overhead(mode: str, n_recipients: int = 1) -> int:
    """Bytes ``seal`` adds to the plaintext in ``mode`` (a key of ``MODE_NAMES`` values).

    Used by carriers to budget capacity; the numbers are the ones in docs/payload-format.md.
    """
    if mode == "public-key":
        return 1 + KEY_LEN + 1 + n_recipients * (KEY_ID_LEN + WRAPPED_KEY_LEN) + NONCE_LEN + TAG_LEN
    if mode == "passphrase":
        return 1 + 3 + SALT_LEN + CHECK_LEN + NONCE_LEN + TAG_LEN
    if mode in ("compact-public-key", "compact-public-key-auth"):
        return 1 + KEY_LEN + COMPACT_KEY_HINT_LEN + COMPACT_TAG_LEN
    if mode == "compact-passphrase":
        return 1 + 1 + COMPACT_SALT_LEN + COMPACT_CHECK_LEN + COMPACT_TAG_LEN
    if mode == "compact-public-key-legacy":
        return 1 + KEY_LEN + KEY_HINT_LEN + TAG_LEN
    if mode == "compact-passphrase-legacy":
        return 1 + 1 + COMPACT_SALT_LEN + COMPACT_CHECK_LEN + TAG_LEN
    raise ValueError(f"unknown mode {mode!r}")


def raw_public(pub: X25519PublicKey) -> bytes:
    """The 32 raw bytes of an X25519 public key."""
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(pub: X25519PublicKey | bytes) -> bytes:
    """First 8 bytes of SHA-256 of the raw public key: names a key without revealing much."""
    raw = pub if isinstance(pub, bytes) else raw_public(pub)
    return hashlib.sha256(raw).digest()[:KEY_ID_LEN]


def scrypt_derive(
    passphrase: bytes, salt: bytes, params: ScryptParams, check_len: int
) -> tuple[bytes, bytes]:
    """Derive (32-byte AEAD key, check value) from one scrypt run.

    The check value is the next bytes of the same scrypt output stream, so it is independent
    of the key yet only computable with the passphrase; comparing it first separates a wrong
    passphrase from a tampered ciphertext.
    """
    _check_scrypt_params(params)
    out = Scrypt(
        salt=salt, length=KEY_LEN + check_len, n=1 << params.log2_n, r=params.r, p=params.p
    ).derive(passphrase)
    return out[:KEY_LEN], out[KEY_LEN:]


def _check_scrypt_params(params: ScryptParams) -> None:
    if params.log2_n < 1 or params.r < 1 or params.p < 1:
        raise TamperedPayloadError("payload header is corrupt (invalid scrypt parameters)")
    if 128 * params.r * (1 << params.log2_n) > MAX_SCRYPT_MEMORY or params.p > 16:
        raise UnsupportedPayloadError(
            f"payload asks for scrypt cost {params.as_dict()}, beyond what this refacex accepts"
        )


class _Reader:
    """Bounds-checked cursor over a blob: running off the end means truncation."""

    def __init__(self, data: bytes, pos: int = 0, what: str = "payload") -> None:
        self.data = data
        self.pos = pos
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TamperedPayloadError(f"{self.what} is truncated or corrupt")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


def _hkdf(shared: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=salt, info=info).derive(shared)


def _ecdh(priv: X25519PrivateKey, pub: X25519PublicKey) -> bytes:
    try:
        return priv.exchange(pub)
    except ValueError:  # low-order point: only a forged ephemeral key gets here
        raise TamperedPayloadError("payload header is corrupt (invalid ephemeral key)") from None


def _check_passphrase(passphrase: bytes) -> None:
    if not isinstance(passphrase, bytes | bytearray):
        raise TypeError("passphrase must be bytes")
    if not passphrase:
        raise PayloadError("empty passphrase refused")


# --------------------------------------------------------------------------------- sealing


def seal(
    plaintext: bytes,
    *,
    recipients: Sequence[X25519PublicKey] = (),
    passphrase: bytes | None = None,
    aad: bytes = b"",
    compact: bool = False,
    sender: X25519PrivateKey | None = None,
) -> bytes:
    """Encrypt and authenticate ``plaintext`` for ``recipients`` or a ``passphrase`` (one only).

    ``sender`` (a site's static X25519 key, compact public-key mode only) makes the seal
    *authenticated*: the content key also depends on ECDH(sender, recipient), so only the
    sender or the recipient can make a blob that opens, and the opener learns which of its
    trusted senders made it, at no byte of overhead (the in-pixel tier has no room for a
    64-byte signature).

    ``aad`` is authenticated but not stored: ``open_sealed`` must be given the same bytes
    (the payload format passes its envelope header). ``compact`` picks the robust-tier
    modes (AES-256-GCM with a 64-bit tag); with several recipients it seals for the first
    one only.
    """
    recipients = list(recipients)
    if bool(recipients) == (passphrase is not None):
        raise ValueError("seal needs exactly one of recipients or passphrase")
    if passphrase is not None:
        _check_passphrase(passphrase)
        if compact:
            return _seal_compact_passphrase(plaintext, bytes(passphrase), aad)
        return _seal_passphrase(plaintext, bytes(passphrase), aad)
    if compact:
        return _seal_compact_pubkey(plaintext, recipients[0], aad, sender)
    return _seal_pubkey(plaintext, recipients, aad)


def _seal_pubkey(plaintext: bytes, recipients: list[X25519PublicKey], aad: bytes) -> bytes:
    unique: dict[bytes, X25519PublicKey] = {}
    for pub in recipients:
        unique.setdefault(raw_public(pub), pub)
    if len(unique) > MAX_RECIPIENTS:
        raise ValueError(f"at most {MAX_RECIPIENTS} recipients")
    eph = X25519PrivateKey.generate()
    eph_pub = raw_public(eph.public_key())
    content_key = ChaCha20Poly1305.generate_key()
    header = bytearray([MODE_PUBKEY])
    header += eph_pub
    header.append(len(unique))
    for raw, pub in unique.items():
        # One KEK per (ephemeral, recipient) pair, used exactly once: a zero nonce is safe.
        kek = _hkdf(_ecdh(eph, pub), eph_pub + raw, _WRAP_INFO)
        kid = key_id(raw)
        header += kid
        header += ChaCha20Poly1305(kek).encrypt(_ZERO_NONCE, content_key, kid)
    nonce = os.urandom(NONCE_LEN)
    header += nonce
    ct = ChaCha20Poly1305(content_key).encrypt(nonce, plaintext, aad + bytes(header))
    return bytes(header) + ct


def _seal_passphrase(plaintext: bytes, passphrase: bytes, aad: bytes) -> bytes:
    params = VAULT_SCRYPT
    salt = os.urandom(SALT_LEN)
    key, check = scrypt_derive(passphrase, salt, params, CHECK_LEN)
    nonce = os.urandom(NONCE_LEN)
    header = bytes([MODE_PASSPHRASE, params.log2_n, params.r, params.p]) + salt + check + nonce
    return header + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad + header)


def _gcm64_seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """AES-256-GCM, zero nonce, tag truncated to ``COMPACT_TAG_LEN`` bytes (key used once)."""
    enc = Cipher(algorithms.AES(key), modes.GCM(_ZERO_NONCE)).encryptor()
    enc.authenticate_additional_data(ad)
    ct = enc.update(plaintext) + enc.finalize()
    return ct + enc.tag[:COMPACT_TAG_LEN]


def _gcm64_open(key: bytes, body: bytes, ad: bytes, wrong_key_possible: bool) -> bytes:
    # The tag length is fixed by the mode (the last 8 bytes), never read from the blob.
    ct, tag = body[:-COMPACT_TAG_LEN], body[-COMPACT_TAG_LEN:]
    dec = Cipher(
        algorithms.AES(key), modes.GCM(_ZERO_NONCE, tag, min_tag_length=COMPACT_TAG_LEN)
    ).decryptor()
    dec.authenticate_additional_data(ad)
    pt = dec.update(ct)
    try:
        dec.finalize()
    except InvalidTag:
        raise _tampered(wrong_key_possible) from None
    return pt  # released only once the tag has verified


def _tampered(wrong_key_possible: bool) -> TamperedPayloadError:
    msg = "payload was modified after it was written (authentication failed)"
    if wrong_key_possible:
        # 1-byte hint: one wrong key in 256 gets past it; the tag cannot tell the two apart.
        msg += "; or it was sealed for another key whose id starts with the same byte"
    return TamperedPayloadError(msg)


def _seal_compact_pubkey(plaintext: bytes, recipient: X25519PublicKey, aad: bytes,
                         sender: X25519PrivateKey | None = None) -> bytes:
    eph = X25519PrivateKey.generate()
    eph_pub = raw_public(eph.public_key())
    raw = raw_public(recipient)
    hint = key_id(raw)[:COMPACT_KEY_HINT_LEN]
    # Fresh ephemeral key => fresh content key => the zero nonce is never reused under a key.
    if sender is None:
        key = _hkdf(_ecdh(eph, recipient), eph_pub + raw, _COMPACT_GCM_INFO)
        header = bytes([MODE_COMPACT_PUBKEY]) + eph_pub + hint
    else:
        key = _auth_key(_ecdh(eph, recipient), _ecdh(sender, recipient), eph_pub, raw,
                        raw_public(sender.public_key()))
        header = bytes([MODE_COMPACT_PUBKEY_AUTH]) + eph_pub + hint
    return header + _gcm64_seal(key, plaintext, aad + header)


def _auth_key(ee: bytes, se: bytes, eph_pub: bytes, recipient: bytes, sender: bytes) -> bytes:
    """HPKE-Auth-style content key: both shared secrets, all three public keys as salt."""
    return _hkdf(ee + se, eph_pub + recipient + sender, _COMPACT_AUTH_INFO)


def _seal_compact_passphrase(plaintext: bytes, passphrase: bytes, aad: bytes) -> bytes:
    params = ScryptParams(COMPACT_SCRYPT.log2_n, 8, 1)
    salt = os.urandom(COMPACT_SALT_LEN)
    # Fresh salt => fresh key => zero nonce is safe (a salt collision needs ~2**32 seals
    # under the same passphrase; see docs/payload-format.md).
    key, check = scrypt_derive(passphrase, salt, params, COMPACT_CHECK_LEN)
    header = bytes([MODE_COMPACT_PASSPHRASE, params.log2_n]) + salt + check
    return header + _gcm64_seal(key, plaintext, aad + header)


def _seal_compact_pubkey_legacy(
    plaintext: bytes, recipient: X25519PublicKey, aad: bytes
) -> bytes:
    """Mode 0x44 as format 1.0 wrote it; kept so tests can make old blobs. Never used to seal."""
    eph = X25519PrivateKey.generate()
    eph_pub = raw_public(eph.public_key())
    raw = raw_public(recipient)
    key = _hkdf(_ecdh(eph, recipient), eph_pub + raw, _COMPACT_INFO)
    header = bytes([MODE_COMPACT_PUBKEY_LEGACY]) + eph_pub + key_id(raw)[:KEY_HINT_LEN]
    return header + ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, aad + header)


def _seal_compact_passphrase_legacy(plaintext: bytes, passphrase: bytes, aad: bytes) -> bytes:
    """Mode 0x88 as format 1.0 wrote it; kept so tests can make old blobs. Never used to seal."""
    params = ScryptParams(COMPACT_SCRYPT.log2_n, 8, 1)
    salt = os.urandom(COMPACT_SALT_LEN)
    key, check = scrypt_derive(passphrase, salt, params, COMPACT_CHECK_LEN)
    header = bytes([MODE_COMPACT_PASSPHRASE_LEGACY, params.log2_n]) + salt + check
    return header + ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, aad + header)


# --------------------------------------------------------------------------------- opening


@dataclass
class _Parsed:
    mode: int
    header: bytes
    ciphertext: bytes
    eph_pub: bytes = b""
    slots: list[tuple[bytes, bytes]] | None = None  # (key id, wrapped key)
    hint: bytes = b""
    params: ScryptParams | None = None
    salt: bytes = b""
    check: bytes = b""
    nonce: bytes = _ZERO_NONCE
    tag_len: int = TAG_LEN


def _parse(blob: bytes) -> _Parsed:
    r = _Reader(blob)
    mode = r.byte()
    p = _Parsed(mode=mode, header=b"", ciphertext=b"")
    if mode == MODE_PUBKEY:
        p.eph_pub = r.take(KEY_LEN)
        count = r.byte()
        if count == 0:
            raise TamperedPayloadError("payload header is corrupt (no recipients)")
        p.slots = [(r.take(KEY_ID_LEN), r.take(WRAPPED_KEY_LEN)) for _ in range(count)]
        p.nonce = r.take(NONCE_LEN)
    elif mode == MODE_PASSPHRASE:
        p.params = ScryptParams(r.byte(), r.byte(), r.byte())
        p.salt = r.take(SALT_LEN)
        p.check = r.take(CHECK_LEN)
        p.nonce = r.take(NONCE_LEN)
    elif mode in _COMPACT_PUBKEY_MODES:
        p.eph_pub = r.take(KEY_LEN)
        p.hint = r.take(KEY_HINT_LEN if mode == MODE_COMPACT_PUBKEY_LEGACY
                        else COMPACT_KEY_HINT_LEN)
    elif mode in (MODE_COMPACT_PASSPHRASE, MODE_COMPACT_PASSPHRASE_LEGACY):
        p.params = ScryptParams(r.byte(), 8, 1)
        p.salt = r.take(COMPACT_SALT_LEN)
        p.check = r.take(COMPACT_CHECK_LEN)
    else:
        raise UnknownModeError(f"unknown payload encryption mode 0x{mode:02x}")
    if mode in _GCM_MODES:
        p.tag_len = COMPACT_TAG_LEN
    p.header = blob[: r.pos]
    p.ciphertext = r.rest()
    if len(p.ciphertext) < p.tag_len:
        raise TamperedPayloadError("payload is truncated or corrupt")
    return p


def open_sealed(
    blob: bytes,
    *,
    private_key: X25519PrivateKey | None = None,
    passphrase: bytes | None = None,
    aad: bytes = b"",
) -> bytes:
    """Verify and decrypt a blob from ``seal``; ``aad`` must equal the one given to ``seal``.

    Raises ``WrongKeyError`` when the key/passphrase is not the one the blob was sealed for,
    ``TamperedPayloadError`` when it is but the bytes do not authenticate.
    """
    return open_sealed_from(blob, private_key=private_key, passphrase=passphrase, aad=aad)[0]


def open_sealed_from(
    blob: bytes,
    *,
    private_key: X25519PrivateKey | None = None,
    passphrase: bytes | None = None,
    aad: bytes = b"",
    senders: Sequence[X25519PublicKey] = (),
) -> tuple[bytes, int | None]:
    """``open_sealed`` that also says who made an authenticated blob: (plaintext, index of
    the sender in ``senders``, or None when the mode carries no sender).

    An authenticated compact blob that opens for none of ``senders`` raises
    ``UntrustedPayloadError``: without the sender's public key it cannot be opened at all,
    and the tag cannot tell a stranger's seal from altered bytes.
    """
    p = _parse(bytes(blob))
    ad = aad + p.header
    if p.mode in _PASSPHRASE_MODES:
        if passphrase is None:
            raise WrongKeyError("this payload is sealed with a passphrase; give the passphrase")
        _check_passphrase(passphrase)
        assert p.params is not None
        key, check = scrypt_derive(bytes(passphrase), p.salt, p.params, len(p.check))
        if not secrets.compare_digest(check, p.check):
            raise WrongKeyError("wrong passphrase for this payload")
        if p.mode in _GCM_MODES:
            return _gcm64_open(key, p.ciphertext, ad, wrong_key_possible=False), None
        return _aead_open(key, p.nonce, p.ciphertext, ad), None

    if private_key is None:
        raise WrongKeyError("this payload is sealed for a key pair; give the private key")
    my_raw = raw_public(private_key.public_key())
    my_id = key_id(my_raw)
    eph = X25519PublicKey.from_public_bytes(p.eph_pub)
    if p.mode in _COMPACT_PUBKEY_MODES:
        if my_id[: len(p.hint)] != p.hint:
            raise WrongKeyError(
                f"payload is sealed for a key starting {p.hint.hex()}, not for key {my_id.hex()}"
            )
        if p.mode == MODE_COMPACT_PUBKEY_AUTH:
            return _open_compact_auth(p, private_key, my_raw, eph, ad, senders)
        if p.mode == MODE_COMPACT_PUBKEY:
            key = _hkdf(_ecdh(private_key, eph), p.eph_pub + my_raw, _COMPACT_GCM_INFO)
            return _gcm64_open(key, p.ciphertext, ad, wrong_key_possible=True), None
        key = _hkdf(_ecdh(private_key, eph), p.eph_pub + my_raw, _COMPACT_INFO)
        return _aead_open(key, _ZERO_NONCE, p.ciphertext, ad), None

    assert p.slots is not None
    mine = [wrapped for kid, wrapped in p.slots if kid == my_id]
    if not mine:
        ids = ", ".join(kid.hex() for kid, _ in p.slots)
        raise WrongKeyError(f"payload is sealed for key(s) {ids}, not for key {my_id.hex()}")
    kek = _hkdf(_ecdh(private_key, eph), p.eph_pub + my_raw, _WRAP_INFO)
    for wrapped in mine:
        try:
            content_key = ChaCha20Poly1305(kek).decrypt(_ZERO_NONCE, wrapped, my_id)
        except InvalidTag:
            continue
        return _aead_open(content_key, p.nonce, p.ciphertext, ad), None
    raise TamperedPayloadError(
        "payload was modified after it was written (key slot does not authenticate)"
    )


def _open_compact_auth(p: _Parsed, private_key: X25519PrivateKey, my_raw: bytes,
                       eph: X25519PublicKey, ad: bytes, senders: Sequence[X25519PublicKey]
                       ) -> tuple[bytes, int]:
    """Try each trusted sender; the first whose derived key authenticates made the blob."""
    ee = _ecdh(private_key, eph)
    for i, sender in enumerate(senders):
        se = _ecdh(private_key, sender)
        key = _auth_key(ee, se, p.eph_pub, my_raw, raw_public(sender))
        try:
            return _gcm64_open(key, p.ciphertext, ad, wrong_key_possible=False), i
        except TamperedPayloadError:
            continue
    raise UntrustedPayloadError(
        "in-pixel payload was not made by a site you trust (add its key with --trust "
        "SITE.pub), or it was altered"
        + ("" if senders else "; no trusted site keys were given"))


def _aead_open(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        raise TamperedPayloadError(
            "payload was modified after it was written (authentication failed)"
        ) from None


def describe(blob: bytes) -> dict[str, Any]:
    """What the clear header says, without any key: mode, AEAD, recipients, key ids, KDF cost."""
    p = _parse(bytes(blob))
    info: dict[str, Any] = {
        "mode": MODE_NAMES[p.mode],
        "compact": p.mode in COMPACT_MODES,
        "aead": "aes-256-gcm" if p.mode in _GCM_MODES else "chacha20-poly1305",
        "tag_bytes": p.tag_len,
        "header_bytes": len(p.header),
        "ciphertext_bytes": len(p.ciphertext),
        "plaintext_bytes": len(p.ciphertext) - p.tag_len,
    }
    if p.slots is not None:
        info["recipients"] = len(p.slots)
        info["key_ids"] = [kid.hex() for kid, _ in p.slots]
    elif p.mode in _COMPACT_PUBKEY_MODES:
        info["recipients"] = 1
        info["key_id_hint"] = p.hint.hex()
    else:
        info["recipients"] = 0
        assert p.params is not None
        info["kdf"] = "scrypt"
        info["scrypt"] = p.params.as_dict()
    return info
