"""Face detection with YuNet (OpenCV's ``FaceDetectorYN``).

YuNet is tiny (120 kB int8), fast (~10 ms at 512²) and gives 5 landmarks per face,
which is all alignment needs. It runs at the image's own size (no 640x640 letterbox), so
small faces in large photos survive; images wider than ``max_side`` are scanned
downscaled, then also in overlapping full-resolution tiles so that ~20 px faces are not lost.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from refacex.faces.types import Face
from refacex.models import resolve


def _nms(faces: list[Face], iou_thresh: float = 0.4) -> list[Face]:
    faces = sorted(faces, key=lambda f: -f.score)
    kept: list[Face] = []
    for f in faces:
        x, y, w, h = f.box
        ok = True
        for k in kept:
            kx, ky, kw, kh = k.box
            ix = max(0.0, min(x + w, kx + kw) - max(x, kx))
            iy = max(0.0, min(y + h, ky + kh) - max(y, ky))
            inter = ix * iy
            # Intersection over the smaller box: a partial duplicate from another
            # scale or tile is suppressed even when its IoU is low.
            if inter / (min(w * h, kw * kh) + 1e-9) > iou_thresh:
                ok = False
                break
        if ok:
            kept.append(f)
    return kept


IOU_MATCH = 0.3  # a detection "at the original's location"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax0, ay0, aw, ah = (float(v) for v in a)
    bx0, by0, bw, bh = (float(v) for v in b)
    ix = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def nearest_centre(faces: list[Face], shape_hw: tuple[int, int]) -> Face:
    """The detection whose box centre is nearest the image centre: the face a
    one-person photo (an LFW or CelebA crop) is of. The audit's ``primary_index`` adds a
    size rule on top; the build scripts and benchmarks use this plain one."""
    h, w = shape_hw
    centre = np.array([w / 2, h / 2])
    return min(faces, key=lambda f: float(np.linalg.norm(f.box[:2] + f.box[2:] / 2 - centre)))


def match_detection(orig: Face, found: list[Face]) -> tuple[Face | None, float]:
    """The detection that overlaps ``orig`` most (IoU > ``IOU_MATCH``), and that IoU.

    The one definition of "the same face, found again" (after anonymisation, in the
    audit, the swap's privacy check and the demo)."""
    best, best_iou = None, 0.0
    for f in found:
        v = iou(orig.box, f.box)
        if v > best_iou:
            best, best_iou = f, v
    return (best, best_iou) if best_iou > IOU_MATCH else (None, best_iou)


class YuNetDetector:
    """Detects faces; ``detect(img)`` returns ``Face`` objects sorted left to right."""

    name = "yunet"

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 max_side: int = 2048, upscale_small: bool = True) -> None:
        self.score_threshold = score_threshold
        self.max_side = max_side
        self.upscale_small = upscale_small
        self._net = cv2.FaceDetectorYN.create(
            str(resolve("yunet")), "", (320, 320), score_threshold, nms_threshold, 5000
        )
        self._lock = threading.Lock()  # the OpenCV object keeps per-call input size

    def _run(self, img: np.ndarray, scale: float, ox: float = 0.0, oy: float = 0.0) -> list[Face]:
        h, w = img.shape[:2]
        with self._lock:
            self._net.setInputSize((w, h))
            _, rows = self._net.detect(img)
        out = []
        for r in [] if rows is None else rows:
            box = r[:4] / scale + np.array([ox, oy, 0, 0], np.float32)
            kps = r[4:14].reshape(5, 2) / scale + np.array([ox, oy], np.float32)
            out.append(Face(box=box.astype(np.float32), score=float(r[14]),
                            kps=kps.astype(np.float32)))
        return out

    def detect(self, img: np.ndarray) -> list[Face]:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError("expected a BGR image of shape (H, W, 3)")
        h, w = img.shape[:2]
        faces: list[Face] = []
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            small = cv2.resize(img, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA)
            faces += self._run(small, scale)
            # Tiles at full resolution catch faces too small for the downscaled pass.
            tile, step = self.max_side, self.max_side * 3 // 4
            for ty in range(0, max(1, h - tile // 4), step):
                for tx in range(0, max(1, w - tile // 4), step):
                    crop = img[ty:ty + tile, tx:tx + tile]
                    ch, cw = crop.shape[:2]
                    for f in self._run(np.ascontiguousarray(crop), 1.0, tx, ty):
                        # A face cut by an inner tile edge is found whole in a neighbour.
                        x, y, bw, bh = f.box
                        cut = ((x - tx < 2 and tx > 0) or (y - ty < 2 and ty > 0)
                               or (x + bw > tx + cw - 2 and tx + cw < w)
                               or (y + bh > ty + ch - 2 and ty + ch < h))
                        if not cut:
                            faces.append(f)
        elif self.upscale_small and max(h, w) < 160:
            # YuNet's smallest anchors are ~10 px at stride 8; tiny images (e.g. a
            # 112 px aligned crop) detect more reliably at 2x.
            big = cv2.resize(img, (w * 2, h * 2), interpolation=cv2.INTER_CUBIC)
            faces += self._run(big, 2.0)
        else:
            faces += self._run(img, 1.0)
        faces = _nms(faces)
        return sorted(faces, key=lambda f: (float(f.box[0]), float(f.box[1])))


_shared: dict[float, YuNetDetector] = {}


def _detector(score_threshold: float = 0.6) -> YuNetDetector:
    """A shared detector per threshold (for checks inside other stages)."""
    if score_threshold not in _shared:
        _shared[score_threshold] = YuNetDetector(score_threshold=score_threshold)
    return _shared[score_threshold]
