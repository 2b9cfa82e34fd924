"""``FaceAnalyzer``: one call from an image to fully described ``Face`` objects.

Models load lazily and once; each stage is optional so callers pay only for what they
use (the anonymiser needs landmarks but no embeddings; the audit needs everything).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refacex.faces.detect import YuNetDetector
from refacex.faces.landmarks import Dlib68Landmarker
from refacex.faces.pose import estimate_pose
from refacex.faces.recognizers import get_recognizer
from refacex.faces.types import Face


class FaceAnalyzer:
    def __init__(self, score_threshold: float = 0.6) -> None:
        self.detector = YuNetDetector(score_threshold=score_threshold)
        self._landmarker: Dlib68Landmarker | None = None

    @property
    def landmarker(self) -> Dlib68Landmarker:
        if self._landmarker is None:
            self._landmarker = Dlib68Landmarker()
        return self._landmarker

    def describe(self, img: np.ndarray, face: Face, landmarks: bool = True, pose: bool = True,
                 recognizers: Sequence[str] = ()) -> Face:
        """Fill landmarks / pose / embeddings of an already located face (in place)."""
        if (landmarks or pose or "dlib" in recognizers) and face.landmarks is None:
            face.landmarks = self.landmarker.predict(img, face)
        if pose and face.landmarks is not None:
            face.pose = estimate_pose(face.landmarks, img.shape[:2])
        for name in recognizers:
            face.embeddings[name] = get_recognizer(name).embed(img, face)
        return face

    def analyze(self, img: np.ndarray, landmarks: bool = True, pose: bool = True,
                recognizers: Sequence[str] = ()) -> list[Face]:
        faces = self.detector.detect(img)
        for f in faces:
            self.describe(img, f, landmarks, pose, recognizers)
        return faces
