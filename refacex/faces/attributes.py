"""Perceived age, gender and expression of a face (face-api), and skin-tone helpers.

Why: the swap must keep what a viewer perceives (apparent age, gender presentation,
expression) while changing identity, and the audit has to measure that with models the
swap does not use. The estimators are face-api's (npm ``@vladmandic/face-api@1.7.15``,
MIT; the weights of Vincent Muehler's face-api.js): a TinyXception regressing age with a
2-way gender softmax, and a 4-dense-block net with a 7-way expression softmax, both 112 px.
These are *perceived* attributes from face appearance, trained on web photos: a male
probability is not a person's gender, and age is accurate to several years at best.

face-api ships only weights (a manifest + one uint8-quantised shard per net); the
architecture is face-api's code (``src/xception/TinyXception.ts``,
``src/faceFeatureExtractor/denseBlock.ts``, ``src/ageGenderNet``,
``src/faceExpressionNet``). It is rewritten below as TF graph nodes, converted to ONNX by
``refacex.faces.tfjs`` once, cached (``refacex.models.cache.derived``) and run by
``cv2.dnn``: no Node, no TensorFlow at run time. ``scripts/check_faceapi_tfjs.py`` checks
the result against face-api itself.

Preprocessing is face-api's (``extractFaceTensors`` + ``NetInput.toBatchTensor(112, true)``
+ ``normalize``): the box is clipped to the image and floored, the crop is zero-padded to a
square (the odd pixel first), resized with TF's legacy bilinear (no half-pixel centres),
RGB minus the mean (122.782, 117.001, 104.298), divided by 255. The box is our detector's
(YuNet) unless ``box`` says otherwise; ``landmark_box`` gives face-api's own
landmark-based box (``FaceLandmarks.align``) for faces with 68 landmarks.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from refacex.faces.types import Face
from refacex.models.cache import derived

#: Part of the derived-cache key of the converted nets: bump when the graphs below change.
GRAPH_VERSION = "1"
INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)
EXPRESSIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


# ------------------------------------------------------------------ architecture as nodes
class _Graph:
    """Collects TF graph nodes for face-api's layer helpers (names follow the weights)."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        from refacex.faces.tfjs import tf_node

        self._node = tf_node
        self.weights = dict(weights)
        self.nodes: list[dict[str, Any]] = [
            tf_node("image", "Placeholder", shape={"shape": {"dim": [
                {"size": "-1"}, {"size": str(INPUT_SIZE)}, {"size": str(INPUT_SIZE)},
                {"size": "3"}]}})]
        self._consts: set[str] = set()

    def const(self, name: str, value: np.ndarray | None = None) -> str:
        if value is not None:
            self.weights[name] = value
        if name not in self._consts:
            self._consts.add(name)
            self.nodes.append(self._node(name, "Const"))
        return name

    def op(self, name: str, op: str, inputs: list[str], **attrs: Any) -> str:
        self.nodes.append(self._node(name, op, inputs, **attrs))
        return name

    def relu(self, x: str, name: str) -> str:
        return self.op(name, "Relu", [x])

    def add(self, a: str, b: str, name: str) -> str:
        return self.op(name, "Add", [a, b])

    def conv(self, x: str, p: str, stride: int) -> str:
        """``tf.add(tf.conv2d(x, filters, stride, 'same'), bias)``."""
        y = self.op(f"{p}/conv", "Conv2D", [x, self.const(f"{p}/filters")],
                    strides=[1, stride, stride, 1], padding="SAME")
        return self.op(f"{p}/out", "Add", [y, self.const(f"{p}/bias")])

    def sep(self, x: str, p: str, stride: int) -> str:
        """face-api ``depthwiseSeparableConv``: separableConv2d 'same' + bias."""
        d = self.op(f"{p}/dw", "DepthwiseConv2dNative", [x, self.const(f"{p}/depthwise_filter")],
                    strides=[1, stride, stride, 1], padding="SAME")
        y = self.op(f"{p}/pw", "Conv2D", [d, self.const(f"{p}/pointwise_filter")],
                    strides=[1, 1, 1, 1], padding="VALID")
        return self.op(f"{p}/out", "Add", [y, self.const(f"{p}/bias")])

    def pool_fc(self, x: str, fc: str, name: str) -> str:
        """``avgPool(7, 2, 'valid')`` (the whole 7x7 map) -> (N, C) -> ``x @ W + b``."""
        if f"{name}/pool" not in {n["name"] for n in self.nodes}:
            self.op(f"{name}/pool", "AvgPool", [x], ksize=[1, 7, 7, 1], strides=[1, 2, 2, 1],
                    padding="VALID")
            channels = self.weights[f"{fc}/weights"].shape[0]
            self.op(f"{name}/flat", "Reshape", [f"{name}/pool", self.const(
                f"{name}/shape", np.array([-1, channels], np.int32))])
        y = self.op(f"{fc}/matmul", "MatMul", [f"{name}/flat", self.const(f"{fc}/weights")])
        return self.op(f"{fc}/out", "Add", [y, self.const(f"{fc}/bias")])


def _age_gender_graph(g: _Graph) -> dict[str, str]:
    """face-api ``AgeGenderNet`` on ``TinyXception(2)``."""

    def reduction(x: str, p: str, activate: bool = True) -> str:
        out = g.relu(x, f"{p}/in_relu") if activate else x
        out = g.sep(out, f"{p}/separable_conv0", 1)
        out = g.sep(g.relu(out, f"{p}/relu1"), f"{p}/separable_conv1", 1)
        out = g.op(f"{p}/maxpool", "MaxPool", [out], ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1],
                   padding="SAME")
        return g.add(out, g.conv(x, f"{p}/expansion_conv", 2), f"{p}/sum")

    def main(x: str, p: str) -> str:
        out = x
        for i in range(3):
            out = g.sep(g.relu(out, f"{p}/relu{i}"), f"{p}/separable_conv{i}", 1)
        return g.add(out, x, f"{p}/sum")

    out = g.relu(g.conv("image", "entry_flow/conv_in", 2), "entry_flow/relu")
    out = reduction(out, "entry_flow/reduction_block_0", activate=False)
    out = reduction(out, "entry_flow/reduction_block_1")
    for i in range(2):
        out = main(out, f"middle_flow/main_block_{i}")
    out = reduction(out, "exit_flow/reduction_block")
    out = g.relu(g.sep(out, "exit_flow/separable_conv", 1), "exit_flow/relu")
    age = g.pool_fc(out, "fc/age", "head")
    gender = g.op("fc/gender/softmax", "Softmax", [g.pool_fc(out, "fc/gender", "head")])
    return {"age": age, "gender": gender}


def _expression_graph(g: _Graph) -> dict[str, str]:
    """face-api ``FaceExpressionNet``: ``FaceFeatureExtractor`` (4 x ``denseBlock4``) + fc."""
    out = "image"
    for i in range(4):
        p = f"dense{i}"
        if i == 0:
            out1 = g.relu(g.conv(out, f"{p}/conv0", 2), f"{p}/relu1")
        else:
            out1 = g.relu(g.sep(out, f"{p}/conv0", 2), f"{p}/relu1")
        out2 = g.sep(out1, f"{p}/conv1", 1)
        in3 = g.relu(g.add(out1, out2, f"{p}/sum3"), f"{p}/relu3")
        out3 = g.sep(in3, f"{p}/conv2", 1)
        in4 = g.relu(g.add(out1, g.add(out2, out3, f"{p}/sum23"), f"{p}/sum4"), f"{p}/relu4")
        out4 = g.sep(in4, f"{p}/conv3", 1)
        s34 = g.add(out3, out4, f"{p}/sum34")
        out = g.relu(g.add(out1, g.add(out2, s34, f"{p}/sum234"), f"{p}/sum"), f"{p}/relu")
    probs = g.op("fc/softmax", "Softmax", [g.pool_fc(out, "fc", "head")])
    return {"probs": probs}


_NETS = {
    "age_gender": ("faceapi_age_gender.onnx", "faceapi_age_gender", _age_gender_graph),
    "expression": ("faceapi_expression.onnx", "faceapi_expression", _expression_graph),
}


def faceapi_onnx(net: str) -> Path:
    """The ONNX file of face-api net ``net`` ('age_gender' or 'expression'), built once."""
    import json

    from refacex.faces import tfjs

    filename, stem, build_graph = _NETS[net]

    def build(src: list[Path], out: Path) -> None:
        manifest = json.loads(src[0].read_text())
        g = _Graph(tfjs.read_weights({"weightsManifest": manifest}, [src[1]]))
        outputs = build_graph(g)
        tfjs.graph_to_onnx(g.nodes, g.weights, out, outputs, graph_name=stem)

    return derived(filename, (f"{stem}_manifest", f"{stem}_bin"), build,
                   f"{tfjs.CONVERTER_VERSION}/{GRAPH_VERSION}")


# ------------------------------------------------------------------ preprocessing
def clip_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """face-api ``Box.clipAtImageBorders``: clip x, y, w, h to the image, then floor."""
    x, y, w, h = (float(v) for v in box)
    cx, cy = max(x, 0.0), max(y, 0.0)
    cw, ch = min(x + w - cx, width - cx), min(y + h - cy, height - cy)
    return math.floor(cx), math.floor(cy), math.floor(cw), math.floor(ch)


def landmark_box(landmarks: np.ndarray, padding: float = 0.2) -> np.ndarray:
    """face-api's ``alignedRect``: the 68 points' bounding box grown by ``padding`` of its
    size (what face-api crops when landmarks are known; ``FaceLandmarks.alignMinBbox``)."""
    lo, hi = np.min(landmarks, 0), np.max(landmarks, 0)
    w, h = hi - lo
    return np.array([lo[0] - w * padding / 2, lo[1] - h * padding / 2,
                     w * (1 + padding), h * (1 + padding)], np.float32)


def _resize_bilinear_tf(img: np.ndarray, size: int) -> np.ndarray:
    """``tf.image.resizeBilinear(x, [size, size], alignCorners=false, halfPixelCenters=false)``
    exactly: sample ``dst * in/out``. cv2.resize uses half-pixel centres (a shift of
    (in/out - 1)/2 source pixels) and fixed-point weights."""
    h, w = img.shape[:2]
    src = img.astype(np.float64)

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = np.arange(size) * (n_in / size)
        lo = np.floor(f).astype(int)
        return lo, np.minimum(np.ceil(f).astype(int), n_in - 1), (f - lo)

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    fx = fx[None, :, None]
    top = src[y0][:, x0] + (src[y0][:, x1] - src[y0][:, x0]) * fx
    bottom = src[y1][:, x0] + (src[y1][:, x1] - src[y1][:, x0]) * fx
    return (top + (bottom - top) * fy[:, None, None]).astype(np.float32)


def faceapi_crop(img_bgr: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """(112, 112, 3) float32 RGB 0..255: the face as face-api's ``toBatchTensor`` makes it."""
    x, y, w, h = clip_box(box, img_bgr.shape[1], img_bgr.shape[0])
    if w <= 0 or h <= 0:
        raise ValueError(f"face box {list(box)} lies outside the image")
    crop = img_bgr[y:y + h, x:x + w, ::-1].astype(np.float32)
    diff = abs(h - w)
    if diff:  # padToSquare(centre): round(diff / 2) zeros after, the rest before
        after = math.floor(diff * 0.5 + 0.5)
        pad = [(diff - after, after), (0, 0)] if h < w else [(0, 0), (diff - after, after)]
        crop = np.pad(crop, [*pad, (0, 0)])
    if crop.shape[0] != INPUT_SIZE:
        crop = _resize_bilinear_tf(crop, INPUT_SIZE)
    return crop


def to_blob(crops: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 3, 112, 112) network input: (RGB - mean) / 255, float32 as face-api computes it."""
    x = (np.stack(crops).astype(np.float32) - np.asarray(MEAN_RGB, np.float32)) / np.float32(255)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ------------------------------------------------------------------ estimators
class _OnnxNet:
    outputs: tuple[str, ...]
    net: str

    def __init__(self) -> None:
        self._net = cv2.dnn.readNetFromONNX(str(faceapi_onnx(self.net)))
        self._lock = threading.Lock()

    def _run(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            self._net.setInput(to_blob(crops))
            return [np.asarray(o, np.float32) for o in self._net.forward(list(self.outputs))]


class AgeGenderEstimator(_OnnxNet):
    """face-api AgeGenderNet: perceived age in years and P(male), from 112 px crops."""

    net = "age_gender"
    outputs = ("age", "gender")

    def predict(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(ages (N,), p_male (N,)) for ``faceapi_crop`` outputs."""
        age, gender = self._run(crops)
        return age.reshape(-1), gender.reshape(len(crops), 2)[:, 0]


class ExpressionEstimator(_OnnxNet):
    """face-api FaceExpressionNet: probabilities of ``EXPRESSIONS``, from 112 px crops."""

    net = "expression"
    outputs = ("probs",)

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 7) softmax over ``EXPRESSIONS``."""
        return self._run(crops)[0].reshape(len(crops), len(EXPRESSIONS))


@dataclass
class Attributes:
    """What a viewer would perceive; ``p_male`` > 0.5 reads as 'male' (face-api's rule)."""

    p_male: float
    gender: str
    age: float
    expression: str
    expression_probs: dict[str, float] = field(default_factory=dict)


_estimators: dict[str, Any] = {}
_lock = threading.Lock()


def _estimator(cls: type[_OnnxNet]) -> Any:
    with _lock:
        if cls.net not in _estimators:
            _estimators[cls.net] = cls()
        return _estimators[cls.net]


def face_attributes(img_bgr: np.ndarray, face: Face,
                    box: Sequence[float] | None = None) -> Attributes:
    """Perceived gender, age and expression of ``face``, cropped at ``box`` (default: the
    detector's box; pass ``landmark_box(face.landmarks)`` for face-api's own crop)."""
    return face_attributes_batch(img_bgr, [face], None if box is None else [box])[0]


def face_attributes_batch(img_bgr: np.ndarray, faces: Sequence[Face],
                          boxes: Sequence[Sequence[float]] | None = None) -> list[Attributes]:
    """``face_attributes`` for several faces of one image in one forward pass per net."""
    if not faces:
        return []
    crops = [faceapi_crop(img_bgr, b) for b in (boxes or [f.box for f in faces])]
    ages, p_male = _estimator(AgeGenderEstimator).predict(crops)
    probs = _estimator(ExpressionEstimator).predict(crops)
    return [Attributes(p_male=float(pm), gender="male" if pm > 0.5 else "female",
                       age=float(a), expression=EXPRESSIONS[int(np.argmax(p))],
                       expression_probs={e: float(v) for e, v in zip(EXPRESSIONS, p, strict=True)})
            for a, pm, p in zip(ages, p_male, probs, strict=True)]


# ------------------------------------------------------------------ colour helpers
def ita_degrees(lab_L: Any, lab_b: Any) -> Any:
    """Individual Typology Angle, ``atan2(L* - 50, b*)`` in degrees (L* in 0..100).

    The usual skin-tone scale (> 55 very light ... < -30 dark). cv2's Lab of a *uint8*
    image has L* scaled to 0..255: convert a float32 image in 0..1 instead, or scale.
    """
    return np.degrees(np.arctan2(np.asarray(lab_L, np.float64) - 50.0,
                                 np.asarray(lab_b, np.float64)))


def is_greyscale(img: np.ndarray, box: Sequence[float] | None = None, tol: float = 3.0) -> bool:
    """True when the colour channels are nearly equal in ``box`` (default: the whole image):
    a monochrome photo (the Tom Hanks sample is one), whose swapped face must stay
    monochrome. ``tol`` is the mean per-pixel channel spread (max - min) allowed, in 0..255
    levels: a grey photo re-encoded as colour JPEG stays near 0, the colour sample faces
    spread 56-98."""
    if img.ndim == 2 or img.shape[2] == 1:
        return True
    region = img
    if box is not None:
        x, y, w, h = clip_box(box, img.shape[1], img.shape[0])
        region = img[y:y + max(h, 1), x:x + max(w, 1)]
    c = region[..., :3].astype(np.float32)
    if img.dtype != np.uint8 and c.size and float(c.max()) <= 1.0:
        c = c * 255.0
    return bool(c.size) and float((c.max(-1) - c.min(-1)).mean()) <= tol


def glasses_score(crop_bgr: np.ndarray, lm: np.ndarray) -> float:
    """How much a face looks like it wears glasses, from its 68 landmarks: the
    vertical-gradient energy on the nose bridge between the eyes (a frame's bridge is a
    horizontal bar there) over that of the bare nose below (same face, same light).
    Bare faces score ~1-1.5, glasses >= ~1.7 (checked by eye on 250 generated faces);
    sunglasses also darken the eye openings (``eye_darkness``)."""
    g = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gy = np.abs(cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
    iod = float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))
    c = (lm[39] + lm[42]) / 2
    x0, x1 = int(c[0] - 0.12 * iod), int(c[0] + 0.12 * iod)
    y0, y1 = int(c[1] - 0.25 * iod), int(c[1] + 0.05 * iod)
    nose = gy[int(lm[29, 1]):int(lm[30, 1]), int(lm[31, 0]):int(lm[35, 0])]
    bridge = gy[max(0, y0):y1, max(0, x0):x1]
    if bridge.size == 0 or nose.size == 0:
        return 0.0
    return float(bridge.mean() / (nose.mean() + 1.0))


def eye_darkness(crop_bgr: np.ndarray, lm: np.ndarray) -> float:
    """Mean grey level of the eye openings over that of the cheeks below them: ~0.6-0.9
    for bare eyes, well under 0.45 behind dark lenses."""
    g = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    eyes = np.zeros(g.shape, np.uint8)
    for sl in (slice(36, 42), slice(42, 48)):
        cv2.fillPoly(eyes, [np.round(lm[sl]).astype(np.int32)], 255)
    cheeks = np.zeros(g.shape, np.uint8)
    for idx in ((1, 2, 3, 31, 39, 40, 41), (13, 14, 15, 35, 42, 47, 46)):
        cv2.fillConvexPoly(cheeks, cv2.convexHull(np.round(lm[list(idx)]).astype(np.int32)), 255)
    if not eyes.any() or not cheeks.any():
        return 1.0
    return float(g[eyes > 0].mean() / (g[cheeks > 0].mean() + 1e-6))
