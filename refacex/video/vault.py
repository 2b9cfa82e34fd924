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

A video anonymised in parts (``--engine ray`` cuts long videos at keyframes,
``refacex/io/videoparts.py``) has one vault per part, each as above for its own frames
(its ``first`` counts from the part's first frame). Joined, they are one sidecar of
version 2: the parts' records in frame order, each part ended by an empty record
(length 0). Recovery checks each part as a whole and that the parts' frame counts add
up to the video's; a part moved, dropped or repeated fails the frame bindings.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from refacex.errors import NoPayloadError, PayloadError

MAGIC = b"REFACEXV"
VERSION = 1
#: A sidecar of several parts' vaults (``join``); readers accept both.
VERSION_PARTS = 2
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
    """The sealed payloads of a single-part sidecar, in order; ``NoPayloadError`` if it
    is missing."""
    parts = read_parts(path)
    if len(parts) != 1:
        raise VideoVaultError(f"{path}: a video vault of {len(parts)} parts")
    return parts[0]


def read_parts(path: str | os.PathLike[str]) -> list[list[bytes]]:
    """The sealed payloads of a sidecar, per part (one part unless ``join`` made it)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise NoPayloadError(f"{p}: no video vault (the sidecar .refacex next to the video "
                             "is missing)") from None
    except OSError as exc:
        raise VideoVaultError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if not data.startswith(MAGIC) or len(data) < len(_HEADER):
        raise VideoVaultError(f"{p}: not a refacex video vault (bad signature)")
    version = data[len(MAGIC)]
    if version not in (VERSION, VERSION_PARTS):
        raise VideoVaultError(f"{p}: video vault version {version} is not "
                              f"supported (this refacex reads {VERSION} and {VERSION_PARTS})")
    pos, parts, out = len(_HEADER), [], []
    while pos < len(data):
        if pos + _LEN.size > len(data):
            raise VideoVaultError(f"{p}: truncated video vault")
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        if n > MAX_RECORD or pos + n > len(data):
            raise VideoVaultError(f"{p}: truncated or damaged video vault")
        if n == 0 and version == VERSION_PARTS:
            if not out:
                raise VideoVaultError(f"{p}: damaged video vault (an empty part)")
            parts.append(out)
            out = []
        else:
            out.append(data[pos:pos + n])
        pos += n
    if version == VERSION:
        parts.append(out)
    elif out:
        raise VideoVaultError(f"{p}: truncated video vault (a part without its end)")
    if not parts or not parts[0]:
        raise VideoVaultError(f"{p}: empty video vault")
    return parts


def join(sidecars: list[Path], dest: Path) -> None:
    """Write the vaults of a video's parts, in frame order, as one sidecar ``dest``
    (version 2; nothing is opened or re-sealed, so no key is needed)."""
    with open(dest, "wb") as fh:
        fh.write(MAGIC + bytes([VERSION_PARTS, 0]))
        for side in sidecars:
            for blob in read_records(side):
                fh.write(record(blob))
            fh.write(_LEN.pack(0))
        fh.flush()
        os.fsync(fh.fileno())
