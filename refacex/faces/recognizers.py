"""Face recognisers behind one interface.

Three independent models, each with its *native* metric and threshold, because a privacy
claim that holds for one recogniser says little about another:

* SFace (OpenCV Zoo, 128-d): cosine similarity; same person if >= 0.363.
* dlib ResNet (128-d): Euclidean distance; same person if < 0.6. Cosine is meaningless
  for it, so ``similarity`` is the negated distance and ``same_person`` uses L2.
* HSE FaceRes (1024-d MobileNet trained on VGGFace2): cosine of mean-centred features.
  The swap anonymiser queries SFace and dlib, never FaceRes, so FaceRes is the audit's
  attacker that the anonymiser could not have optimised against.

``embed(img, face)`` aligns from the face's landmarks (which may be the *original*
face's landmarks: the audit's attacker who knows where the face is).
To add another recogniser, subclass ``Recognizer`` and register it in ``RECOGNIZERS``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import dlib
import numpy as np

from refacex.faces.align import warp_face
from refacex.faces.types import Face
from refacex.models import resolve
from refacex.models.cache import derived


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


FACERES_MEAN_PATH = Path(__file__).resolve().parents[1] / "data" / "faceres_mean.npy"


def faceres_onnx() -> Path:
    """The FaceRes ONNX file, converted from the cached TF.js model on first use."""
    from refacex.faces import tfjs

    def build(src: list[Path], out: Path) -> None:
        tfjs.convert(src[0], out, "global_pooling/Mean", bin_paths=[src[1]])

    return derived("faceres.onnx", ("faceres_json", "faceres_bin"), build,
                   tfjs.CONVERTER_VERSION)


class FaceResRecognizer(Recognizer):
    """HSE FaceRes (Savchenko; 1024-d MobileNet v1 features, VGGFace2 identities).

    Input as in the authors' code (HSE_FaceRec_tf ``facial_analysis.py``, Keras
    ``preprocess_input`` 'caffe' mode): 224x224 BGR, minus the ImageNet channel means, no
    scaling. (The Human JS library feeds RGB 0..255 instead: TAR at FAR 1 % on CelebA-id
    test pairs 0.76, against 0.88 with the authors' input.) The authors crop the detector
    box + 10 px, unaligned (0.88 too); here the crop is the 5-point similarity alignment
    (``warp_face``), from the same 5 points that the anonymisers and the audit's
    known-location attacker use, with ``padding`` context: 0.07 was the best of
    -0.1/0/0.07/0.15/0.3 on CelebA-id test pairs (TAR at FAR 1 %: 0.83/0.88/0.88/0.87/0.77;
    ``scripts/build_faceres_mean.py --paddings``).

    The raw features are ReLU6 activations averaged over the image, all positive, so
    every pair of faces has a high raw cosine; subtracting a fixed mean over many faces
    (``refacex/data/faceres_mean.npy``: LFW one-photo people + CelebA-id train, never the
    LFW evaluation people) makes cosine discriminative.

    ``threshold`` 0.27 is the best-accuracy threshold on the LFW eval pairs (0.266), so it
    is calibrated on evaluation data: acceptable for an audit-only attacker, whose
    threshold is its decision rule rather than a claim about its accuracy. CelebA-id test
    pairs (other people) agree: best balanced accuracy at 0.22, FAR 1 % at 0.28. On the
    LFW pairs it gives 98.5 % accuracy, FAR 1.5 % (``benchmarks/bench_faceres.py``).
    """

    name = "faceres"
    metric = "cosine"
    threshold = 0.27
    size = 224
    padding = 0.07
    mean_bgr = (103.939, 116.779, 123.68)

    def __init__(self) -> None:
        self._net = cv2.dnn.readNetFromONNX(str(faceres_onnx()))
        self._mean = (np.load(FACERES_MEAN_PATH).astype(np.float32)
                      if FACERES_MEAN_PATH.is_file() else None)
        self._lock = threading.Lock()

    def crop(self, img_bgr: np.ndarray, face: Face) -> np.ndarray:
        return warp_face(img_bgr, face.kps, self.size, self.padding).crop

    def raw_features(self, crops: list[np.ndarray]) -> np.ndarray:
        """(N, 1024) uncentred network outputs for aligned ``size``-px BGR crops."""
        blob = cv2.dnn.blobFromImages(crops, 1.0, (self.size, self.size), self.mean_bgr,
                                      swapRB=False, crop=False)
        with self._lock:
            self._net.setInput(blob)
            return self._net.forward().astype(np.float32)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        if self._mean is None:
            raise FileNotFoundError(f"{FACERES_MEAN_PATH} missing: run "
                                    "scripts/build_faceres_mean.py")
        v = raw - self._mean
        return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-12)

    def embed(self, img_bgr: np.ndarray, face: Face) -> np.ndarray:
        return self.normalize(self.raw_features([self.crop(img_bgr, face)])[0])

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        return self.similarity(a, b) >= self.threshold


RECOGNIZERS: dict[str, type[Recognizer]] = {
    "sface": SFaceRecognizer, "dlib": DlibRecognizer, "faceres": FaceResRecognizer}

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
