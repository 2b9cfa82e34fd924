"""Image reading and atomic writing.

All pixels inside refacex are ``uint8`` BGR arrays of shape (H, W, 3) — OpenCV's
convention, because every model we run goes through OpenCV or dlib.

Reading validates up front (existence, size, decodability, pixel count) so that a bad
file produces one clear ``ImageError`` instead of a crash deep inside a model. Writing
goes to a temporary file in the destination folder and is renamed into place, so an
interrupted run never leaves a half-written output; a run killed with SIGKILL leaves a
hidden ``.NAME.XXXX.refacex-tmp`` file, which ``clean_stale_temp`` removes on the next run.

Decoders talk on their own: libjpeg and libpng print warnings ("Corrupt JPEG data: 3
extraneous bytes ...") straight to file descriptor 2 from C, and PIL issues Python
warnings. Both are captured around each decode and kept for the caller
(``take_decoder_warnings``), so a command can summarise them in one line per file
instead of leaking raw library output between its own messages.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from refacex.errors import ImageError, OutputError

#: Images above this many pixels are refused (a 12000x12000 photo needs 432 MB as BGR).
MAX_PIXELS = int(os.environ.get("REFACEX_MAX_PIXELS", 100_000_000))

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

# PIL's own guard against decompression bombs; ours is explicit and checked first.
Image.MAX_IMAGE_PIXELS = None

# OpenCV's own log lines ("[ WARN:0@0.1] ...") would bypass the capture below.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

#: Suffix of ``write_bytes_atomic``'s temp files (named ``.NAME.XXXXXXXX.refacex-tmp``).
TEMP_SUFFIX = ".refacex-tmp"

_capture_lock = threading.RLock()  # fd 2 and the warnings filters are process-wide
_sink: tuple[int, IO[bytes]] | None = None  # (pid, temp file) that receives fd 2 while decoding
_decoder_said: list[str] = []
_MAX_KEPT = 100  # a library caller that never takes the messages must not grow a list


def _stderr_sink() -> int:
    """A temp file's descriptor for fd 2 to point at, made once per process (cheap reuse)."""
    global _sink
    if _sink is None or _sink[0] != os.getpid():
        _sink = (os.getpid(), tempfile.TemporaryFile(buffering=0))  # noqa: SIM115 (kept open)
    return _sink[1].fileno()


@contextlib.contextmanager
def _capture_decoder_output() -> Iterator[None]:
    """Keep what C decoders print on fd 2 and what PIL warns about during the block.

    fd 2 is pointed at a temp file with ``dup2`` and restored in ``finally``; the cost is a
    handful of system calls. If fd 2 cannot be duplicated (closed), output is not captured.
    """
    with _capture_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()  # Python's own pending text is not the decoder's
        sink = _stderr_sink()
        try:
            saved: int | None = os.dup(2)
        except OSError:
            saved = None
        if saved is not None:
            os.dup2(sink, 2)
        try:
            yield
        finally:
            text = b""
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
                os.lseek(sink, 0, os.SEEK_SET)
                text = os.read(sink, 65536)
                os.ftruncate(sink, 0)
                os.lseek(sink, 0, os.SEEK_SET)
            said = text.decode(errors="replace").splitlines()
            said += [str(w.message) for w in caught]
            _decoder_said.extend(m.strip() for m in said if m.strip())
            del _decoder_said[:-_MAX_KEPT]


def take_decoder_warnings() -> list[str]:
    """Decoder messages captured since the last call, each once, oldest first."""
    with _capture_lock:
        said = list(dict.fromkeys(_decoder_said))
        _decoder_said.clear()
    return said


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
        with _capture_decoder_output(), Image.open(p) as im:
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
    import io

    with _capture_decoder_output():
        try:
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


def encode_image(img: np.ndarray, suffix: str, quality: int = 95,
                 fast_png: bool = False) -> bytes:
    """Encode a BGR image to bytes for the format named by ``suffix`` ('.jpg', '.png', ...).

    ``fast_png``: Huffman coding only (no LZ77 search) — on camera pixels about twice as
    fast and no bigger (a 320x256 video face region: 6 vs 13 ms, 106 vs 112 kB), which
    is what a video vault that stores every frame's faces needs."""
    suffix = suffix.lower()
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    elif suffix == ".png" and fast_png:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1,
                  cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
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
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=TEMP_SUFFIX)
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


def write_image(path: str | os.PathLike[str], img: np.ndarray, quality: int = 95,
                mode: int = 0o666) -> None:
    """Encode by the file's suffix and write atomically (``mode`` as in ``write_bytes_atomic``:
    recovered originals pass 0o600 because they show the faces the run had hidden)."""
    write_bytes_atomic(path, encode_image(img, Path(path).suffix or ".png", quality), mode)


def clean_stale_temp(folder: Path, older_than_s: float = 0.0) -> int:
    """Delete our temp files (``.NAME.XXXX.refacex-tmp``, files and the folders of videos
    done in parts) under ``folder``; return how many.

    ``write_bytes_atomic`` removes its temp file on any exception, but SIGKILL or a power
    cut leaves it behind, hidden. Only regular files named our way and older than
    ``older_than_s`` go (a concurrent run's temp file lives for well under a second);
    symlinked folders are not followed.
    """
    cutoff = time.time() - older_than_s
    removed = 0
    for root, dirs, names in os.walk(folder):
        # A video being done in parts keeps them in a folder named the same way.
        for name in fnmatch.filter(dirs, f".*{TEMP_SUFFIX}"):
            p = Path(root, name)
            with contextlib.suppress(OSError):
                st = p.lstat()
                # Its newest entry: the folder's own time stays put while a part is being
                # encoded, the part's file does not (a live run's folder is kept).
                if stat.S_ISDIR(st.st_mode) and max(
                        [st.st_mtime] + [e.stat(follow_symlinks=False).st_mtime
                                         for e in os.scandir(p)]) <= cutoff:
                    shutil.rmtree(p)
                    removed += 1
            dirs.remove(name)
        for name in fnmatch.filter(names, f".*{TEMP_SUFFIX}"):
            p = Path(root, name)
            with contextlib.suppress(OSError):
                st = p.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_mtime <= cutoff:
                    p.unlink()
                    removed += 1
    return removed


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
