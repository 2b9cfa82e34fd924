"""Face recognisers behind one interface.

Two independent models, each with its *native* metric and published threshold, because
a privacy claim that holds for one recogniser says little about another:

* SFace (OpenCV Zoo, 128-d): cosine similarity; same person if >= 0.363.
* dlib ResNet (128-d): Euclidean distance; same person if < 0.6. Cosine is meaningless
  for it, so ``similarity`` is the negated distance and ``same_person`` uses L2.

``embed(img, face)`` aligns from the face's landmarks (which may be the *original*
face's landmarks: the audit's attacker who knows where the face is).
To add a third recogniser, subclass ``Recognizer`` and register it in ``RECOGNIZERS``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import cv2
import dlib
import numpy as np

from refacex.faces.types import Face
from refacex.models import resolve


class Recognizer(ABC):
    name: str
    metric: str  # "cosine" (higher = more alike) or "euclidean" (lower = more alike)
    threshold: float

    @abstractmethod
    def embed(self, img_bgr: np.ndarray, face: Face) -> np.ndarray:
        """Identity embedding of ``face`` in ``img_bgr``."""

    @abstractmethod
    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """Higher means more alike, for every recogniser (distances are negated)."""

    @abstractmethod
    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        """The recogniser's own decision at its published threshold."""

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        """The value in the recogniser's native unit (cosine, or L2 distance)."""
        return self.similarity(a, b)


class SFaceRecognizer(Recognizer):
    name = "sface"
    metric = "cosine"
    threshold = 0.363

    def __init__(self) -> None:
        self._net = cv2.FaceRecognizerSF.create(str(resolve("sface")), "")
        self._lock = threading.Lock()

    def embed(self, img_bgr: np.ndarray, face: Face) -> np.ndarray:
        row = np.concatenate([face.box, face.kps.reshape(-1), [face.score]]).astype(np.float32)
        with self._lock:
            crop = self._net.alignCrop(img_bgr, row[None])
            feat = self._net.feature(crop)
        v = feat.reshape(-1).astype(np.float32)
        return v / (np.linalg.norm(v) + 1e-12)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        return self.similarity(a, b) >= self.threshold


class DlibRecognizer(Recognizer):
    name = "dlib"
    metric = "euclidean"
    threshold = 0.6

    def __init__(self) -> None:
        from refacex.faces.landmarks import Dlib68Landmarker

        self._net = dlib.face_recognition_model_v1(str(resolve("dlib_resnet")))
        self._landmarker = Dlib68Landmarker()

    def embed(self, img_bgr: np.ndarray, face: Face) -> np.ndarray:
        from refacex.faces.landmarks import to_dlib_shape

        rgb = np.ascontiguousarray(img_bgr[:, :, ::-1])
        if face.landmarks is not None:
            shape = to_dlib_shape(face.landmarks, face)
        else:
            shape = self._landmarker.shape(rgb, face)
        return np.asarray(self._net.compute_face_descriptor(rgb, shape), np.float32)

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return -self.score(a, b)

    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        return self.score(a, b) < self.threshold


RECOGNIZERS: dict[str, type[Recognizer]] = {"sface": SFaceRecognizer, "dlib": DlibRecognizer}

_instances: dict[str, Recognizer] = {}
_lock = threading.Lock()


def get_recognizer(name: str) -> Recognizer:
    """Shared instance per process (the models take ~0.3 s to load)."""
    with _lock:
        if name not in _instances:
            if name not in RECOGNIZERS:
                raise KeyError(f"unknown recogniser {name!r}; known: {', '.join(RECOGNIZERS)}")
            _instances[name] = RECOGNIZERS[name]()
        return _instances[name]


def fingerprint(embedding: np.ndarray) -> str:
    """Short, non-invertible tag of an embedding, for logs (8 hex chars of a hash)."""
    import hashlib

    q = np.round(np.asarray(embedding, np.float32) * 64).astype(np.int8).tobytes()
    return hashlib.sha256(q).hexdigest()[:8]
