"""Tests for the lossless container tier (refacex.stego.vault).

The vault must give back the payload bit-exact, never change a decoded pixel, survive
being attached twice, and fail with a one-line PayloadError (never a crash or a hang)
when the file is damaged. Re-encoding is expected to lose it: that documents why the
in-pixel tier exists.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from refacex.errors import PayloadError, RefacexError, UnsupportedPayloadError
from refacex.stego import vault
from refacex.stego.vault import (
    HEADER_SIZE,
    JPEG_PIECE,
    PNG_PIECE,
    SIGNATURE,
    VaultDamagedError,
    VaultFormatError,
)

SIZES = [10, 100_000, 3_000_000]
FORMATS = [".png", ".jpg", ".webp"]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A small BGR image with both smooth areas and noise (so JPEG has real content)."""
    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:60, 0:80]
    base = np.stack([x * 3, y * 4, (x + y) * 2], axis=-1).astype(np.int16)
    noisy = base + rng.integers(-20, 21, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def encode(img: np.ndarray, suffix: str) -> bytes:
    ok, buf = cv2.imencode(suffix, img)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def files(image: np.ndarray) -> dict[str, bytes]:
    return {s: encode(image, s) for s in FORMATS}


@pytest.fixture(scope="module")
def payloads() -> dict[int, bytes]:
    rng = np.random.default_rng(99)
    return {n: rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in SIZES}


def pixels(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None, "OpenCV cannot decode the file"
    return img


def pil_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im)


def jpeg_markers(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, first content bytes) of the header segments, in file order, up to SOS."""
    out, pos = [], 2
    while data[pos + 1] != 0xDA:
        marker, length = data[pos + 1], struct.unpack_from(">H", data, pos + 2)[0]
        out.append((marker, data[pos + 4 : pos + 12]))
        pos += 2 + length
    return out


def jpeg_vault_spans(data: bytes) -> list[tuple[int, int]]:
    spans, pos = [], 2
    while data[pos + 1] != 0xDA:
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if data[pos + 1] == 0xEB and data[pos + 4 : pos + 12] == SIGNATURE:
            spans.append((pos, pos + 2 + length))
        pos += 2 + length
    return spans


def png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    out, pos = [], 8
    while pos < len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        out.append((ctype, pos, pos + 12 + length))
        pos += 12 + length
        if ctype == b"IEND":
            break
    return out


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_keeps_pixels(
    files: dict[str, bytes], payloads: dict[int, bytes], suffix: str, size: int
) -> None:
    original = files[suffix]
    payload = payloads[size]
    carried = vault.attach(original, payload)
    assert len(carried) > len(original) + size
    assert vault.extract(carried) == payload
    assert np.array_equal(pixels(carried), pixels(original))
    assert np.array_equal(pil_pixels(carried), pil_pixels(original))


def test_empty_payload_is_distinct_from_none(files: dict[str, bytes]) -> None:
    for data in files.values():
        assert vault.extract(vault.attach(data, b"")) == b""
        assert vault.extract(data) is None


def test_large_payload_is_split(files: dict[str, bytes], payloads: dict[int, bytes]) -> None:
    payload = payloads[3_000_000]
    jpg = vault.attach(files[".jpg"], payload)
    spans = jpeg_vault_spans(jpg)
    assert len(spans) == -(-len(payload) // JPEG_PIECE) == 46
    assert all(end - start - 2 <= 65535 for start, end in spans)  # length field fits
    png = vault.attach(files[".png"], payload)
    chunks = png_chunks(png)
    ours = [c for c in chunks if c[0] == b"rfXv"]
    assert len(ours) == -(-len(payload) // PNG_PIECE) == 3
    assert chunks[-1][0] == b"IEND" and chunks[-2][0] == b"rfXv"  # placed right before IEND


def test_payload_containing_signature(files: dict[str, bytes]) -> None:
    payload = (SIGNATURE + b"\xff\xd9\xff\xda" + b"IEND") * 20_000
    for data in files.values():
        assert vault.extract(vault.attach(data, payload)) == payload


@pytest.mark.parametrize("suffix", FORMATS)
def test_reattach_replaces(files: dict[str, bytes], suffix: str) -> None:
    first = vault.attach(files[suffix], os.urandom(200_000))
    second = vault.attach(first, b"second payload")
    assert vault.extract(second) == b"second payload"
    assert second == vault.attach(files[suffix], b"second payload")  # no leftovers
    assert vault.attach(second, b"second payload") == second  # idempotent


@pytest.mark.parametrize("suffix", FORMATS)
def test_strip(files: dict[str, bytes], suffix: str) -> None:
    original = files[suffix]
    carried = vault.attach(original, os.urandom(150_000))
    stripped = vault.strip(carried)
    assert vault.extract(stripped) is None
    assert np.array_equal(pixels(stripped), pixels(original))
    if suffix != ".webp":  # WebP keeps the VP8X header the vault needed; pixels are the same
        assert stripped == original
    assert vault.strip(original) == original
    assert vault.strip(b"BM not a container") == b"BM not a container"


def test_jpeg_keeps_exif_and_header_order(image: np.ndarray) -> None:
    pil = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x010F] = "refacex-test-camera"  # Make
    exif[0x0131] = "refacex-test-software"  # Software
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    original = buf.getvalue()

    carried = vault.attach(original, os.urandom(200_000))
    markers = jpeg_markers(carried)
    assert markers[0][0] == 0xE0 and markers[0][1].startswith(b"JFIF\0")  # APP0 still first
    assert markers[1][0] == 0xE1 and markers[1][1].startswith(b"Exif\0\0")  # then Exif
    assert markers[2] == (0xEB, SIGNATURE)  # vault right after them
    with Image.open(io.BytesIO(carried)) as im:
        got = im.getexif()
        assert got[0x010F] == "refacex-test-camera"
        assert got[0x0131] == "refacex-test-software"
    assert np.array_equal(pixels(carried), pixels(original))
    assert vault.strip(carried) == original


def test_webp_lossless_with_alpha(image: np.ndarray) -> None:
    bgra = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    bgra[::2, :, 3] = 128
    ok, buf = cv2.imencode(".webp", bgra, [cv2.IMWRITE_WEBP_QUALITY, 101])  # >100: lossless
    assert ok
    original = buf.tobytes()
    assert original[12:16] == b"VP8L"  # simple format: the vault must add VP8X
    carried = vault.attach(original, b"alpha payload")
    assert carried[12:16] == b"VP8X" and carried[20] & 0x10  # alpha flag carried over
    assert vault.extract(carried) == b"alpha payload"
    assert np.array_equal(pixels(carried), bgra)
    assert np.array_equal(pil_pixels(carried), pil_pixels(original))


# --------------------------------------------------------------------------- absence / formats


def test_plain_and_foreign_inputs_return_none(files: dict[str, bytes], image: np.ndarray) -> None:
    for data in files.values():
        assert vault.extract(data) is None
    assert vault.extract(encode(image, ".bmp")) is None
    for junk in (b"", b"\x89PNG", b"\xff\xd8\xff", b"RIFF\0\0\0\0WEBP", os.urandom(5000)):
        assert vault.extract(junk) is None


def test_unsupported_format_raises_clear_error(image: np.ndarray) -> None:
    with pytest.raises(VaultFormatError, match="no slot") as info:
        vault.attach(encode(image, ".bmp"), b"x")
    assert isinstance(info.value, ValueError) and isinstance(info.value, RefacexError)
    with pytest.raises(TypeError):
        vault.attach(encode(image, ".png"), "not bytes")  # type: ignore[arg-type]


def test_supports() -> None:
    for s in (".png", ".jpg", ".jpeg", ".JPG", "png", ".webp"):
        assert vault.supports(s)
    for s in (".bmp", ".tif", ".tiff", ".gif", ""):
        assert not vault.supports(s)


# --------------------------------------------------------------------------- damage


@pytest.fixture(scope="module")
def jpg_3mb(files: dict[str, bytes], payloads: dict[int, bytes]) -> bytes:
    return vault.attach(files[".jpg"], payloads[3_000_000])


def test_jpeg_missing_middle_segment(jpg_3mb: bytes) -> None:
    spans = jpeg_vault_spans(jpg_3mb)
    a, b = spans[len(spans) // 2]
    damaged = jpg_3mb[:a] + jpg_3mb[b:]
    with pytest.raises(PayloadError, match="damaged.*1 of 46 pieces missing"):
        vault.extract(damaged)
    # the image itself is still fine, and a fresh attach repairs it
    assert pixels(damaged) is not None
    assert vault.extract(vault.attach(damaged, b"new")) == b"new"


def test_jpeg_duplicated_and_reordered_segments(jpg_3mb: bytes) -> None:
    spans = jpeg_vault_spans(jpg_3mb)
    (a0, b0), (a1, b1) = spans[3], spans[4]
    dup = jpg_3mb[:b0] + jpg_3mb[a0:b0] + jpg_3mb[b0:]
    with pytest.raises(PayloadError, match="damaged.*duplicated piece"):
        vault.extract(dup)
    swapped = jpg_3mb[:a0] + jpg_3mb[a1:b1] + jpg_3mb[a0:b0] + jpg_3mb[b1:]
    with pytest.raises(PayloadError, match="damaged.*out of order"):
        vault.extract(swapped)


def test_jpeg_corrupted_piece_fails_checksum(files: dict[str, bytes]) -> None:
    carried = bytearray(vault.attach(files[".jpg"], os.urandom(1000)))
    start, _ = jpeg_vault_spans(bytes(carried))[0]
    carried[start + 4 + HEADER_SIZE + 500] ^= 0x01
    with pytest.raises(VaultDamagedError, match="checksum"):
        vault.extract(bytes(carried))


def test_unknown_version_is_reported(files: dict[str, bytes]) -> None:
    carried = bytearray(vault.attach(files[".jpg"], b"payload"))
    start, _ = jpeg_vault_spans(bytes(carried))[0]
    carried[start + 4 + len(SIGNATURE)] = 9  # version byte
    with pytest.raises(UnsupportedPayloadError, match="version 9"):
        vault.extract(bytes(carried))


def test_png_missing_chunk_and_bad_crc(files: dict[str, bytes], payloads: dict[int, bytes]) -> None:
    carried = vault.attach(files[".png"], payloads[3_000_000])
    ours = [c for c in png_chunks(carried) if c[0] == b"rfXv"]
    _, a, b = ours[1]
    with pytest.raises(PayloadError, match="damaged.*missing"):
        vault.extract(carried[:a] + carried[b:])
    flipped = bytearray(carried)
    flipped[a + 100] ^= 0xFF
    with pytest.raises(PayloadError, match="damaged.*CRC"):
        vault.extract(bytes(flipped))


@pytest.mark.parametrize("suffix", FORMATS)
def test_truncation_never_crashes(files: dict[str, bytes], suffix: str) -> None:
    payload = os.urandom(100_000)
    carried = vault.attach(files[suffix], payload)
    cuts = sorted({*range(0, 64), *np.linspace(0, len(carried) - 1, 300).astype(int).tolist()})
    outcomes = set()
    for cut in cuts:
        data = carried[:cut]
        try:
            got = vault.extract(data)
        except PayloadError as exc:
            assert "damaged" in str(exc) and "\n" not in str(exc)
            outcomes.add("damaged")
        else:
            assert got is None or got == payload  # JPEG: vault precedes the scan data
            outcomes.add("none" if got is None else "intact")
        try:
            vault.strip(data)
            vault.attach(data, b"x")
        except VaultFormatError:
            pass
    assert "damaged" in outcomes  # a cut through the vault is reported, not ignored


@pytest.mark.parametrize("suffix", FORMATS)
def test_random_corruption_never_crashes(files: dict[str, bytes], suffix: str) -> None:
    rng = np.random.default_rng(7)
    carried = vault.attach(files[suffix], os.urandom(70_000))
    for _ in range(300):
        data = bytearray(carried)
        for pos in rng.integers(0, len(data), rng.integers(1, 6)):
            data[pos] = int(rng.integers(0, 256))
        try:
            vault.extract(bytes(data))
            vault.strip(bytes(data))
        except (PayloadError, VaultFormatError):
            pass
    magics = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\xff\xff\xff\x7fWEBP"]
    for i in range(200):  # garbage behind each magic number
        magic = magics[i % 3]
        junk = magic + rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        try:
            vault.extract(junk)
            vault.strip(junk)
        except (PayloadError, VaultFormatError):
            pass


# --------------------------------------------------------------------------- re-encoding


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_reencoding_drops_the_vault(files: dict[str, bytes], suffix: str) -> None:
    """Metadata is lost on any re-encode: why the in-pixel tier (robust.py) exists."""
    carried = vault.attach(files[suffix], os.urandom(50_000))
    assert vault.extract(carried) is not None
    with Image.open(io.BytesIO(carried)) as im:
        buf = io.BytesIO()
        im.save(buf, "PNG" if suffix == ".png" else "JPEG", quality=95)
    assert vault.extract(buf.getvalue()) is None
    assert vault.extract(encode(pixels(carried), suffix)) is None


# --------------------------------------------------------------------------- sidecar


def test_sidecar_round_trip(tmp_path: Path) -> None:
    image_path = tmp_path / "photo.jpg"
    assert vault.sidecar_path(image_path) == tmp_path / "photo.jpg.refacex"
    assert vault.read_sidecar(image_path) is None
    payload = os.urandom(300_000)
    written = vault.write_sidecar(image_path, payload)
    assert written == tmp_path / "photo.jpg.refacex"
    assert vault.read_sidecar(image_path) == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg.refacex"]  # no temp left
    vault.write_sidecar(image_path, b"")
    assert vault.read_sidecar(image_path) == b""


def test_sidecar_damage(tmp_path: Path) -> None:
    image_path = tmp_path / "a.png"
    path = vault.write_sidecar(image_path, os.urandom(10_000))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(PayloadError, match="damaged"):
        vault.read_sidecar(image_path)
    path.write_bytes(b"something else entirely")
    with pytest.raises(PayloadError, match="not a refacex sidecar"):
        vault.read_sidecar(image_path)
