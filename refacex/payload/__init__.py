"""Recovery payloads: keys, authenticated encryption and the versioned binary format.

``format`` says *what* is stored (how to undo an anonymisation), ``crypto`` *how* it is
sealed, ``keys`` where the keys live. Byte layouts: docs/payload-format.md.
"""

from refacex.payload.crypto import describe, key_id, open_sealed, overhead, seal
from refacex.payload.format import (
    CODECS,
    FaceRecord,
    Payload,
    decode_payload,
    encode_payload,
    inspect_payload,
    register_codec,
)
from refacex.payload.keys import (
    generate_keypair,
    load_private_key,
    load_public_key,
    read_passphrase_file,
)

__all__ = [
    "CODECS",
    "FaceRecord",
    "Payload",
    "decode_payload",
    "describe",
    "encode_payload",
    "generate_keypair",
    "inspect_payload",
    "key_id",
    "load_private_key",
    "load_public_key",
    "open_sealed",
    "overhead",
    "read_passphrase_file",
    "register_codec",
    "seal",
]
