"""The video vault: a sidecar ``OUT.mp4.refacex`` of sealed payloads, one per chunk.

Why not one payload: a video's original face regions run to megabytes per minute, a
single payload would have to sit in memory until the end, and every payload sealed with
a passphrase costs one scrypt run (~0.1 s), so one per frame would cost more than the
anonymisation. So frames are grouped in chunks (``CHUNK_FRAMES`` frames or
``CHUNK_BYTES`` of stored pixels, whichever comes first), each sealed with the ordinary
image payload format (``refacex.payload.format``, tier "vault", same keys, AEAD and site
signature as an image's vault), and written to the sidecar as they are made.

Container (byte layout also in docs/payload-format.md)::

    "REFACEXV" | version u8 (1) | reserved u8 (0)
    then records: length u32 big-endian | one sealed RFX payload
    the last record is the index payload

Chunk payload: ``image_size`` = the frame size; ``faces`` = the original pixels (PNG) and
geometry of every edited region of its frames; ``extra``: ``kind`` = "video-chunk",
``video`` (16 random bytes naming this run's output), ``seq`` (0, 1, ...), ``first`` and
``count`` (its frames), ``frame_of`` (u32 little-endian per face record: its frame).

Index payload (sealed last, after the output was encoded and decoded back): ``extra``:
``kind`` = "video-index", ``video``, ``chunks``, ``frames``, ``bindings`` (16 bytes per
frame: ``image_binding`` of the decoded output frame's luma plane over that frame's edit
regions). Recovery checks that every chunk is there, in order, of this video, and that
every decoded frame matches its binding before it pastes anything: a sidecar moved to
another video, re-ordered, truncated or edited is refused as a whole.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from refacex.errors import NoPayloadError, PayloadError

MAGIC = b"REFACEXV"
VERSION = 1
_HEADER = MAGIC + bytes([VERSION, 0])
_LEN = struct.Struct(">I")
CHUNK_FRAMES = 120
CHUNK_BYTES = 16 << 20
#: A record may not claim more than this (a forged length must not allocate gigabytes).
MAX_RECORD = 1 << 30


class VideoVaultError(PayloadError):
    """The sidecar is not an intact video vault (truncated, foreign, damaged)."""


def sidecar_path(video_path: str | os.PathLike[str]) -> Path:
    """``clip.mp4`` -> ``clip.mp4.refacex`` (like an image's sidecar)."""
    p = Path(video_path)
    return p.with_name(p.name + ".refacex")


def header() -> bytes:
    return _HEADER


def record(blob: bytes) -> bytes:
    return _LEN.pack(len(blob)) + blob


def read_records(path: str | os.PathLike[str]) -> list[bytes]:
    """The sealed payloads in a sidecar, in order; ``NoPayloadError`` if it is missing."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise NoPayloadError(f"{p}: no video vault (the sidecar .refacex next to the video "
                             "is missing)") from None
    except OSError as exc:
        raise VideoVaultError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if not data.startswith(MAGIC):
        raise VideoVaultError(f"{p}: not a refacex video vault (bad signature)")
    if data[len(MAGIC)] != VERSION:
        raise VideoVaultError(f"{p}: video vault version {data[len(MAGIC)]} is not "
                              f"supported (this refacex reads {VERSION})")
    pos, out = len(_HEADER), []
    while pos < len(data):
        if pos + _LEN.size > len(data):
            raise VideoVaultError(f"{p}: truncated video vault")
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        if n > MAX_RECORD or pos + n > len(data):
            raise VideoVaultError(f"{p}: truncated or damaged video vault")
        out.append(data[pos:pos + n])
        pos += n
    if len(out) < 1:
        raise VideoVaultError(f"{p}: empty video vault")
    return out
