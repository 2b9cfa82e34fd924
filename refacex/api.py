"""The Python API: ``refacex.anonymize(image, key) -> AnonymizeResult`` and
``refacex.recover(image, key) -> RecoverResult``.

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


def seal_keys(key: Any) -> SealKeys:
    """Public key(s) or a passphrase -> what anonymising needs."""
    from refacex.payload.keys import load_public_key

    if isinstance(key, SealKeys):
        return key
    if isinstance(key, bytes):
        return SealKeys(passphrase=key)
    items = key if isinstance(key, list | tuple) else [key]
    pubs = [k if isinstance(k, X25519PublicKey) else load_public_key(k) for k in items]
    return SealKeys(recipients=pubs)


def open_keys(key: Any, key_passphrase: bytes | None = None) -> OpenKeys:
    """Private key (object or path) or a passphrase -> what recovery needs."""
    from refacex.payload.keys import load_private_key

    if isinstance(key, OpenKeys):
        return key
    if isinstance(key, bytes):
        return OpenKeys(passphrase=key)
    if isinstance(key, X25519PrivateKey):
        return OpenKeys(private_key=key)
    return OpenKeys(private_key=load_private_key(key, key_passphrase))


def _as_image(image: Any) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    if isinstance(image, bytes | bytearray):
        return decode_image(bytes(image))
    return read_image(image)


def anonymize(image: Any, key: Any, **options: Any):
    """Anonymise ``image`` for ``key`` (see ``refacex.pipeline.anonymize`` for options:
    method, strength, tiers, fallback). Save with ``refacex.pipeline.save``."""
    from refacex.pipeline import anonymize as run

    return run(_as_image(image), seal_keys(key), **options)


def recover(image: Any, key: Any, key_passphrase: bytes | None = None):
    """Recover the original of an anonymised file (path or bytes) with ``key``."""
    from refacex.recover import recover as run

    if isinstance(image, str | os.PathLike):
        return run(Path(image), open_keys(key, key_passphrase))
    return run(bytes(image), open_keys(key, key_passphrase))
