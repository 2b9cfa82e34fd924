"""Site keys: who anonymised an image (provenance) and the secret that picks its donors.

Why a second kind of key: the recovery key pair (``refacex.pub`` / ``refacex.key``) only
says *who may open* a payload. Its public half is handed to camera sites and contractors,
so anyone holding it can seal a payload of their choosing; without more, ``recover``
would paste a forger's face back as "the original". A site key says *who made* a payload:

* ``site.key`` (secret, 0600, kept by the anonymising site) is one random 32-byte seed.
  From it HKDF derives an **Ed25519** signing key (vault payloads are signed), a static
  **X25519** key (the compact in-pixel payload is sealed in an authenticated mode: only a
  holder of this key or of the recipient's private key can make one that opens), and the
  **donor secret** that keys which virtual identity replaces a face. None of the three can
  be derived from anything public, so a holder of ``refacex.pub`` cannot forge payloads
  nor predict donors.
* ``site.pub`` (public) carries the Ed25519 and X25519 public keys. The holder of the
  recovery key *trusts* it (``refacex recover --trust site.pub``, or by keeping it next to
  ``refacex.key``), and ``recover`` refuses payloads no trusted site made.

The seed is stored in clear (mode 0600): sites anonymise unattended, and losing it lets
the thief forge payloads for that site and predict its donors, never recover a face.

File format: the same armour as the recovery keys (``refacex.payload.keys``); body
``version=1 | alg=2 (site) | ed25519 public (32) | x25519 public (32) [| seed (32)]``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from refacex.io.images import write_bytes_atomic
from refacex.payload.keys import KeyFileError, armour, dearmour

SITE_KEY_NAME = "site.key"
SITE_PUBLIC_NAME = "site.pub"
SITE_LABEL = "REFACEX SITE KEY"
SITE_PUB_LABEL = "REFACEX SITE PUBLIC KEY"
SITE_ID_LEN = 8
SIGNATURE_LEN = 64
_VERSION = 1
_ALG_SITE = 2
_SEED_LEN = 32
_PUB_LEN = 64


def _derive(seed: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=b"refacex site key v1", info=info).derive(seed)


def _raw(pub: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class SitePublic:
    """What a recovery key holder trusts: a site's signature and key-agreement keys."""

    ed25519: bytes  # raw 32 bytes
    x25519: bytes  # raw 32 bytes
    name: str = ""  # where it came from (a file name), for messages

    @property
    def site_id(self) -> bytes:
        """First 8 bytes of SHA-256 over both public keys: names the site in messages."""
        return hashlib.sha256(self.ed25519 + self.x25519).digest()[:SITE_ID_LEN]

    @property
    def x25519_key(self) -> X25519PublicKey:
        return X25519PublicKey.from_public_bytes(self.x25519)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.ed25519).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class SiteKey:
    """A site's secret: one seed, three keys derived from it (see the module docstring)."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != _SEED_LEN:
            raise ValueError("a site key seed is 32 bytes")

    @classmethod
    def generate(cls) -> SiteKey:
        return cls(os.urandom(_SEED_LEN))

    @cached_property
    def signing_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(_derive(self.seed, b"ed25519 signing"))

    @cached_property
    def agreement_key(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(_derive(self.seed, b"x25519 agreement"))

    @cached_property
    def donor_secret(self) -> bytes:
        """Keys the donor choice: secret, per site, independent of every public key."""
        return _derive(self.seed, b"donor choice v2")

    @cached_property
    def public(self) -> SitePublic:
        return SitePublic(_raw(self.signing_key.public_key()),
                          _raw(self.agreement_key.public_key()))

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message)


def generate_site_key(out_dir: str | os.PathLike[str], *, overwrite: bool = False
                      ) -> tuple[Path, Path]:
    """Create ``site.key`` (0600) and ``site.pub`` in ``out_dir``; return (pub, key) paths."""
    out = Path(out_dir)
    pub_path, key_path = out / SITE_PUBLIC_NAME, out / SITE_KEY_NAME
    if not overwrite:
        for p in (key_path, pub_path):
            if p.exists():
                raise KeyFileError(f"{p}: already exists; refusing to replace a site key")
    site = SiteKey.generate()
    pub = site.public
    head = bytes([_VERSION, _ALG_SITE]) + pub.ed25519 + pub.x25519
    write_bytes_atomic(key_path, armour(SITE_LABEL, pub.site_id, head + site.seed,
                                        {"Protection": "none (keep this file 0600)"}),
                       mode=0o600)
    os.chmod(key_path, 0o600)
    write_bytes_atomic(pub_path, armour(SITE_PUB_LABEL, pub.site_id, head, {}))
    os.chmod(pub_path, 0o644)
    return pub_path, key_path


def _body(path: Path, want: str) -> bytes:
    label, fields, body = dearmour(path, (SITE_LABEL, SITE_PUB_LABEL))
    if label != want:
        kind = "site SECRET key" if label == SITE_LABEL else "site public key"
        raise KeyFileError(f"{path}: is a {kind}; expected a "
                           f"{'site.key' if want == SITE_LABEL else 'site.pub'} file")
    size = 2 + _PUB_LEN + (_SEED_LEN if want == SITE_LABEL else 0)
    if len(body) != size or body[0] != _VERSION or body[1] != _ALG_SITE:
        raise KeyFileError(f"{path}: damaged or unsupported site key file")
    stated = fields.get("key-id")
    pub = SitePublic(body[2:34], body[34:66], path.name)
    if stated is not None and stated.lower() != pub.site_id.hex():
        raise KeyFileError(f"{path}: damaged key file (Key-Id line does not match the key)")
    return body


def load_site_key(path: str | os.PathLike[str]) -> SiteKey:
    """Read ``site.key``; its stored public half must match the seed (else: damaged)."""
    p = Path(path)
    body = _body(p, SITE_LABEL)
    site = SiteKey(body[2 + _PUB_LEN:])
    if site.public.ed25519 != body[2:34] or site.public.x25519 != body[34:66]:
        raise KeyFileError(f"{p}: damaged key file (secret and public halves do not match)")
    return site


def load_site_public(path: str | os.PathLike[str]) -> SitePublic:
    """Read ``site.pub`` (a ``site.key`` is accepted too: its public half is used)."""
    p = Path(path)
    label, _fields, _body_ = dearmour(p, (SITE_LABEL, SITE_PUB_LABEL))
    body = _body(p, label)
    return SitePublic(body[2:34], body[34:66], p.name)


def trusted_beside(private_key_path: str | os.PathLike[str]) -> list[SitePublic]:
    """Site public keys kept next to a recovery key: ``site.pub`` and ``trusted/*.pub``.

    Keeping them there is how a key holder says "payloads from these sites are genuine"
    without repeating ``--trust`` on every command."""
    folder = Path(private_key_path).parent
    paths = [folder / SITE_PUBLIC_NAME, *sorted((folder / "trusted").glob("*.pub"))]
    return [load_site_public(p) for p in paths if p.is_file()]
