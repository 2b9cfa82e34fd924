"""X25519 key pairs in text-armoured files, and passphrase files.

A key file looks like::

    -----BEGIN REFACEX PUBLIC KEY-----
    Key-Id: 3f2a9c0e11d4b7a2

    AQEf...base64...
    -----END REFACEX PUBLIC KEY-----

Text so it survives e-mail and copy/paste; the ``Key-Id`` line (first 8 bytes of SHA-256
of the raw public key, the same id payload headers carry) lets a user tell keys apart and
see which key a payload needs. The id line is informative only: on load it is recomputed
from the key and a mismatch is reported as a damaged file.

Binary body (base64 inside the armour), version 1:

* public:  ``version=1 | alg=1 (X25519) | public key (32)``
* private: ``version=1 | alg=1 | protection | public key (32) | ...`` where protection 0
  (clear) is followed by the private key (32), and protection 1 (scrypt +
  ChaCha20-Poly1305) by ``log2_n | r | p | salt (16) | check (4) | nonce (12) |
  encrypted private key (32 + 16 tag)`` with everything before the ciphertext as
  associated data. The public key is kept in clear so the key id is known without the
  passphrase, and the check value tells a wrong passphrase from a damaged file.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from refacex.errors import PayloadError, RefacexError
from refacex.io.images import write_bytes_atomic
from refacex.payload.crypto import (
    CHECK_LEN,
    KEY_LEN,
    NONCE_LEN,
    SALT_LEN,
    TAG_LEN,
    ScryptParams,
    key_id,
    raw_public,
    scrypt_derive,
)

__all__ = [
    "KEYFILE_SCRYPT",
    "KeyFileError",
    "KeyPassphraseError",
    "PassphraseFileError",
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "format_key_id",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "read_passphrase_file",
    "armour",
    "dearmour",
]

PUBLIC_KEY_NAME = "refacex.pub"
PRIVATE_KEY_NAME = "refacex.key"

_PUB_LABEL = "REFACEX PUBLIC KEY"
_PRIV_LABEL = "REFACEX PRIVATE KEY"
_VERSION = 1
_ALG_X25519 = 1
_PROT_CLEAR = 0
_PROT_SCRYPT = 1
_KEYFILE_AD = b"refacex private key v1"

#: scrypt cost for protecting a private key file (128 MiB, ~0.4 s): it runs once per
#: command, not per image, so it can be stronger than the payload cost. Stored in the file.
KEYFILE_SCRYPT = ScryptParams(log2_n=17, r=8, p=1)


class KeyFileError(RefacexError):
    """A key file is missing, damaged, or the wrong kind (public vs private)."""


class KeyPassphraseError(KeyFileError):
    """A passphrase-protected private key was given no passphrase, or the wrong one."""


class PassphraseFileError(RefacexError):
    """A passphrase file is missing, unreadable or empty."""


def format_key_id(kid: bytes) -> str:
    """Key id as users see it (16 hex digits)."""
    return kid.hex()


def armour(label: str, kid: bytes, body: bytes, extra: dict[str, str]) -> bytes:
    lines = [f"-----BEGIN {label}-----", f"Key-Id: {format_key_id(kid)}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines.append("")
    b64 = base64.b64encode(body).decode("ascii")
    lines += [b64[i : i + 64] for i in range(0, len(b64), 64)]
    lines.append(f"-----END {label}-----")
    return ("\n".join(lines) + "\n").encode("ascii")


def dearmour(path: Path, labels: tuple[str, ...] = (_PUB_LABEL, _PRIV_LABEL)
             ) -> tuple[str, dict[str, str], bytes]:
    """Return (label, header fields, body) or raise ``KeyFileError`` saying what is wrong.

    ``labels``: the armour labels the caller accepts (recovery keys by default)."""
    if not path.exists():
        raise KeyFileError(f"{path}: no such key file")
    if path.is_dir():
        raise KeyFileError(f"{path}: is a directory, not a key file")
    try:
        text = path.read_bytes().decode("ascii")
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a refacex key file") from None
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if not lines or not lines[0].startswith("-----BEGIN ") or not lines[0].endswith("-----"):
        raise KeyFileError(f"{path}: not a refacex key file")
    label = lines[0][len("-----BEGIN ") : -len("-----")]
    if label not in labels:
        raise KeyFileError(
            f"{path}: not a refacex key file (it holds a {label.lower() or 'unknown'})"
        )
    if lines[-1] != f"-----END {label}-----":
        raise KeyFileError(f"{path}: damaged key file (truncated)")
    fields: dict[str, str] = {}
    body_lines: list[str] = []
    for ln in lines[1:-1]:
        if ":" in ln and not body_lines:
            k, _, v = ln.partition(":")
            fields[k.strip().lower()] = v.strip()
        elif ln:
            body_lines.append(ln)
    try:
        body = base64.b64decode("".join(body_lines), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{path}: damaged key file (bad base64)") from None
    return label, fields, body


def _check_body_start(path: Path, body: bytes, min_len: int) -> None:
    if len(body) < 2:
        raise KeyFileError(f"{path}: damaged key file (too short)")
    if body[0] != _VERSION:
        raise KeyFileError(f"{path}: key file version {body[0]} is not supported by this refacex")
    if body[1] != _ALG_X25519:
        raise KeyFileError(f"{path}: unsupported key algorithm {body[1]}")
    if len(body) < min_len:
        raise KeyFileError(f"{path}: damaged key file (too short)")


def _check_id_line(path: Path, fields: dict[str, str], pub_raw: bytes) -> None:
    stated = fields.get("key-id")
    if stated is not None and stated.lower() != format_key_id(key_id(pub_raw)):
        raise KeyFileError(f"{path}: damaged key file (Key-Id line does not match the key)")


def generate_keypair(
    out_dir: str | os.PathLike[str],
    passphrase: bytes | None,
    *,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Create ``refacex.pub`` and ``refacex.key`` in ``out_dir``; return their paths.

    The private key is encrypted under ``passphrase`` (scrypt ``KEYFILE_SCRYPT`` +
    ChaCha20-Poly1305) unless it is None, in which case it is stored in clear and marked
    ``Protection: none``. An existing key is never replaced unless ``overwrite``: losing a
    private key makes every payload sealed for it unrecoverable.
    """
    out = Path(out_dir)
    pub_path, key_path = out / PUBLIC_KEY_NAME, out / PRIVATE_KEY_NAME
    if not overwrite:
        for p in (key_path, pub_path):
            if p.exists():
                raise KeyFileError(
                    f"{p}: already exists; refusing to replace a key "
                    "(payloads sealed for it would become unrecoverable)"
                )
    if passphrase is not None and not passphrase:
        raise KeyPassphraseError("empty passphrase refused; give a real one or none")

    priv = X25519PrivateKey.generate()
    pub_raw = raw_public(priv.public_key())
    priv_raw = priv.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    kid = key_id(pub_raw)

    pub_body = bytes([_VERSION, _ALG_X25519]) + pub_raw
    if passphrase is None:
        priv_body = bytes([_VERSION, _ALG_X25519, _PROT_CLEAR]) + pub_raw + priv_raw
        protection = "none (stored in clear)"
    else:
        prm = KEYFILE_SCRYPT
        salt = os.urandom(SALT_LEN)
        key, check = scrypt_derive(bytes(passphrase), salt, prm, CHECK_LEN)
        nonce = os.urandom(NONCE_LEN)
        head = bytes([_VERSION, _ALG_X25519, _PROT_SCRYPT]) + pub_raw
        head += bytes([prm.log2_n, prm.r, prm.p]) + salt + check + nonce
        priv_body = head + ChaCha20Poly1305(key).encrypt(nonce, priv_raw, _KEYFILE_AD + head)
        protection = "scrypt + chacha20-poly1305"

    # The temp file is created 0600 (mkstemp) and stays so: the private key is never
    # readable by others, not even for a moment; chmod again to be explicit.
    write_bytes_atomic(key_path, armour(_PRIV_LABEL, kid, priv_body, {"Protection": protection}),
                       mode=0o600)
    os.chmod(key_path, 0o600)
    write_bytes_atomic(pub_path, armour(_PUB_LABEL, kid, pub_body, {}))
    os.chmod(pub_path, 0o644)
    return pub_path, key_path


def load_public_key(path: str | os.PathLike[str]) -> X25519PublicKey:
    """Read a ``refacex.pub`` file; a private key file here is refused (never share it)."""
    p = Path(path)
    label, fields, body = dearmour(p)
    if label == _PRIV_LABEL:
        raise KeyFileError(
            f"{p}: is a PRIVATE key; give the public key file ({PUBLIC_KEY_NAME}) instead "
            "and keep the private one secret"
        )
    _check_body_start(p, body, 2 + KEY_LEN)
    if len(body) != 2 + KEY_LEN:
        raise KeyFileError(f"{p}: damaged key file (wrong length)")
    pub_raw = body[2:]
    _check_id_line(p, fields, pub_raw)
    return X25519PublicKey.from_public_bytes(pub_raw)


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None) -> X25519PrivateKey:
    """Read a ``refacex.key`` file, decrypting it with ``passphrase`` when it is protected.

    ``passphrase`` is ignored for a key stored in clear.
    """
    p = Path(path)
    label, fields, body = dearmour(p)
    if label == _PUB_LABEL:
        raise KeyFileError(
            f"{p}: is a public key; opening a payload needs the private key "
            f"file ({PRIVATE_KEY_NAME})"
        )
    _check_body_start(p, body, 3 + KEY_LEN)
    prot = body[2]
    pub_raw = body[3 : 3 + KEY_LEN]
    _check_id_line(p, fields, pub_raw)
    rest = body[3 + KEY_LEN :]
    if prot == _PROT_CLEAR:
        if len(rest) != KEY_LEN:
            raise KeyFileError(f"{p}: damaged key file (wrong length)")
        priv_raw = rest
    elif prot == _PROT_SCRYPT:
        fixed = 3 + SALT_LEN + CHECK_LEN + NONCE_LEN
        if len(rest) != fixed + KEY_LEN + TAG_LEN:
            raise KeyFileError(f"{p}: damaged key file (wrong length)")
        if passphrase is None:
            raise KeyPassphraseError(
                f"{p}: private key is passphrase-protected; give its passphrase"
            )
        if not passphrase:
            raise KeyPassphraseError(f"{p}: empty passphrase given")
        prm = ScryptParams(rest[0], rest[1], rest[2])
        salt = rest[3 : 3 + SALT_LEN]
        check = rest[3 + SALT_LEN : 3 + SALT_LEN + CHECK_LEN]
        nonce = rest[3 + SALT_LEN + CHECK_LEN : fixed]
        try:
            key, got_check = scrypt_derive(bytes(passphrase), salt, prm, CHECK_LEN)
        except PayloadError:
            raise KeyFileError(f"{p}: damaged key file (bad scrypt parameters)") from None
        if not secrets.compare_digest(got_check, check):
            raise KeyPassphraseError(f"{p}: wrong passphrase for this private key")
        head = body[: 3 + KEY_LEN + fixed]
        try:
            priv_raw = ChaCha20Poly1305(key).decrypt(nonce, rest[fixed:], _KEYFILE_AD + head)
        except InvalidTag:
            raise KeyFileError(f"{p}: damaged key file (authentication failed)") from None
    else:
        raise KeyFileError(f"{p}: unsupported key protection {prot}")
    priv = X25519PrivateKey.from_private_bytes(priv_raw)
    if raw_public(priv.public_key()) != pub_raw:
        raise KeyFileError(f"{p}: damaged key file (private and public halves do not match)")
    return priv


def read_passphrase_file(path: str | os.PathLike[str]) -> bytes:
    """Passphrase bytes from a file, minus one trailing newline (``\\n`` or ``\\r\\n``).

    Only one newline is stripped so that a passphrase may itself end in whitespace; an
    empty result is an error because an empty passphrase protects nothing.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise PassphraseFileError(f"{p}: no such passphrase file") from None
    except IsADirectoryError:
        raise PassphraseFileError(f"{p}: is a directory, not a passphrase file") from None
    except OSError as exc:
        raise PassphraseFileError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise PassphraseFileError(f"{p}: passphrase file is empty")
    return data
