"""What a run needs to seal or open payloads, and the keyed donor secret derived from it.

Anonymising needs only ``SealKeys`` (public keys or a passphrase): a camera site can
anonymise without being able to de-anonymise. Recovery needs ``OpenKeys`` (the private
key, or the passphrase).

The donor key steers *which* virtual identity replaces a face (HMAC of it and the
face's identity embedding). It is derived from the same key material so the same person
under the same key gets the same donor across images and runs: from the first
recipient's public key in public-key mode (so anyone holding that ``refacex.pub`` can
predict the donor mapping, but not recover a face), or from the passphrase through
scrypt with a fixed, documented salt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from refacex.payload.crypto import raw_public

DEFAULT_DONOR_KEY = b"refacex: public default donor key (not secret)"


@dataclass
class SealKeys:
    recipients: list[X25519PublicKey] = field(default_factory=list)
    passphrase: bytes | None = None

    def __post_init__(self) -> None:
        if bool(self.recipients) == bool(self.passphrase):
            raise ValueError("give either recipients (public keys) or a passphrase")

    def crypto_kwargs(self) -> dict:
        if self.recipients:
            return {"recipients": list(self.recipients)}
        return {"passphrase": self.passphrase}

    @property
    def donor_key(self) -> bytes:
        if self.recipients:
            return HKDF(hashes.SHA256(), 32, salt=None, info=b"refacex donor v1").derive(
                raw_public(self.recipients[0]))
        return _passphrase_donor_key(self.passphrase)


@dataclass
class OpenKeys:
    private_key: X25519PrivateKey | None = None
    passphrase: bytes | None = None

    def __post_init__(self) -> None:
        if (self.private_key is None) == (self.passphrase is None):
            raise ValueError("give either a private key or a passphrase")

    def crypto_kwargs(self) -> dict:
        if self.private_key is not None:
            return {"private_key": self.private_key}
        return {"passphrase": self.passphrase}


@cache
def _passphrase_donor_key(passphrase: bytes) -> bytes:
    return Scrypt(salt=b"refacex donor v1", length=32, n=2**15, r=8, p=1).derive(passphrase)
