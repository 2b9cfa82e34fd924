"""Image reading and atomic writing.

All pixels inside refacex are ``uint8`` BGR arrays of shape (H, W, 3) — OpenCV's
convention, because every model we run goes through OpenCV or dlib.

Reading validates up front (existence, size, decodability, pixel count) so that a bad
file produces one clear ``ImageError`` instead of a crash deep inside a model. Writing
goes to a temporary file in the destination folder and is renamed into place, so an
interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from refacex.errors import ImageError, OutputError

#: Images above this many pixels are refused (a 12000x12000 photo needs 432 MB as BGR).
MAX_PIXELS = int(os.environ.get("REFACEX_MAX_PIXELS", 100_000_000))

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

# PIL's own guard against decompression bombs; ours is explicit and checked first.
Image.MAX_IMAGE_PIXELS = None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as a BGR uint8 array, or raise ``ImageError`` saying why."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if p.is_dir():
        raise ImageError(f"{p}: is a directory, not an image")
    size = p.stat().st_size
    if size == 0:
        raise ImageError(f"{p}: empty file (0 bytes)")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(
                    f"{p}: image too large ({w}x{h} = {w * h / 1e6:.0f} MP; "
                    f"limit {MAX_PIXELS / 1e6:.0f} MP, set REFACEX_MAX_PIXELS to raise it)"
                )
            im.verify()  # structural check; catches most truncations before decoding
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image (format not recognised)") from None
    except Exception as exc:  # PIL raises many types for corrupt files
        raise ImageError(f"{p}: corrupt or truncated image ({exc})") from None
    data = np.fromfile(p, dtype=np.uint8)
    return decode_image(data, name=str(p))


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to BGR uint8, rejecting truncated data."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
    if buf.size == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    # PIL detects truncation (OpenCV silently decodes a truncated JPEG as grey rows).
    try:
        import io

        with Image.open(io.BytesIO(buf.tobytes())) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{name}: image too large ({w}x{h})")
            im.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (format not recognised)") from None
    except Exception as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"{name}: could not decode image")
    return img


def encode_image(img: np.ndarray, suffix: str, quality: int = 95) -> bytes:
    """Encode a BGR image to bytes for the format named by ``suffix`` ('.jpg', '.png', ...)."""
    suffix = suffix.lower()
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    elif suffix == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(suffix, img, params)
    if not ok:
        raise ImageError(f"cannot encode image as {suffix}")
    return buf.tobytes()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o666) -> None:
    """Write ``data`` to ``path`` via a temp file + rename: readers never see a partial file.

    ``mkstemp`` creates 0600 files; the final file gets ``mode`` minus the umask like any
    ordinarily created file (key files pass 0o600).
    """
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".refacex-tmp")
    except OSError as exc:
        raise OutputError(f"{p.parent}: cannot write here ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{p}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image(path: str | os.PathLike[str], img: np.ndarray, quality: int = 95) -> None:
    """Encode by the file's suffix and write atomically."""
    write_bytes_atomic(path, encode_image(img, Path(path).suffix or ".png", quality))


def iter_images(inputs: list[str | os.PathLike[str]]) -> Iterator[tuple[Path, Path]]:
    """Yield ``(file, relative_path)`` for files given directly or found recursively in folders.

    The relative path keeps a folder's structure in the output; a file given directly
    is relative to its own folder.
    """
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    yield f, f.relative_to(p)
        else:
            yield p, Path(p.name)
