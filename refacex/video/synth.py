"""Synthetic test clips made from still photos: camera motion, a face entering, audio.

Why: no registry package ships a real video with faces that this project may use, and
LFW/CelebA frames must not go into committed tests. A moving, zooming crop window over a
bundled sample photo gives the tracker and the swap real faces under motion and scale
change; a second photo sliding in from the side mid-clip is a face entering the scene;
an AAC sine tone is an audio stream to remux.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np


def camera_frames(photo: np.ndarray, n: int, size: tuple[int, int] = (320, 240),
                  intruder: np.ndarray | None = None, enter_at: int | None = None,
                  zoom: float = 0.25, pan: float = 0.12,
                  centre: tuple[float, float] = (0.5, 0.5), window: float = 0.9
                  ) -> list[np.ndarray]:
    """``n`` BGR frames of ``size`` (w, h): a crop window panning and zooming over
    ``photo``; from frame ``enter_at`` on, ``intruder`` (a face photo) slides in from the
    right edge and stops with its face fully in view. The window starts at ``window`` of
    the largest one the photo allows, centred at ``centre`` (fractions of the photo's
    width and height), and shrinks by ``zoom`` over the clip."""
    w, h = size
    ph, pw = photo.shape[:2]
    aspect = w / h
    base_w = min(pw, ph * aspect) * window
    frames = []
    for i in range(n):
        t = i / max(1, n - 1)
        cw = base_w * (1.0 - zoom * t)
        ch = cw / aspect
        cx = centre[0] * pw + pan * pw * np.sin(2 * np.pi * t) * 0.5
        cy = centre[1] * ph + pan * ph * np.cos(2 * np.pi * t) * 0.25
        x0 = float(np.clip(cx - cw / 2, 0, pw - cw))
        y0 = float(np.clip(cy - ch / 2, 0, ph - ch))
        m = np.array([[w / cw, 0, -x0 * w / cw], [0, h / ch, -y0 * h / ch]], np.float64)
        frame = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_AREA if cw > w
                               else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if intruder is not None and enter_at is not None and i >= enter_at:
            ih = int(h * 0.7)
            iw = int(intruder.shape[1] * ih / intruder.shape[0])
            small = cv2.resize(intruder, (iw, ih), interpolation=cv2.INTER_AREA)
            steps = max(1, (n - enter_at) // 2)
            k = min(1.0, (i - enter_at + 1) / steps)
            left = int(round(w - k * min(iw, w * 0.55)))
            top = h - ih
            vis = min(iw, w - left)
            if vis > 0:
                frame[top:top + ih, left:left + vis] = small[:, :vis]
        frames.append(frame)
    return frames


#: Scenes over the bundled sample photos (``refacex.models.resolve`` names): photo, the
#: crop window's centre and size (``camera_frames``), zoom. "one": the astronaut, her face
#: whole in every frame; "three": three of the six people of the ``t1`` group photo.
SCENES: dict[str, tuple[str, tuple[float, float], float, float]] = {
    "one": ("astronaut", (0.45, 0.34), 0.9, 0.2),
    "three": ("t1", (0.434, 0.36), 0.62, 0.08),
}


def scene_frames(name: str, n: int, size: tuple[int, int] = (640, 480),
                 intruder: np.ndarray | None = None, enter_at: int | None = None
                 ) -> list[np.ndarray]:
    """``camera_frames`` of one of ``SCENES``."""
    from refacex.io.images import read_image
    from refacex.models import resolve

    photo, centre, window, zoom = SCENES[name]
    return camera_frames(read_image(resolve(photo)), n, size, intruder, enter_at, zoom=zoom,
                         centre=centre, window=window)


def write_clip(path: str | os.PathLike[str], frames: list[np.ndarray], fps: int = 24,
               audio: bool = True, crf: int = 18, rotation: int = 0,
               gop: int | None = None) -> Path:
    """Encode ``frames`` as H.264 (+ a 440 Hz AAC tone as long as the clip) to ``path``.

    ``rotation`` (a multiple of 90): store the (upright) frames turned the other way and
    tag the stream with that display rotation, as a phone held sideways records.
    ``gop``: a keyframe every ``gop`` frames (x264's default is 250: one in a short clip),
    as cameras write them every second or two."""
    import av

    from refacex.io.video import turn_back

    path = Path(path)
    frames = [turn_back(f, rotation) for f in frames]
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if rotation:
            vs.set_display_rotation(rotation)
        # No macroblock tree: with it, this x264 gave other frames from run to run once
        # the process had decoded a video (the test clip differed from frame 0 in two of
        # four writes), so a test did not measure the same input twice.
        vs.options = {"crf": str(crf), "preset": "veryfast", "mbtree": "0",
                      **({"g": str(gop)} if gop else {})}
        a = None
        if audio:
            a = c.add_stream("aac", rate=44100)
            a.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="bgr24")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            c.mux(vs.encode(vf))
        c.mux(vs.encode(None))
        if a is not None:
            total = int(44100 * len(frames) / fps)
            t = np.arange(total) / 44100.0
            pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for s in range(0, total, 1024):
                chunk = pcm[s:s + 1024][None, :]
                af = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                af.sample_rate = 44100
                af.pts = s
                af.time_base = Fraction(1, 44100)
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return path
