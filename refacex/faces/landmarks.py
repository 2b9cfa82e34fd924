"""Dense landmarks: dlib's 68-point shape predictor (iBUG 300-W layout).

Why dlib-68 and not MediaPipe's 478-point mesh: dlib is already a dependency (its ResNet
is our second, independent recogniser), the predictor runs in ~2 ms per face, and its
68 points carry exactly what the product needs — jaw line and brows for the face mask,
eye and lip contours for expression (eye/mouth openness), and a well-known 3D reference
for head pose. MediaPipe would add protobuf/matplotlib pins and a second OpenCV for
points we would mostly not use.
"""

from __future__ import annotations

import threading

import dlib
import numpy as np

from refacex.faces.types import Face
from refacex.models import resolve

# Index groups of the 68-point layout.
JAW = slice(0, 17)
BROW_R, BROW_L = slice(17, 22), slice(22, 27)  # image-left brow, image-right brow
NOSE = slice(27, 36)
EYE_R, EYE_L = slice(36, 42), slice(42, 48)
MOUTH_OUTER, MOUTH_INNER = slice(48, 60), slice(60, 68)


def dlib_box(face: Face) -> dlib.rectangle:
    """A box in the style the predictor was trained on (dlib's HOG detector): square,
    brows to chin, centred between eyes and mouth. YuNet's taller box (it includes the
    forehead) makes the predictor drift; this one is derived from the 5 points."""
    eyes = face.kps[:2].mean(0)
    mouth = face.kps[3:5].mean(0)
    cx, cy = (eyes + mouth) / 2.0
    side = max(float(face.box[2]) * 1.05,
               2.1 * max(float(np.linalg.norm(face.kps[0] - face.kps[1])),
                         float(np.linalg.norm(mouth - eyes))) * 0.9)
    cy -= 0.02 * side
    return dlib.rectangle(int(round(cx - side / 2)), int(round(cy - side / 2)),
                          int(round(cx + side / 2)), int(round(cy + side / 2)))


class Dlib68Landmarker:
    """``predict(img_bgr, face) -> (68, 2) float32``; also keeps the dlib shape for dlib's
    recogniser, which aligns from it."""

    name = "dlib68"
    #: One predictor per process (a 100 MB model, ~1 s to load): the analyser, the swap
    #: and dlib's recogniser each make a landmarker, and the video engines copy the swap.
    _shared: dlib.shape_predictor | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        with Dlib68Landmarker._lock:
            if Dlib68Landmarker._shared is None:
                Dlib68Landmarker._shared = dlib.shape_predictor(
                    str(resolve("dlib_landmarks68")))
        self._sp = Dlib68Landmarker._shared

    def shape(self, rgb: np.ndarray, face: Face) -> dlib.full_object_detection:
        return self._sp(rgb, dlib_box(face))

    def predict(self, img_bgr: np.ndarray, face: Face) -> np.ndarray:
        rgb = np.ascontiguousarray(img_bgr[:, :, ::-1])
        s = self.shape(rgb, face)
        return np.array([[p.x, p.y] for p in s.parts()], dtype=np.float32)


def to_dlib_shape(landmarks: np.ndarray, face: Face) -> dlib.full_object_detection:
    """Wrap known landmarks as a dlib shape (to embed a face at *given* landmarks)."""
    pts = dlib.points()
    for x, y in np.asarray(landmarks):
        pts.append(dlib.point(int(round(float(x))), int(round(float(y)))))
    return dlib.full_object_detection(dlib_box(face), pts)


def eye_openness(lm: np.ndarray) -> tuple[float, float]:
    """Eye aspect ratio (Soukupová & Čech) of each eye: ~0.3 open, ~0.05 closed."""
    def ear(e: np.ndarray) -> float:
        return float((np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4]))
                     / (2.0 * np.linalg.norm(e[0] - e[3]) + 1e-9))
    return ear(lm[EYE_R]), ear(lm[EYE_L])


def mouth_openness(lm: np.ndarray) -> float:
    """Inner-lip gap over mouth width: 0 closed, ~0.5 wide open."""
    inner = lm[MOUTH_INNER]
    gap = np.linalg.norm(inner[[1, 2, 3]] - inner[[7, 6, 5]], axis=1).mean()
    width = np.linalg.norm(lm[48] - lm[54]) + 1e-9
    return float(gap / width)
