"""What a run needs to seal or open payloads, and the keyed donor secret.

Anonymising needs only ``SealKeys``: public keys (or a passphrase) to seal for, and the
site's own key (``sitekeys.SiteKey``) to sign with. A camera site can thus anonymise
without being able to de-anonymise. Recovery needs ``OpenKeys``: the private key (or the
passphrase) and the site public keys it trusts.

The donor key steers *which* virtual identity replaces a face (HMAC of it and the face's
identity embedding), so the same person under the same site key gets the same donor
across images and runs. It is secret: in public-key mode it comes from the site key (never
from a public key, so holding ``refacex.pub`` does not let anyone predict donors and link
photos); in passphrase mode from the passphrase through scrypt with a fixed salt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from refacex.payload.sitekeys import SiteKey, SitePublic


@dataclass
class SealKeys:
    recipients: list[X25519PublicKey] = field(default_factory=list)
    passphrase: bytes | None = None
    #: Signs the payloads and keys the donor choice; required with public keys.
    site: SiteKey | None = None

    def __post_init__(self) -> None:
        if bool(self.recipients) == bool(self.passphrase):
            raise ValueError("give either recipients (public keys) or a passphrase")
        if self.recipients and self.site is None:
            raise ValueError("public-key mode needs a site key (refacex keygen makes one): "
                             "without it payloads could not be authenticated")

    def crypto_kwargs(self) -> dict:
        if self.recipients:
            return {"recipients": list(self.recipients), "site": self.site}
        return {"passphrase": self.passphrase, "site": self.site}

    @property
    def donor_key(self) -> bytes:
        if self.site is not None:
            return self.site.donor_secret
        assert self.passphrase is not None
        return _passphrase_donor_key(self.passphrase)


@dataclass
class OpenKeys:
    private_key: X25519PrivateKey | None = None
    passphrase: bytes | None = None
    #: Sites whose payloads are genuine; others are refused (public-key mode).
    trusted: list[SitePublic] = field(default_factory=list)
    #: Accept payloads no trusted site signed (legacy files): restores what a forger wrote.
    allow_unsigned: bool = False

    def __post_init__(self) -> None:
        if (self.private_key is None) == (self.passphrase is None):
            raise ValueError("give either a private key or a passphrase")

    def crypto_kwargs(self) -> dict:
        if self.private_key is not None:
            return {"private_key": self.private_key, "trusted": list(self.trusted)}
        return {"passphrase": self.passphrase, "trusted": list(self.trusted)}


@cache
def _passphrase_donor_key(passphrase: bytes) -> bytes:
    return Scrypt(salt=b"refacex donor v1", length=32, n=2**15, r=8, p=1).derive(passphrase)
