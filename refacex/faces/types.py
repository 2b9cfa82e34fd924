"""Plain data objects for detected faces (like insightface's ``Face``).

A ``Face`` is what every later stage consumes: the anonymisers read its landmarks,
the payload stores its alignment, the audit compares its embeddings. Keeping it a
plain dataclass of numpy arrays keeps the stages decoupled from the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Pose:
    """Head pose in degrees. yaw > 0: face turned towards image right; pitch > 0: looking
    down; roll > 0: head tilted clockwise in the image."""

    yaw: float
    pitch: float
    roll: float

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.yaw, self.pitch, self.roll)


@dataclass
class Face:
    """One detected face.

    ``kps`` are YuNet's 5 points in image pixels, in this order: eye on the image's left
    (the person's right eye), eye on the image's right, nose tip, mouth corner on the
    image's left, mouth corner on the image's right — the same order as the ArcFace /
    SFace alignment template.
    """

    box: np.ndarray  # (4,) x, y, w, h in pixels, float32
    score: float
    kps: np.ndarray  # (5, 2) float32
    landmarks: np.ndarray | None = None  # (68, 2) float32, iBUG 300-W order
    pose: Pose | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def inter_ocular(self) -> float:
        """Distance between the eye centres in pixels (the usual normaliser for errors)."""
        if self.landmarks is not None:
            a = self.landmarks[36:42].mean(0)
            b = self.landmarks[42:48].mean(0)
            return float(np.linalg.norm(a - b))
        return float(np.linalg.norm(self.kps[0] - self.kps[1]))

    def to_dict(self) -> dict:
        """JSON-friendly summary (no embeddings: they are biometric data)."""
        out = {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "kps": np.round(self.kps, 1).tolist(),
            "landmarks": 0 if self.landmarks is None else len(self.landmarks),
        }
        if self.pose is not None:
            out["pose"] = {k: round(v, 1) for k, v in vars(self.pose).items()}
        return out
