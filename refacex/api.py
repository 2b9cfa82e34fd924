"""The Python API: ``anonymize_image(image, key) -> AnonymizeResult`` and
``recover_image(image, key) -> RecoverResult``, re-exported as ``refacex.anonymize_image``
and ``refacex.recover_image``. (Not ``refacex.anonymize`` / ``refacex.recover``: those names
are the subpackages, and a function of the same name would be overwritten by the module
as soon as the subpackage is imported.)

Keys may be given the way a user holds them: a path to ``refacex.pub`` / ``refacex.key``,
a loaded X25519 key, a list of public keys (several recipients), or a passphrase as
``bytes``. Images may be a path, encoded bytes, or (for anonymise) a BGR array.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from refacex.io.images import decode_image, read_image
from refacex.payload.keyring import OpenKeys, SealKeys


def seal_keys(key: Any, site: Any = None) -> SealKeys:
    """Public key(s) or a passphrase, and the site key -> what anonymising needs.

    ``site``: a ``SiteKey`` or the path of a ``site.key``; by default the ``site.key``
    next to the first public key file (``refacex keygen`` puts it there), which public-key
    mode needs: it signs the payloads and keys the donor choice."""
    from refacex.payload.keys import KeyFileError, load_public_key
    from refacex.payload.sitekeys import SITE_KEY_NAME, SiteKey, load_site_key

    if isinstance(key, SealKeys):
        return key
    if site is not None and not isinstance(site, SiteKey):
        site = load_site_key(site)
    if isinstance(key, bytes):
        return SealKeys(passphrase=key, site=site)
    items = key if isinstance(key, list | tuple) else [key]
    pubs = [k if isinstance(k, X25519PublicKey) else load_public_key(k) for k in items]
    if site is None:
        beside = [Path(k).parent / SITE_KEY_NAME for k in items
                  if isinstance(k, str | os.PathLike)][:1]
        if not beside or not beside[0].is_file():
            raise KeyFileError("public-key mode needs the site's signing key (site.key, made "
                               "by `refacex keygen`); give --site-key or keep it next to the "
                               ".pub")
        site = load_site_key(beside[0])
    return SealKeys(recipients=pubs, site=site)


def open_keys(key: Any, key_passphrase: bytes | None = None, trusted: Any = (),
              allow_unsigned: bool = False) -> OpenKeys:
    """Private key (object or path) or a passphrase -> what recovery needs.

    ``trusted``: site public keys (``SitePublic`` or ``site.pub`` paths) whose payloads are
    genuine; with a key *file*, the ``site.pub`` and ``trusted/*.pub`` next to it are
    trusted too. ``allow_unsigned`` accepts payloads no trusted site made."""
    from refacex.payload.keys import load_private_key
    from refacex.payload.sitekeys import SitePublic, load_site_public, trusted_beside

    if isinstance(key, OpenKeys):
        return key
    sites = [t if isinstance(t, SitePublic) else load_site_public(t) for t in trusted]
    if isinstance(key, bytes):
        return OpenKeys(passphrase=key, trusted=sites, allow_unsigned=allow_unsigned)
    if isinstance(key, X25519PrivateKey):
        return OpenKeys(private_key=key, trusted=sites, allow_unsigned=allow_unsigned)
    sites += trusted_beside(key)
    return OpenKeys(private_key=load_private_key(key, key_passphrase), trusted=sites,
                    allow_unsigned=allow_unsigned)


def _as_image(image: Any) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    if isinstance(image, bytes | bytearray):
        return decode_image(bytes(image))
    return read_image(image)


def anonymize_image(image: Any, key: Any, site: Any = None, **options: Any):
    """Anonymise ``image`` for ``key`` signed by ``site`` (see ``seal_keys``; options of
    ``refacex.pipeline.anonymize``: method, strength, tiers, fallback). Save with
    ``refacex.pipeline.save``."""
    from refacex.pipeline import anonymize as run

    return run(_as_image(image), seal_keys(key, site), **options)


def recover_image(image: Any, key: Any, key_passphrase: bytes | None = None,
                  trusted: Any = (), allow_unsigned: bool = False):
    """Recover the original of an anonymised file (path or bytes) with ``key`` (see
    ``open_keys`` for ``trusted`` and ``allow_unsigned``)."""
    from refacex.recover import recover as run

    keys = open_keys(key, key_passphrase, trusted, allow_unsigned)
    if isinstance(image, str | os.PathLike):
        return run(Path(image), keys)
    return run(bytes(image), keys)
