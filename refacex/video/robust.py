"""The robust in-pixel tier for video: a face code in the pixels of every keyframe.

Why keyframes and not every frame: embedding costs ~30-45 ms per 640x480 frame (~110 ms
at 1280x720; ``benchmarks/bench_realtime.py`` measures it), more than a real-time frame's
whole budget, and a person's face code hardly changes within half a second. So a *robust
keyframe* every ``keyframe_every`` frames (default 0.5 s) carries the sealed face codes of
that frame's edited faces (``pipeline.build_robust_payload``: the photos' code and
sealing), and recovery carries each decoded face on to the next keyframe by following the
region around the face from frame to frame (Lucas-Kanade corners, ``_follow``).

What survives: the writer encodes robust keyframes as **I-frames** (a P-frame's coarser
quantisation erased the code at CRF 20 in our tests, an I-frame kept it up to CRF 23), and
the code uses half the frame's capacity where a face code fits in half (more repetition
per bit; a 640x480 frame has 256 bytes in all). So the anonymised
video as written carries its codes, and a copy whose sidecar was lost or stripped can
still be restored — coarsely: the code is a 48 px face, and between keyframes expression
and detail are the anonymised video's. A *re-encoded* copy mostly loses the codes
(measured: docs/benchmarks.md), unlike photos after JPEG: H.264 removes far more of the
low-frequency texture the code lives in.

Recovery tries only the I-frames (the decoder flags them; the robust keyframes are
among them), so an unmarked I-frame costs one failed search (~0.3 s at 640x480).
A video with no code in its first ``SCAN_S`` seconds is declared to have none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from refacex.errors import NoPayloadError, PayloadError
from refacex.faces.types import Face
from refacex.io.video import VideoReader, VideoWriter
from refacex.payload.facecode import codec
from refacex.payload.format import decode_payload
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.pipeline import build_robust_payload
from refacex.recover import (
    _blend_low_frequencies,
    _centre,
    _check_provenance,
    _code_mask,
    _robust_face,
    _size,
)
from refacex.stego import robust

#: Default spacing of robust keyframes (seconds).
EVERY_S = 0.5
#: Recovery looks this far into a video for a first code before giving up.
SCAN_S = 3.0


def keyframe_every(fps: float, every_s: float = EVERY_S) -> int:
    """Frames between robust keyframes at ``fps``."""
    return max(1, int(round(every_s * fps)))


def embed_frame(out: np.ndarray, original: np.ndarray, faces: list[tuple[int, Face]],
                keys: SealKeys) -> tuple[np.ndarray, int, int]:
    """``out`` with the sealed face codes of ``faces`` (their originals in ``original``)
    in its pixels: (marked frame, payload bytes, faces coded). Nothing fits: ``out``."""
    if not faces:
        return out, 0, 0
    h, w = original.shape[:2]
    capacity = robust.capacity_bytes(h, w)
    # Half the capacity survives CRF 23 (module docstring); a small frame (320x240: 71
    # bytes in all) has no room for a face code in half, and gets the full capacity.
    for budget in (capacity // 2, capacity):
        blob, sizes = build_robust_payload(original, faces, keys, budget)
        if blob is not None:
            break
    else:
        return out, 0, 0
    return robust.embed(out, blob), len(blob), sum(1 for s in sizes if s)


@dataclass
class _Carried:
    """A decoded face followed from its keyframe: its code and where its code crop is in
    the current frame (at the keyframe: the decoder's own, exact geometry)."""

    decoded: np.ndarray
    matrix: np.ndarray  # current frame -> code crop
    box: np.ndarray  # the face's box in the current frame


def _follow(prev: np.ndarray, cur: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Similarity transform (2x3, previous frame px -> current) of the region around
    ``box``, from corners tracked by pyramidal Lucas-Kanade (RANSAC fit), or None.

    Not the detector: on a blurred face its landmarks wander by pixels, and a code
    carried by them came out worse than the blur it replaced; the face's surroundings
    (hair, neck, background) move with it and have corners to track."""
    h, w = prev.shape[:2]
    x, y, bw, bh = (float(v) for v in box)
    x0, y0 = max(0, int(x - 0.5 * bw)), max(0, int(y - 0.5 * bh))
    x1, y1 = min(w, int(x + 1.5 * bw)), min(h, int(y + 1.5 * bh))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 255
    p0 = cv2.goodFeaturesToTrack(prev, 200, 0.01, 5, mask=mask)
    if p0 is None or len(p0) < 8:
        return None
    p1, ok, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, winSize=(21, 21), maxLevel=3)
    good = ok.reshape(-1) == 1
    if good.sum() < 8:
        return None
    m, inliers = cv2.estimateAffinePartial2D(p0[good], p1[good], method=cv2.RANSAC,
                                             ransacReprojThreshold=2.0)
    if m is None or inliers is None or int(inliers.sum()) < 8:
        return None
    return m


def _carry(c: _Carried, prev: np.ndarray, cur: np.ndarray) -> bool:
    """Move ``c`` from the previous frame to the current one; False if it was lost."""
    m = _follow(prev, cur, c.box)
    if m is None:
        return False
    inv = cv2.invertAffineTransform(m)
    c.matrix = np.asarray(c.matrix, np.float64) @ np.vstack([inv, [0.0, 0.0, 1.0]])
    corners = np.array([[c.box[0], c.box[1]], [c.box[0] + c.box[2], c.box[1] + c.box[3]]])
    moved = corners @ m[:, :2].T + m[:, 2]
    c.box = np.array([*moved[0], *(moved[1] - moved[0])], np.float32)
    return True


@dataclass
class RobustRecovery:
    """What the in-pixel route restored."""

    frames: int = 0
    keyframes: list[int] = field(default_factory=list)  # frames whose code decoded
    regions: int = 0
    notes: list[str] = field(default_factory=list)


def _decode_keyframe(img: np.ndarray, keys: OpenKeys, notes: list[str]
                     ) -> list[_Carried] | None:
    """The face codes in this frame's pixels placed on its faces, or None (no code)."""
    try:
        located = robust.locate(img, quick=True)
    except NoPayloadError:
        return None
    payload = decode_payload(located.data, **keys.crypto_kwargs())
    _check_provenance(payload, keys, "in-pixel", notes)
    back = np.vstack([located.to_original(*payload.image_size), [0.0, 0.0, 1.0]])
    fc = codec()
    out = []
    for rec in payload.faces:
        m = np.asarray(rec.affine, np.float64) @ back
        try:
            decoded, _ = _robust_face(rec, m, img, fc)
        except PayloadError as exc:
            notes.append(str(exc))
            continue
        # The code's own geometry places it (no detection needed: a blurred face is not
        # always found again); the region the tracker follows is its crop's square.
        side, (cx, cy) = _size(m), _centre(m)
        out.append(_Carried(decoded, m, np.array([cx - side / 2, cy - side / 2, side, side],
                                                 np.float32)))
    return out


def _paste(img: np.ndarray, carried: list[_Carried]) -> tuple[np.ndarray, int]:
    """Blend each carried face code in where its code crop now is."""
    out = img
    mask = _code_mask().astype(np.float32) / 255.0
    for c in carried:
        out = _blend_low_frequencies(out, c.decoded, c.matrix, mask)
    return out, len(carried)


def recover_robust(src: str | os.PathLike[str], dest: str | os.PathLike[str],
                   keys: OpenKeys, codec_name: str | None = None, crf: int = 18,
                   mode: int = 0o600) -> RobustRecovery:
    """Restore ``src`` from its in-pixel codes alone into ``dest`` (lossless by default).

    ``NoPayloadError`` when no frame of the first ``SCAN_S`` seconds carries a code; a
    code that does not open (wrong key, forged) is that error. Nothing is written then."""
    src, dest = Path(src), Path(dest)
    res = RobustRecovery()
    with VideoReader(src) as reader:
        info = reader.info
        fps = float(info.rate) if info.rate else 25.0
        scan = max(1, int(round(SCAN_S * fps)))
        with VideoWriter(dest, info, reader.audio, codec=codec_name, crf=crf,
                         lossless=codec_name is None, mode=mode) as writer:
            carried: list[_Carried] = []
            prev: np.ndarray | None = None
            for kind, item in reader.packets():
                if kind == "audio":
                    writer.write_audio(item)
                    continue
                i, img = item.index, item.image
                if not res.keyframes and i >= scan:
                    raise NoPayloadError(f"{src}: no robust code in its first {SCAN_S:g} s "
                                         "(anonymised without --robust-video, or re-encoded)")
                found = (_decode_keyframe(img, keys, res.notes)
                         if item.av_frame.key_frame else None)
                grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
                if found is not None:
                    res.keyframes.append(i)
                    carried = found
                elif prev is not None:
                    carried = [c for c in carried if _carry(c, prev, grey)]
                prev = grey
                out, n = _paste(img, carried)
                res.regions += n
                writer.write(out, item.pts)
                res.frames += 1
            if not res.keyframes:
                raise NoPayloadError(f"{src}: no robust code found in the video")
            writer.finish()
            writer.commit()
    return res
