"""Cut a video into parts at keyframes and join anonymised parts back (remux only).

Why: one long video is one task, so a cluster with idle workers waits on the worker
that has it. Cut at keyframes, its parts are independent tasks: every part starts with a
picture that decodes on its own, so a part decodes to exactly the frames it had inside
the whole video. Nothing is re-encoded here: cutting copies the input's packets, joining
copies the anonymised parts' packets, so the joined output decodes to exactly the frames
each part's worker encoded (the video vault binds to those decoded frames, and its
bindings stay true in the joined file).

Timestamps: a part's packets are shifted to start at 0 (``offset`` is what was taken
off, in the input's time base) and shifted back when joined, so the output keeps the
input's timestamps as a whole-file run does. Parts are written in the input's own
container format (``VIDEO_SUFFIXES``), which keeps its time base and display rotation.
Audio is not in the parts: the joined output remuxes the input's audio untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from refacex.errors import OutputError
from refacex.io.video import _FORMATS, TEMP_SUFFIX, VideoError, _av, _umask, _why


@dataclass(frozen=True)
class Part:
    """One part of a video: ``frames`` packets from packet ``first`` on (decode order),
    its timestamps shifted by ``offset`` (input time base)."""

    index: int
    first: int
    frames: int
    offset: int


def plan_parts(src: str | os.PathLike[str], part_s: float, max_parts: int) -> list[Part]:
    """Where to cut ``src``: at keyframes, parts of at least ``part_s`` seconds, at most
    ``max_parts`` of them (one part: not worth cutting). Reads packets, decodes nothing.
    """
    av = _av()
    try:
        with av.open(str(src)) as c:
            v = c.streams.video[0]
            tb = Fraction(v.time_base)
            packets = [(p.pts, p.is_keyframe) for p in c.demux(v) if p.dts is not None]
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise VideoError(f"{src}: not a readable video ({_why(exc)})") from None
    if not packets or any(pts is None for pts, _ in packets):
        return [Part(0, 0, len(packets), 0)]
    start, end = packets[0][0], max(pts for pts, _ in packets)
    length = max(float((end - start) * tb), 1e-9)
    step = max(part_s, length / max(1, max_parts))
    cuts, next_at = [0], start + step / tb
    for i, (pts, key) in enumerate(packets):
        # A keyframe opens a part only if every later packet shows after it (closed GOP):
        # a picture shown before it but stored after it would belong to the part before.
        if i and key and pts >= next_at and all(p >= pts for p, _ in packets[i:i + 16]):
            if float((end - pts) * tb) < part_s / 2:
                break  # a short last part costs a worker start for little
            cuts.append(i)
            next_at = pts + step / tb
    bounds = cuts + [len(packets)]
    return [Part(k, bounds[k], bounds[k + 1] - bounds[k], packets[bounds[k]][0])
            for k in range(len(cuts))]


def cut_parts(src: str | os.PathLike[str], parts: list[Part], folder: Path) -> list[Path]:
    """Write each of ``parts`` of ``src`` (video packets only) into ``folder``."""
    av = _av()
    suffix = Path(src).suffix.lower() if Path(src).suffix.lower() in _FORMATS else ".mp4"
    paths = [folder / f"in{p.index:04d}{suffix}" for p in parts]
    bounds = [(p.first, p.first + p.frames, p.offset) for p in parts]
    try:
        with av.open(str(src)) as c:
            v = c.streams.video[0]
            k, out, stream = -1, None, None
            for i, packet in enumerate(p for p in c.demux(v) if p.dts is not None):
                while k + 1 < len(bounds) and i >= bounds[k + 1][0]:
                    if out is not None:
                        out.close()
                    k += 1
                    out = av.open(str(paths[k]), "w", format=_FORMATS[suffix])
                    stream = out.add_stream_from_template(v)
                if out is None or i >= bounds[k][1]:
                    continue
                packet.pts -= bounds[k][2]
                packet.dts -= bounds[k][2]
                packet.stream = stream
                out.mux(packet)
            if out is not None:
                out.close()
    except (av.FFmpegError, ValueError) as exc:
        raise VideoError(f"{src}: cannot be cut into parts ({_why(exc)})") from None
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write video parts ({exc.strerror or exc})"
                          ) from None
    return paths


def join_parts(src: str | os.PathLike[str], parts: list[tuple[Path, int]], dest: Path
               ) -> Path:
    """Join the anonymised ``parts`` ((file, offset in the input's time base)), in order,
    with the audio of ``src``, into a hidden temp file beside ``dest``; returns the temp
    file (the caller renames it into place once the vault is in place too)."""
    av = _av()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.",
                                    suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with av.open(str(src)) as source, \
                av.open(str(tmp), "w", format=_FORMATS.get(dest.suffix.lower(), "mp4")) as out:
            vin = source.streams.video[0]
            in_tb = Fraction(vin.time_base)
            with av.open(str(parts[0][0])) as first:
                vout = out.add_stream_from_template(first.streams.video[0])
            aud = source.streams.audio[0] if source.streams.audio else None
            aout = out.add_stream_from_template(aud) if aud is not None else None
            audio = (p for p in source.demux(aud) if p.dts is not None) if aud else iter(())
            # Interleaved by time (audio packets come in time order), so the muxer need
            # not buffer one stream's whole length.
            next_audio = next(audio, None)
            for path, offset in parts:
                with av.open(str(path)) as part:
                    s = part.streams.video[0]
                    shift = int(round(offset * in_tb / Fraction(s.time_base)))
                    for packet in part.demux(s):
                        if packet.dts is None:
                            continue
                        packet.pts += shift
                        packet.dts += shift
                        t = packet.dts * packet.time_base
                        while next_audio is not None and \
                                next_audio.dts * next_audio.time_base <= t:
                            next_audio.stream = aout
                            out.mux(next_audio)
                            next_audio = next(audio, None)
                        packet.stream = vout
                        out.mux(packet)
            while next_audio is not None:
                next_audio.stream = aout
                out.mux(next_audio)
                next_audio = next(audio, None)
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, av.FFmpegError | ValueError):
            raise OutputError(f"{dest}: cannot join the anonymised parts ({_why(exc)})"
                              ) from None
        if isinstance(exc, OSError):
            raise OutputError(f"{dest}: cannot write ({exc.strerror or exc})") from None
        raise
    return tmp
