"""Lossless container tier: carry the encrypted recovery payload in the image *file*.

Why a container tier at all: the recovery payload (encrypted original face crops, tens
of MB at most) must come back bit-exact, which in-pixel watermarking cannot promise at
that size. Every format we write has a slot for opaque application data that decoders
skip, so the payload rides there and the pixels are never touched:

* PNG  — private, ancillary, safe-to-copy chunks of type ``rfXv`` placed before ``IEND``.
* JPEG — ``APP11`` segments placed right after SOI and the leading APP0 (JFIF) / APP1
  (Exif, XMP) run, so those keep the position their specs require.
* WebP — ``rfXv`` chunks at the end of an extended (``VP8X``) RIFF container.

The weakness is equally clear: anything that re-encodes the image or strips metadata
(social networks, ``PIL.Image.save``, ``cv2.imwrite``) drops the vault. That is why a
second, in-pixel tier exists (``refacex.stego.robust``); this module is only the exact,
high-capacity one. A sidecar file (``photo.jpg.refacex``) is the fallback for formats
without a slot.

Every piece of the payload, whatever the container, is one *record*::

    offset size  field
    0      8     signature  b"REFACEX\\0"
    8      1     version    1
    9      2     seq        0-based index of this piece (big-endian)
    11     2     total      number of pieces (big-endian, >= 1)
    13     4     length     length of the whole payload in bytes (big-endian)
    17     4     crc32      zlib CRC-32 of the whole payload (big-endian)
    21     ...   piece      payload[seq * piece_size : (seq + 1) * piece_size]

Records must appear in the file in ``seq`` order; a missing, duplicated, reordered or
inconsistent record, or a CRC mismatch, is reported as a damaged vault
(``VaultDamagedError``, a ``PayloadError``) rather than returning wrong bytes. The CRC only
detects accidents; authenticity is the job of the payload's own encryption layer.

Parsing is bounds-checked and every loop advances by at least one header, so arbitrary
input (garbage, truncation) ends in ``None`` or a one-line error, never a hang or an
``IndexError``.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from refacex.errors import PayloadError, RefacexError, UnsupportedPayloadError
from refacex.io.images import write_bytes_atomic

__all__ = [
    "HEADER_SIZE",
    "JPEG_PIECE",
    "PNG_PIECE",
    "SIGNATURE",
    "VaultDamagedError",
    "VaultFormatError",
    "attach",
    "extract",
    "read_sidecar",
    "sidecar_path",
    "strip",
    "supports",
    "write_sidecar",
]

SIGNATURE = b"REFACEX\0"
VERSION = 1
_HEADER = struct.Struct(">8sBHHII")
HEADER_SIZE = _HEADER.size  # 21
MAX_RECORDS = 0xFFFF
MAX_PAYLOAD = 0xFFFFFFFF

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: r = ancillary, f = private, X = reserved bit clear, v = safe to copy.
PNG_CHUNK_TYPE = b"rfXv"
#: Payload bytes per PNG chunk. Readers buffer whole chunks, and some cap their size
#: (libpng's user_chunk_malloc_max, 8,000,000 bytes by default, applies to chunks it
#: keeps); 1 MiB pieces stay far below any such cap for 33 bytes of overhead per MiB.
PNG_PIECE = 1 << 20

JPEG_APP11 = 0xEB
#: A JPEG segment's length field is 16 bits and counts itself: at most 65533 content bytes.
JPEG_MAX_CONTENT = 65533
JPEG_PIECE = JPEG_MAX_CONTENT - HEADER_SIZE  # 65512

WEBP_CHUNK_TYPE = b"rfXv"
WEBP_PIECE = 1 << 20

_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class VaultFormatError(RefacexError, ValueError):
    """The file cannot hold a vault: unsupported format, or a container too broken to edit.

    Also a ``ValueError`` so that library callers can treat it as bad input.
    """


class VaultDamagedError(PayloadError):
    """The file carries a refacex vault, but it is incomplete or corrupt."""


# ----------------------------------------------------------------------------- records


def _make_records(payload: bytes, piece: int) -> list[bytes]:
    """Split ``payload`` into self-describing records of at most ``piece`` payload bytes."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise VaultFormatError(f"payload too large for a vault ({len(payload)} bytes)")
    total = max(1, -(-len(payload) // piece))
    if total > MAX_RECORDS:
        raise VaultFormatError(
            f"payload too large for this container ({len(payload)} bytes in {total} pieces; "
            f"at most {MAX_RECORDS})"
        )
    crc = zlib.crc32(payload)
    return [
        _HEADER.pack(SIGNATURE, VERSION, i, total, len(payload), crc)
        + payload[i * piece : (i + 1) * piece]
        for i in range(total)
    ]


def _damaged(where: str, why: str) -> VaultDamagedError:
    return VaultDamagedError(f"refacex vault in this {where} is damaged: {why}")


def _join_records(records: list[bytes], where: str) -> bytes:
    """Check that ``records`` form one complete vault in order, and return its payload."""
    headers = []
    for i, rec in enumerate(records):
        if len(rec) < HEADER_SIZE or not rec.startswith(SIGNATURE):
            raise _damaged(where, f"piece {i + 1} of {len(records)} has no valid header")
        headers.append(_HEADER.unpack_from(rec))
    for _sig, version, *_ in headers:
        if version != VERSION:
            raise UnsupportedPayloadError(
                f"refacex vault format version {version} is not supported by this release "
                f"(reads version {VERSION})"
            )
    _, _, _, total, length, crc = headers[0]
    if total == 0:
        raise _damaged(where, "piece count is zero")
    for _, _, seq, t, n, c in headers:
        if (t, n, c) != (total, length, crc):
            raise _damaged(where, f"pieces disagree on the payload (piece {seq})")
        if seq >= total:
            raise _damaged(where, f"piece number {seq} out of range (total {total})")
    seqs = [h[2] for h in headers]
    seen: set[int] = set()
    dups: set[int] = set()
    for s in seqs:
        (dups if s in seen else seen).add(s)
    if dups:
        raise _damaged(where, f"duplicated piece(s) {_fmt_ids(sorted(dups))}")
    missing = sorted(set(range(total)) - seen)
    if missing:
        raise _damaged(where, f"{len(missing)} of {total} pieces missing ({_fmt_ids(missing)})")
    if seqs != list(range(total)):
        raise _damaged(where, "pieces are out of order")
    payload = b"".join(rec[HEADER_SIZE:] for rec in records)
    if len(payload) != length:
        raise _damaged(where, f"payload is {len(payload)} bytes, header says {length}")
    if zlib.crc32(payload) != crc:
        raise _damaged(where, "payload checksum mismatch")
    return payload


def _fmt_ids(ids: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (", ..." if len(ids) > limit else "")


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Part:
    """One chunk/segment: ``data[start:end]`` is its whole encoding (copied verbatim)."""

    kind: bytes | int  # PNG/WebP chunk type, or JPEG marker byte
    start: int
    end: int
    body_start: int
    body_end: int  # clipped to the data when ``complete`` is False
    complete: bool = True


def _format(data: bytes) -> str | None:
    if data.startswith(PNG_MAGIC):
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _parse_png(data: bytes) -> tuple[list[_Part], str | None]:
    """Chunks from IHDR through IEND, and an error message if the structure breaks first."""
    parts: list[_Part] = []
    n = len(data)
    pos = len(PNG_MAGIC)
    while True:
        if pos + 8 > n:
            return parts, f"PNG truncated at byte {pos} (no IEND chunk)"
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if length > 0x7FFFFFFF:
            return parts, f"PNG chunk at byte {pos} has an invalid length"
        end = pos + 12 + length
        if end > n:
            parts.append(_Part(ctype, pos, n, pos + 8, min(n, pos + 8 + length), False))
            return parts, f"PNG truncated inside chunk {ctype!r} at byte {pos}"
        parts.append(_Part(ctype, pos, end, pos + 8, pos + 8 + length))
        pos = end
        if ctype == b"IEND":
            return parts, None


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(ctype))
    return struct.pack(">I4s", len(body), ctype) + body + struct.pack(">I", crc)


_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def _parse_jpeg(data: bytes) -> tuple[list[_Part], int, str | None]:
    """Header segments between SOI and the first SOS, and the SOS offset (or an error).

    Only the header is parsed: the vault is always written there, and everything from
    SOS on (entropy-coded data, later scans, EOI, trailers such as MPF images) is copied
    verbatim.
    """
    parts: list[_Part] = []
    n = len(data)
    pos = 2
    while True:
        start = pos
        if pos >= n or data[pos] != 0xFF:
            return parts, -1, f"JPEG header broken at byte {pos} (expected a marker)"
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return parts, -1, "JPEG truncated inside the header"
        marker = data[pos]
        pos += 1
        if marker == 0xDA:
            return parts, start, None
        if marker in _JPEG_STANDALONE:
            parts.append(_Part(marker, start, pos, pos, pos))
            continue
        if marker in (0x00, 0xD8, 0xD9):
            return parts, -1, f"JPEG header has unexpected marker 0xFF{marker:02X} at byte {start}"
        if pos + 2 > n:
            return parts, -1, "JPEG truncated inside the header"
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            return parts, -1, f"JPEG segment at byte {start} has an invalid length"
        end = pos + length
        if end > n:
            parts.append(_Part(marker, start, n, pos + 2, n, False))
            return parts, -1, f"JPEG truncated inside segment 0xFF{marker:02X} at byte {start}"
        parts.append(_Part(marker, start, end, pos + 2, end))
        pos = end


def _is_jpeg_vault(data: bytes, p: _Part) -> bool:
    return p.kind == JPEG_APP11 and data[p.body_start : p.body_start + 8] == SIGNATURE


def _jpeg_segment(content: bytes) -> bytes:
    return bytes((0xFF, JPEG_APP11)) + struct.pack(">H", len(content) + 2) + content


def _parse_webp(data: bytes) -> tuple[list[_Part], int, str | None]:
    """Chunks inside the RIFF container, and the RIFF end offset (trailing bytes are kept)."""
    parts: list[_Part] = []
    n = len(data)
    riff_end = 8 + struct.unpack_from("<I", data, 4)[0]
    limit = min(riff_end, n)  # a truncated file is still walked, to tell "damaged" from "none"
    pos = 12
    while pos < limit:
        if pos + 8 > limit:
            return parts, riff_end, f"WebP chunk header truncated at byte {pos}"
        ctype, size = struct.unpack_from("<4sI", data, pos)
        end = pos + 8 + size + (size & 1)
        if end > limit:
            parts.append(_Part(ctype, pos, limit, pos + 8, min(limit, pos + 8 + size), False))
            return parts, riff_end, f"WebP truncated inside chunk {ctype!r} at byte {pos}"
        parts.append(_Part(ctype, pos, end, pos + 8, pos + 8 + size))
        pos = end
    if riff_end > n:
        return parts, riff_end, f"WebP truncated (RIFF says {riff_end} bytes, file has {n})"
    if not parts:
        return parts, riff_end, "WebP has no image chunk"
    return parts, riff_end, None


def _webp_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack("<4sI", ctype, len(body)) + body + (b"\0" if len(body) & 1 else b"")


def _webp_vp8x(data: bytes, first: _Part) -> bytes:
    """A VP8X header for a simple (VP8/VP8L-only) WebP: extra chunks need the extended format."""
    body = data[first.body_start : first.body_end]
    alpha = False
    if first.kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        w = struct.unpack_from("<H", body, 6)[0] & 0x3FFF
        h = struct.unpack_from("<H", body, 8)[0] & 0x3FFF
    elif first.kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = struct.unpack_from("<I", body, 1)[0]
        w, h = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        alpha = bool((bits >> 28) & 1)
    else:
        raise VaultFormatError("cannot attach to this WebP: unrecognised image chunk")
    if w == 0 or h == 0:
        raise VaultFormatError("cannot attach to this WebP: zero image size")
    flags = 0x10 if alpha else 0
    vp8x = bytes((flags, 0, 0, 0)) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return _webp_chunk(b"VP8X", vp8x)


# ----------------------------------------------------------------------------- rewrite


def _rewrite(data: bytes, payload: bytes | None) -> bytes:
    """Return ``data`` without any refacex vault, plus a new one holding ``payload``."""
    fmt = _format(data)
    if fmt == "png":
        parts, err = _parse_png(data)
        if err:
            raise VaultFormatError(f"cannot edit this PNG: {err}")
        iend = parts[-1]
        out = [data[: len(PNG_MAGIC)]]
        out += [data[p.start : p.end] for p in parts[:-1] if p.kind != PNG_CHUNK_TYPE]
        if payload is not None:
            out += [_png_chunk(PNG_CHUNK_TYPE, r) for r in _make_records(payload, PNG_PIECE)]
        out.append(data[iend.start :])  # IEND and any trailing bytes, verbatim
        return b"".join(out)
    if fmt == "jpeg":
        parts, sos, err = _parse_jpeg(data)
        if err:
            raise VaultFormatError(f"cannot edit this JPEG: {err}")
        keep = [p for p in parts if not _is_jpeg_vault(data, p)]
        lead = 0
        while lead < len(keep) and keep[lead].kind in (0xE0, 0xE1):
            lead += 1
        out = [data[:2]]
        out += [data[p.start : p.end] for p in keep[:lead]]
        if payload is not None:
            out += [_jpeg_segment(r) for r in _make_records(payload, JPEG_PIECE)]
        out += [data[p.start : p.end] for p in keep[lead:]]
        out.append(data[sos:])
        return b"".join(out)
    if fmt == "webp":
        parts, riff_end, err = _parse_webp(data)
        if err:
            raise VaultFormatError(f"cannot edit this WebP: {err}")
        keep = [data[p.start : p.end] for p in parts if p.kind != WEBP_CHUNK_TYPE]
        if payload is not None:
            if parts[0].kind != b"VP8X":
                keep.insert(0, _webp_vp8x(data, parts[0]))
            keep += [_webp_chunk(WEBP_CHUNK_TYPE, r) for r in _make_records(payload, WEBP_PIECE)]
        size = 4 + sum(len(c) for c in keep)
        if size > 0xFFFFFFFF:
            raise VaultFormatError("payload too large for a WebP file (RIFF limit 4 GiB)")
        return b"".join([b"RIFF", struct.pack("<I", size), b"WEBP", *keep, data[riff_end:]])
    raise VaultFormatError(
        "this file format has no slot for a refacex vault (supported: PNG, JPEG, WebP); "
        "use a sidecar file instead"
    )


# ----------------------------------------------------------------------------- public API


def supports(suffix: str) -> bool:
    """Whether files with this suffix ('.png', 'jpg', ...) can carry a vault."""
    s = suffix.lower()
    return (s if s.startswith(".") else "." + s) in _SUFFIXES


def attach(file_bytes: bytes, payload: bytes) -> bytes:
    """Return the same image file carrying ``payload``; any earlier refacex vault is replaced.

    Only container metadata is added: image data bytes are copied verbatim, so decoded
    pixels are identical. The format is recognised from the bytes, not a file name.
    Raises ``VaultFormatError`` (a ``ValueError``) for formats without a slot or a
    container too broken to edit safely.
    """
    return _rewrite(bytes(file_bytes), payload)


def strip(file_bytes: bytes) -> bytes:
    """Return the file without any refacex vault (unchanged if it has none).

    A format that cannot hold a vault is returned as is; a broken PNG/JPEG/WebP container
    raises ``VaultFormatError``.
    """
    data = bytes(file_bytes)
    if _format(data) is None:
        return data
    return _rewrite(data, None)


def extract(file_bytes: bytes) -> bytes | None:
    """The payload carried by this file, or ``None`` if it carries none.

    ``None`` also covers formats without a slot, garbage, and files broken before any
    vault piece appears (nothing of a vault can be read there). If vault pieces are
    present but incomplete or corrupt, ``VaultDamagedError`` (a ``PayloadError``) says so:
    returning partial bytes would only fail later, less clearly, at decryption.
    """
    data = bytes(file_bytes)
    fmt = _format(data)
    if fmt == "png":
        parts, err = _parse_png(data)
        ours = [p for p in parts if p.kind == PNG_CHUNK_TYPE]
        if not ours:
            return None
        if err:
            raise _damaged("PNG", err)
        for i, p in enumerate(ours):
            stored = struct.unpack_from(">I", data, p.body_end)[0]
            if zlib.crc32(data[p.body_start : p.body_end], zlib.crc32(PNG_CHUNK_TYPE)) != stored:
                raise _damaged("PNG", f"CRC mismatch in chunk {i + 1} of {len(ours)}")
        return _join_records([data[p.body_start : p.body_end] for p in ours], "PNG")
    if fmt == "jpeg":
        parts, _sos, err = _parse_jpeg(data)
        ours = [p for p in parts if _is_jpeg_vault(data, p)]
        if not ours:
            return None
        if err:
            raise _damaged("JPEG", err)
        return _join_records([data[p.body_start : p.body_end] for p in ours], "JPEG")
    if fmt == "webp":
        parts, _end, err = _parse_webp(data)
        ours = [p for p in parts if p.kind == WEBP_CHUNK_TYPE]
        if not ours:
            return None
        if err:
            raise _damaged("WebP", err)
        return _join_records([data[p.body_start : p.body_end] for p in ours], "WebP")
    return None


# ----------------------------------------------------------------------------- sidecar


def sidecar_path(image_path: str | os.PathLike[str]) -> Path:
    """``photo.jpg`` -> ``photo.jpg.refacex``: the full name is kept so that ``a.jpg`` and
    ``a.png`` in one folder get distinct sidecars."""
    p = Path(image_path)
    return p.with_name(p.name + ".refacex")


def write_sidecar(image_path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` next to the image, atomically; returns the sidecar's path.

    The file is one vault record (the 21-byte header above, total = 1, then the payload),
    so a truncated or foreign sidecar is detected instead of being handed to decryption.
    """
    path = sidecar_path(image_path)
    (record,) = _make_records(payload, max(1, len(payload)))
    write_bytes_atomic(path, record)
    return path


def read_sidecar(image_path: str | os.PathLike[str]) -> bytes | None:
    """The payload in the image's sidecar, ``None`` if there is no sidecar.

    Raises ``VaultDamagedError`` if the sidecar exists but is not an intact record.
    """
    path = sidecar_path(image_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise VaultDamagedError(f"{path}: is a directory, not a refacex sidecar") from None
    except OSError as exc:
        raise VaultDamagedError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data.startswith(SIGNATURE):
        raise VaultDamagedError(f"{path}: not a refacex sidecar (bad signature)")
    return _join_records([data], f"sidecar {path.name}")
