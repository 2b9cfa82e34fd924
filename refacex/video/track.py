"""Face tracks across frames: association, re-identification and landmark smoothing.

Why tracks: a video anonymiser that treats frames independently picks a new donor each
frame (a flickering crowd of strangers), trusts one frame's detector jitter (the swapped
face shakes) and forgets a face the detector misses for one frame (a frame with the real
face in it). A track gives each person one identity for the whole clip, lets landmarks be
smoothed over time, and carries a face through short detector misses.

* **association** — detections are matched to live tracks greedily by cost
  ``(1 - IoU) + 0.5 * centre distance / face size`` (gated: IoU > 0.1 or centre within
  0.6 face sizes). With a handful of faces per frame greedy equals Hungarian in practice
  and needs no SciPy.
* **re-identification** — a detection that matches no live track is compared (SFace,
  at the recogniser's own threshold) with tracks lost in the last ``reid_s`` seconds: the
  same person walking back in gets their track, and so their donor, back.
* **smoothing** — the 5 keypoints and 68 landmarks go through a One-Euro filter (Casiez
  et al., CHI 2012): heavy smoothing when the face is still (kills jitter), little when
  it moves (no lag). Speeds are measured in face sizes per second, so the same parameters
  fit a face of 40 px and of 400 px.
* **coasting** — a track missed for up to ``coast`` frames is still reported, at its
  last position moved by its velocity, so the caller can cover it (it blurs it).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from refacex.faces.confirm import FACE, NOT_FACE, PLAUSIBLE
from refacex.faces.detect import iou
from refacex.faces.types import Face

_RANK = {NOT_FACE: 0, PLAUSIBLE: 1, FACE: 2}


class OneEuro:
    """One-Euro low-pass filter on an array of coordinates (speed-adaptive cutoff)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 1.0, d_cutoff: float = 1.0
                 ) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """Filtered ``x`` at time ``t`` (s); ``scale`` (px) normalises the speed."""
        x = np.asarray(x, np.float64)
        if self.x is None or self.t is None or t <= self.t or self.x.shape != x.shape:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t
            return x
        dt = t - self.t
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        speed = np.abs(self.dx) / max(scale, 1e-6)
        a = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self.x = a * x + (1 - a) * self.x
        self.t = t
        return self.x.copy()


@dataclass
class Track:
    """One person across frames, and what the anonymiser decided for them."""

    id: int
    box: np.ndarray
    first_frame: int
    last_frame: int
    last_time: float
    face: Face  # latest smoothed face (coasting starts from it)
    hits: int = 1
    misses: int = 0  # consecutive frames without a detection
    verdict: str = PLAUSIBLE  # best second opinion so far
    judged_at: int = -(1 << 30)  # frame of the last second opinion
    embedding: np.ndarray | None = None  # SFace, for re-identification
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px per frame
    kps_filter: OneEuro = field(default_factory=OneEuro)
    lm_filter: OneEuro = field(default_factory=OneEuro)
    # --- set by the anonymiser -------------------------------------------------
    donor_index: int | None = None
    overrides: dict = field(default_factory=dict)  # swap escalation accepted on a keyframe
    fallback_blur: bool = False  # the verified swap was not private: blur this track
    keyframes: list[int] = field(default_factory=list)
    key_width: float = 0.0  # face width at the last keyframe
    key_whole: bool = False  # was the face whole in the frame at the last keyframe
    guard_trips: int = 0
    retries: int = 0  # keyframes spent re-checking a donor that was not private
    donors_seen: list[str] = field(default_factory=list)
    privacy_risk: float | None = None


@dataclass
class Observation:
    """A track in one frame: the face to edit there (smoothed, or coasted)."""

    track: Track
    face: Face
    coasting: bool = False
    #: The detection itself, before smoothing (None when coasting): an attacker aligns
    #: at the points a detector finds, not at our smoothed ones (the privacy checks
    #: measure at both).
    detected: Face | None = None


def _centre(box: np.ndarray) -> np.ndarray:
    return np.asarray(box[:2], np.float64) + np.asarray(box[2:], np.float64) / 2


def _shift_face(face: Face, d: np.ndarray) -> Face:
    f = copy.copy(face)
    f.box = face.box.copy()
    f.box[:2] += d.astype(np.float32)
    f.kps = (face.kps + d).astype(np.float32)
    f.landmarks = None if face.landmarks is None else (face.landmarks + d).astype(np.float32)
    f.embeddings = dict(face.embeddings)
    return f


class Tracker:
    """Frame-by-frame tracker; ``update`` returns the observations of one frame."""

    def __init__(self, fps: float = 25.0, coast: int = 3, max_lost_s: float = 1.0,
                 reid_s: float = 10.0, reid_threshold: float | None = None,
                 min_cutoff: float = 1.0, beta: float = 2.0) -> None:
        self.fps = fps
        self.coast = coast
        self.max_lost = max(coast, int(round(max_lost_s * fps)))
        self.reid_frames = int(round(reid_s * fps))
        self.reid_threshold = reid_threshold
        self.min_cutoff, self.beta = min_cutoff, beta
        self.live: list[Track] = []
        self.lost: list[Track] = []
        self.all: list[Track] = []
        self.reidentified = 0

    def associate(self, detections: list[Face]) -> tuple[dict[int, Track], list[int]]:
        """Greedy matching of detections to live tracks: ({det index: track}, unmatched)."""
        pairs = []
        for ti, tr in enumerate(self.live):
            pred = tr.box.astype(np.float64).copy()
            pred[:2] += tr.velocity * (tr.misses + 1)
            size = max(float(pred[2]), 1.0)
            for di, d in enumerate(detections):
                v = iou(pred, d.box)
                cd = float(np.linalg.norm(_centre(pred) - _centre(d.box))) / max(
                    size, float(d.box[2]))
                if v > 0.1 or cd < 0.6:
                    pairs.append(((1 - v) + 0.5 * cd, ti, di))
        matched: dict[int, Track] = {}
        used: set[int] = set()
        for _cost, ti, di in sorted(pairs):
            if ti in used or di in matched:
                continue
            used.add(ti)
            matched[di] = self.live[ti]
        return matched, [i for i in range(len(detections)) if i not in matched]

    def reidentify(self, embedding: np.ndarray | None, frame: int) -> Track | None:
        """A recently lost track of the same person (SFace at its threshold), if any."""
        if embedding is None or not self.lost:
            return None
        from refacex.faces.recognizers import get_recognizer

        sface = get_recognizer("sface")
        threshold = self.reid_threshold if self.reid_threshold is not None else sface.threshold
        best, best_s = None, threshold
        for tr in self.lost:
            if tr.embedding is None or frame - tr.last_frame > self.reid_frames:
                continue
            s = sface.similarity(embedding, tr.embedding)
            if s >= best_s:
                best, best_s = tr, s
        if best is not None:
            self.lost.remove(best)
            self.live.append(best)
            self.reidentified += 1
        return best

    def new_track(self, face: Face, frame: int, t: float, verdict: str) -> Track:
        tr = Track(id=len(self.all), box=face.box.astype(np.float64).copy(),
                   first_frame=frame, last_frame=frame, last_time=t, face=face,
                   verdict=verdict, kps_filter=OneEuro(self.min_cutoff, self.beta),
                   lm_filter=OneEuro(self.min_cutoff, self.beta), hits=0)
        self.all.append(tr)
        self.live.append(tr)
        return tr

    def observe(self, tr: Track, face: Face, frame: int, t: float, verdict: str) -> Face:
        """Record ``face`` (with landmarks) as ``tr`` in ``frame``; returns it smoothed."""
        gap = max(1, frame - tr.last_frame) if tr.hits else 1
        if tr.hits:
            step = (_centre(face.box) - _centre(tr.box)) / gap
            tr.velocity = 0.5 * tr.velocity + 0.5 * step
        scale = float(face.box[2])
        sm = copy.copy(face)
        sm.kps = tr.kps_filter(face.kps, t, scale).astype(np.float32)
        if face.landmarks is not None:
            sm.landmarks = tr.lm_filter(face.landmarks, t, scale).astype(np.float32)
        tr.box = face.box.astype(np.float64).copy()
        tr.last_frame, tr.last_time, tr.face = frame, t, sm
        tr.hits += 1
        tr.misses = 0
        if _RANK[verdict] > _RANK[tr.verdict]:
            tr.verdict = verdict
        return sm

    def end_frame(self, frame: int, seen: set[int]) -> list[Observation]:
        """Age the tracks not seen in ``frame``; the coasting ones are returned."""
        out = []
        for tr in list(self.live):
            if tr.id in seen:
                continue
            tr.misses += 1
            if tr.misses <= self.coast:
                d = tr.velocity * tr.misses
                out.append(Observation(tr, _shift_face(tr.face, d), coasting=True))
            if tr.misses > self.max_lost:
                self.live.remove(tr)
                self.lost.append(tr)
        self.lost = [tr for tr in self.lost if frame - tr.last_frame <= self.reid_frames]
        return out


EmbedFn = Callable[[Face], np.ndarray]
