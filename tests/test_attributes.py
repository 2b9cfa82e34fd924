"""face-api age/gender/expression port, and the ITA / greyscale helpers.

The port is checked against face-api itself: tests/data/faceapi_reference.json holds what
face-api's own code (on @tensorflow/tfjs) computed for the sample faces at fixed boxes
(scripts/check_faceapi_tfjs.py). Tolerances: the port measured 2e-5 years and 1.5e-6 in
probability from it (float32 summation order; the crop is bit-identical), so age 0.01 y
and probabilities 1e-4 leave ~100x for other CPUs' kernels, while the smallest real
preprocessing slip moves the outputs far more: a 1-px box shift changes age by 1.3 y
(median over the 16 crops) and cv2.resize instead of TF's resize by 0.04 y (median,
1.6 y max).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from refacex.faces.attributes import (
    EXPRESSIONS,
    AgeGenderEstimator,
    ExpressionEstimator,
    clip_box,
    face_attributes,
    face_attributes_batch,
    faceapi_crop,
    is_greyscale,
    ita_degrees,
    landmark_box,
)
from refacex.faces.detect import YuNetDetector
from refacex.faces.types import Face

REFERENCE = Path(__file__).parent / "data" / "faceapi_reference.json"
AGE_TOL = 0.01  # years
PROB_TOL = 1e-4


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return YuNetDetector()


def _face(box) -> Face:
    return Face(box=np.asarray(box, np.float32), score=1.0, kps=np.zeros((5, 2), np.float32))


# ------------------------------------------------------------------ against face-api
def test_matches_faceapi_reference(reference, t1, astronaut, tom):
    images = {"t1": t1, "astronaut": astronaut, "tom_hanks": tom}
    cases = reference["faces"]
    assert reference["expressions"] == list(EXPRESSIONS)
    assert len(cases) == 16  # 8 faces x (detector box, landmark box)
    crops = [faceapi_crop(images[c["sample"]], c["box"]) for c in cases]
    age, p_male = AgeGenderEstimator().predict(crops)
    probs = ExpressionEstimator().predict(crops)
    np.testing.assert_allclose(age, [c["age"] for c in cases], rtol=0, atol=AGE_TOL)
    np.testing.assert_allclose(p_male, [c["p_male"] for c in cases], rtol=0, atol=PROB_TOL)
    np.testing.assert_allclose(probs, [c["expressions"] for c in cases], rtol=0, atol=PROB_TOL)


def test_router_gives_the_reference_numbers(reference, astronaut):
    case = next(c for c in reference["faces"] if c["name"] == "astronaut:0:detector")
    a = face_attributes(astronaut, _face(case["box"]))
    assert abs(a.age - case["age"]) < AGE_TOL and abs(a.p_male - case["p_male"]) < PROB_TOL
    assert list(a.expression_probs) == list(EXPRESSIONS)
    assert a.expression == EXPRESSIONS[int(np.argmax(case["expressions"]))]
    assert abs(sum(a.expression_probs.values()) - 1) < 1e-4


# ------------------------------------------------------------------ plausible on samples
def test_astronaut_reads_female_and_tom_hanks_male(detector, astronaut, tom):
    (eileen,) = detector.detect(astronaut)
    (hanks,) = detector.detect(tom)
    a, b = face_attributes(astronaut, eileen), face_attributes(tom, hanks)
    assert a.gender == "female" and a.p_male < 0.5
    assert b.gender == "male" and b.p_male > 0.5
    assert 20 < a.age < 60 and 20 < b.age < 60  # adults (Collins was ~40, Hanks ~50+)
    assert a.expression == "happy" and b.expression == "happy"  # both smile


def test_group_photo_batch(detector, t1):
    faces = detector.detect(t1)
    got = face_attributes_batch(t1, faces)
    assert len(got) == len(faces) == 6
    assert all(5 < a.age < 70 and a.gender in ("male", "female") for a in got)
    one = face_attributes(t1, faces[2])
    assert abs(one.age - got[2].age) < AGE_TOL and abs(one.p_male - got[2].p_male) < PROB_TOL
    assert face_attributes_batch(t1, []) == []


# ------------------------------------------------------------------ crop semantics
def test_crop_square_112_region_is_taken_as_is():
    img = np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8)
    crop = faceapi_crop(img, (10.7, 20.2, 112.9, 112.5))  # floored to 10, 20, 112, 112
    np.testing.assert_array_equal(crop, img[20:132, 10:122, ::-1].astype(np.float32))


def test_crop_resize_is_tf_legacy_bilinear():
    # TF's resizeBilinear without half-pixel centres samples the top-left of each 2x2
    # cell when halving: no averaging (cv2.resize would average).
    img = np.random.default_rng(1).integers(0, 256, (224, 224, 3), np.uint8)
    crop = faceapi_crop(img, (0, 0, 224, 224))
    np.testing.assert_array_equal(crop, img[::2, ::2, ::-1].astype(np.float32))


def test_crop_pads_to_square_with_the_odd_pixel_after():
    img = np.full((112, 400, 3), 200, np.uint8)
    crop = faceapi_crop(img, (0, 0, 112, 109))  # 109 rows: 3 missing, 1 above, 2 below
    assert (crop[0] == 0).all() and (crop[1:110] == 200).all() and (crop[110:] == 0).all()
    crop = faceapi_crop(np.full((400, 400, 3), 50, np.uint8), (0, 0, 110, 112))  # columns
    assert (crop[:, 0] == 0).all() and (crop[:, 1:111] == 50).all() and (crop[:, 111] == 0).all()


def test_box_clipping_follows_faceapi():
    assert clip_box((-10.5, 5.9, 50, 30), 100, 80) == (0, 5, 39, 30)
    assert clip_box((90, 70, 50, 30), 100, 80) == (90, 70, 10, 10)
    with pytest.raises(ValueError):
        faceapi_crop(np.zeros((50, 50, 3), np.uint8), (60, 60, 10, 10))


def test_landmark_box_pads_a_fifth():
    pts = np.array([[10, 20], [50, 20], [30, 100]], np.float32)
    np.testing.assert_allclose(landmark_box(pts), [6, 12, 48, 96])


# ------------------------------------------------------------------ converter ops
def test_converter_pool_matmul_softmax_match_numpy(tmp_path):
    """The ops added for face-api, on a tiny graph: SAME max pool with the odd padding
    row/column at the end (ceil_mode), VALID average pool, flatten, MatMul + bias, softmax."""
    pytest.importorskip("onnx")
    from refacex.faces import tfjs

    rng = np.random.default_rng(0)
    w = {"wfc": rng.normal(size=(4, 3)).astype(np.float32),
         "bfc": rng.normal(size=3).astype(np.float32), "shape": np.array([-1, 4], np.int32)}
    n = tfjs.tf_node
    nodes = [n("x", "Placeholder", shape={"shape": {"dim": [
        {"size": "-1"}, {"size": "6"}, {"size": "6"}, {"size": "4"}]}}),
        n("wfc", "Const"), n("bfc", "Const"), n("shape", "Const"),
        n("mp", "MaxPool", ["x"], ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="SAME"),
        n("ap", "AvgPool", ["mp"], ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="VALID"),
        n("flat", "Reshape", ["ap", "shape"]), n("mm", "MatMul", ["flat", "wfc"]),
        n("logits", "BiasAdd", ["mm", "bfc"]), n("sm", "Softmax", ["logits"])]
    with pytest.raises(ValueError, match="also graph node names"):
        tfjs.graph_to_onnx(nodes, w, tmp_path / "t.onnx", {"sm": "sm"})
    tfjs.graph_to_onnx(nodes, w, tmp_path / "t.onnx", {"logits_out": "logits", "probs": "sm"})
    x = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    padded = np.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)], constant_values=-np.inf)  # TF SAME
    mp = np.empty((2, 3, 3, 4), np.float32)
    for i in range(3):
        for j in range(3):
            mp[:, i, j] = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max((1, 2))
    logits = mp.mean((1, 2)) @ w["wfc"] + w["bfc"]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    net = cv2.dnn.readNetFromONNX(str(tmp_path / "t.onnx"))
    net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    got_logits, got_probs = net.forward(["logits_out", "probs"])
    np.testing.assert_allclose(got_logits, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_probs, probs, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ colour helpers
def test_ita_degrees():
    assert ita_degrees(50, 10) == pytest.approx(0)
    assert ita_degrees(75, 25) == pytest.approx(45)
    assert ita_degrees(100, 0) == pytest.approx(90) and ita_degrees(0, 0) == pytest.approx(-90)
    np.testing.assert_allclose(ita_degrees(np.array([60.0, 40.0]), np.array([10.0, 10.0])),
                               [45, -45])
    # From a real pixel: light skin tone sRGB (224, 172, 150) is around ITA 40-50 ("light").
    lab = cv2.cvtColor(np.array([[[150, 172, 224]]], np.float32) / 255, cv2.COLOR_BGR2LAB)[0, 0]
    assert 30 < ita_degrees(lab[0], lab[2]) < 55


def test_is_greyscale(detector, astronaut, tom):
    (face,) = detector.detect(astronaut)
    assert is_greyscale(tom, detector.detect(tom)[0].box)  # that sample is monochrome
    assert not is_greyscale(astronaut, face.box) and not is_greyscale(astronaut)
    grey = cv2.cvtColor(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert is_greyscale(grey, face.box) and is_greyscale(grey)
    ok, jpg = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok and is_greyscale(cv2.imdecode(jpg, cv2.IMREAD_COLOR), face.box)
    assert is_greyscale(grey[:, :, 0]) and is_greyscale(grey.astype(np.float32) / 255)
    patched = astronaut.copy()  # grey face in a colour photo: the box decides
    x, y, w, h = clip_box(face.box, astronaut.shape[1], astronaut.shape[0])
    patched[y:y + h, x:x + w] = grey[y:y + h, x:x + w]
    assert is_greyscale(patched, face.box) and not is_greyscale(patched)
