"""Video reading and atomic writing (PyAV, i.e. FFmpeg's libraries bundled in the wheel).

Frames are handed out as ``uint8`` BGR arrays like images (``refacex.io.images``), with
their presentation timestamps, so every face model runs unchanged on video. Writing keeps
what a viewer relies on: the input's time base and timestamps (variable frame rate stays
variable), frame rate, display rotation and colour tags; the audio stream is copied as
packets (remuxed, never re-encoded: byte-identical sound, no generation loss).

Like images, outputs go to a hidden temp file in the destination folder (the same
``.NAME.XXXX.refacex-tmp`` naming, so ``clean_stale_temp`` removes what a killed run left)
and are renamed into place only when complete: a reader never sees half a video.

Decoding is checked up front (``probe``): a file that is not a video, has no video stream
or is truncated before its first frame is one ``VideoError`` line, not a traceback from
inside FFmpeg. A file truncated later is found while decoding and is an error too (the run
writes nothing), because a silently shortened output would lose frames without a word.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from refacex.errors import OutputError, RefacexError

#: Suffixes routed to the video path without a probe (others are probed if not images).
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"}
#: Container format FFmpeg should write for a suffix (the temp file's own name ends in
#: ``.refacex-tmp``, so the format cannot be guessed from it).
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska",
            ".webm": "webm", ".avi": "avi"}
DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 20
#: Lossless codec for recovered videos: H.264 in RGB at qp 0 keeps the restored regions
#: bit-exact (any lossy codec would blur back what the vault restored exactly).
LOSSLESS_CODEC = "libx264rgb"
TEMP_SUFFIX = ".refacex-tmp"  # same as refacex.io.images.TEMP_SUFFIX


class VideoError(RefacexError):
    """The input is not a readable video (missing, not a video, truncated, no video stream)."""


def _av():
    """PyAV, imported on first use: image-only runs never load FFmpeg."""
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise VideoError("video support needs PyAV (pip install av)") from None
    # No FFmpeg log callback at all (PyAV's default; errors still raise). With a level set,
    # PyAV takes the GIL for every error FFmpeg logs, also from a frame-threaded decoder's
    # own threads: one that logs while the main thread frees the decoder (holding the
    # GIL) deadlocks the process — seen in ``probe`` after the threaded video engine ran.
    av.logging.set_level(None)
    return av


def is_video_suffix(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def looks_like_video(path: str | os.PathLike[str]) -> bool:
    """Route by suffix; an unknown suffix (not an image either) by opening the container.

    Image suffixes are never probed: FFmpeg opens a JPEG as a one-frame "video", and
    images must keep their own path."""
    from refacex.io.images import IMAGE_SUFFIXES

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in IMAGE_SUFFIXES or not p.is_file():
        return False
    av = _av()
    try:
        with av.open(str(p)) as c:
            return any(s.type == "video" and (s.frames or 0) != 1 for s in c.streams) and \
                c.format.name not in ("image2", "png_pipe", "jpeg_pipe", "webp_pipe")
    except (av.FFmpegError, OSError, ValueError):
        return False


def iter_videos(inputs: list[str | os.PathLike[str]]) -> Iterator[tuple[Path, Path]]:
    """``(file, relative path)`` of the videos in ``inputs``, like ``iter_images``: files
    given directly are probed, folders are searched recursively by suffix."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and is_video_suffix(f):
                    yield f, f.relative_to(p)
        elif looks_like_video(p):
            yield p, Path(p.name)


@dataclass
class VideoInfo:
    """What the writer copies from the input (``None``: the input did not say)."""

    width: int
    height: int
    rate: Fraction | None  # average frame rate
    time_base: Fraction
    frames: int  # as the container declares it (0: unknown)
    rotation: int  # display rotation in degrees (side data), 0 if none
    color: dict[str, Any]  # colorspace, color_range, color_primaries, color_trc
    has_audio: bool
    codec: str


def quarter_turns(rotation: int) -> int:
    """Counter-clockwise quarter turns that show a frame stored with display rotation
    ``rotation`` (FFmpeg's display-matrix angle, counter-clockwise) upright."""
    return int(round(rotation / 90.0)) % 4


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """A decoded frame as it is displayed.

    Phone videos are stored sideways with a display rotation: faces in the stored
    pixels lie on their side, where the detector misses them. Everything between the
    reader and the writer therefore sees upright frames; the writer turns them back
    and keeps the rotation tag, so the output is stored the way the input was."""
    k = quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def turn_back(image: np.ndarray, rotation: int) -> np.ndarray:
    """The inverse of ``upright``: an upright frame as it is stored under ``rotation``."""
    k = quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(image, -k)) if k else image


@dataclass
class Frame:
    """One decoded frame: ``index`` in presentation order, BGR pixels (upright, see
    ``upright``), timestamp."""

    index: int
    image: np.ndarray
    pts: int | None
    time: float | None
    av_frame: Any  # the PyAV frame (its YUV planes bind the vault, see ``luma``)


def luma(av_frame: Any) -> np.ndarray:
    """The frame's Y plane as decoded (H, W) — exact across machines, unlike an RGB
    conversion, whose SIMD paths may round differently; the vault binds to it."""
    plane = av_frame.planes[0]
    buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return buf[:, :plane.width]


class VideoReader:
    """Decode a video file frame by frame (use as a context manager)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        av = _av()
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"{self.path}: no such file")
        try:
            self.container = av.open(str(self.path))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoError(f"{self.path}: not a readable video ({_why(exc)})") from None
        try:
            self.video = self.container.streams.video[0]
        except IndexError:
            self.container.close()
            raise VideoError(f"{self.path}: has no video stream") from None
        audio = self.container.streams.audio
        self.audio = audio[0] if audio else None
        self.video.thread_type = "AUTO"
        cc = self.video.codec_context
        self.info = VideoInfo(
            width=cc.width, height=cc.height,
            rate=Fraction(self.video.average_rate) if self.video.average_rate else None,
            time_base=Fraction(self.video.time_base) if self.video.time_base
            else Fraction(1, 90000),
            frames=int(self.video.frames or 0), rotation=0,
            color={k: getattr(cc, k, None) for k in
                   ("colorspace", "color_range", "color_primaries", "color_trc")},
            has_audio=self.audio is not None, codec=cc.name)
        if cc.width <= 0 or cc.height <= 0:
            self.close()
            raise VideoError(f"{self.path}: video stream has no picture size")

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()

    def packets(self) -> Iterator[tuple[str, Any]]:
        """In file order: ``("frame", Frame)`` for each decoded video frame and
        ``("audio", packet)`` for each audio packet (to remux untouched)."""
        av = _av()
        streams = [self.video] + ([self.audio] if self.audio is not None else [])
        index = 0
        try:
            for packet in self.container.demux(streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None:  # the demuxer's final flush packet is empty
                        yield "audio", packet
                    continue
                for f in packet.decode():
                    if index == 0:
                        self.info.rotation = int(round(getattr(f, "rotation", 0) or 0))
                    image = upright(f.to_ndarray(format="bgr24"), self.info.rotation)
                    yield "frame", Frame(index, image, f.pts, f.time, f)
                    index += 1
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoError(f"{self.path}: damaged or truncated video at frame {index} "
                             f"({_why(exc)})") from None
        if index == 0:
            raise VideoError(f"{self.path}: no decodable video frame (truncated or empty)")
        self.frame_count = index

    def frames(self) -> Iterator[Frame]:
        for kind, item in self.packets():
            if kind == "frame":
                yield item


def _why(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return msg if len(msg) <= 120 else msg[:117] + "..."


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Open ``path`` and decode its first frame; ``VideoError`` if that fails."""
    with VideoReader(path) as r:
        for _ in r.frames():
            break
        return r.info


def _codec_available(name: str) -> bool:
    return name in _av().codecs_available


class VideoWriter:
    """Encode BGR frames (+ remuxed audio) to a temp file; ``commit`` renames it into place.

    ``codec=None`` keeps ``DEFAULT_CODEC`` (or the first of libx264 / h264 / mpeg4 this
    FFmpeg build has). ``lossless=True`` writes RGB H.264 at qp 0 (bit-exact frames).
    Leaving the ``with`` block without ``commit`` (an error, Ctrl-C) deletes the temp file.
    """

    def __init__(self, path: str | os.PathLike[str], info: VideoInfo,
                 audio_template: Any = None, codec: str | None = None,
                 crf: int = DEFAULT_CRF, lossless: bool = False, mode: int = 0o666) -> None:
        av = _av()
        self.path = Path(path)
        self.mode = mode
        fmt = _FORMATS.get(self.path.suffix.lower(), "mp4")
        if lossless and codec is None:
            codec = LOSSLESS_CODEC
        if codec is None:
            codec = next((c for c in (DEFAULT_CODEC, "h264", "mpeg4") if _codec_available(c)),
                         DEFAULT_CODEC)
        if not _codec_available(codec):
            raise OutputError(f"video codec {codec!r} is not in this FFmpeg build")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                       suffix=TEMP_SUFFIX)
            os.close(fd)
        except OSError as exc:
            raise OutputError(f"{self.path.parent}: cannot write here "
                              f"({exc.strerror or exc})") from None
        self.tmp = Path(tmp)
        self.committed = False
        try:
            self.container = av.open(str(self.tmp), "w", format=fmt)
            rate = info.rate or Fraction(30, 1)
            self.rate = rate
            self.stream = self.container.add_stream(codec, rate=rate)
            cc = self.stream.codec_context
            cc.width, cc.height = info.width, info.height
            self.stream.time_base = info.time_base
            cc.time_base = info.time_base
            even = info.width % 2 == 0 and info.height % 2 == 0
            if codec == LOSSLESS_CODEC:
                self.pix_fmt = "bgr24"
            elif codec in ("libx264", "libx265", "h264"):
                self.pix_fmt = "yuv420p" if even else "yuv444p"
            else:
                self.pix_fmt = "yuv420p"
            cc.pix_fmt = self.pix_fmt
            options = {}
            if codec in (LOSSLESS_CODEC, "libx264", "libx265"):
                options["crf" if not lossless else "qp"] = str(0 if lossless else int(crf))
                options["preset"] = "veryfast" if not lossless else "ultrafast"
            elif codec == "libvpx-vp9":
                options.update({"crf": str(int(crf)), "b": "0"} if not lossless
                               else {"lossless": "1"})
            self.stream.options = options
            if codec != LOSSLESS_CODEC:
                for k, v in info.color.items():
                    if v is not None:
                        with contextlib.suppress(AttributeError, ValueError, TypeError):
                            setattr(cc, k, v)
            # The rotation is known only once the reader has decoded its first frame
            # (it is frame side data): it is tagged at the first ``write``, and audio
            # packets that come before it are held, because the first mux writes the
            # container header, after which the tag no longer reaches the file.
            self.info = info
            self._rotation: int | None = None
            self._held_audio: list[Any] = []
            self.audio = None
            if audio_template is not None:
                self.audio = self.container.add_stream_from_template(audio_template)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, av.FFmpegError | ValueError):
                raise OutputError(f"{self.path}: cannot encode with {codec} "
                                  f"({_why(exc)})") from None
            raise
        self._last_pts: int | None = None
        self.frames_written = 0

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self.committed:
            self.abort()

    def write(self, image: np.ndarray, pts: int | None, keyframe: bool = False) -> None:
        """Encode one BGR frame at ``pts`` (the input's timestamp, in its time base);
        ``keyframe`` makes it an I-frame (the robust tier's code survives only there)."""
        av = _av()
        if self._rotation is None:
            self._start()
        image = turn_back(image, self._rotation or 0)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        if self.pix_fmt != "bgr24":
            frame = frame.reformat(format=self.pix_fmt)
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            # No timestamp (raw streams) or not increasing: continue one frame period on.
            tb = self.stream.codec_context.time_base
            step = max(1, round(1 / (self.rate * tb))) if tb else 1
            pts = 0 if self._last_pts is None else self._last_pts + step
        frame.pts = pts
        frame.time_base = self.stream.codec_context.time_base
        self._last_pts = pts
        self._mux(self.stream.encode(frame))
        self.frames_written += 1

    def _start(self) -> None:
        """Tag the display rotation, then let the held audio through (see ``__init__``)."""
        self._rotation = int(self.info.rotation or 0)
        if self._rotation:
            with contextlib.suppress(AttributeError, ValueError):
                self.stream.set_display_rotation(self._rotation)
        held, self._held_audio = self._held_audio, []
        self._mux(held)

    def write_audio(self, packet: Any) -> None:
        """Remux one audio packet of the input untouched."""
        if self.audio is None:
            return
        packet.stream = self.audio
        if self._rotation is None:
            self._held_audio.append(packet)
            return
        self._mux([packet])

    def _mux(self, packets: Any) -> None:
        try:
            self.container.mux(packets)
        except _av().FFmpegError as exc:
            raise OutputError(f"{self.path}: cannot write video ({_why(exc)})") from None

    def finish(self) -> Path:
        """Flush the encoder and close the temp file; returns its path (not yet renamed),
        so the caller can read it back (the vault binds to the decoded output)."""
        if self._rotation is None:
            self._start()
        self._mux(self.stream.encode(None))
        self.container.close()
        return self.tmp

    def commit(self) -> Path:
        """Rename the finished temp file into place."""
        try:
            os.chmod(self.tmp, self.mode & ~_umask())
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        self.committed = True
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def audio_packets(path: str | os.PathLike[str]) -> list[bytes]:
    """The bytes of every audio packet of the first audio stream (tests, checks)."""
    av = _av()
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
