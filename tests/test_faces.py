"""Face analysis on real photos: detection, recognisers, alignment, landmarks, pose."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from refacex.audit.metrics import psnr
from refacex.faces import get_recognizer
from refacex.faces.align import paste_back, template, transform_points, warp_face
from refacex.faces.landmarks import eye_openness, mouth_openness
from refacex.faces.masks import face_mask
from refacex.faces.pose import _MODEL, PNP_POINTS, estimate_pose

RECOGNISERS = ["sface", "dlib"]


def test_detection_counts(analyzer, t1, astronaut, tom):
    assert len(analyzer.detector.detect(t1)) == 6
    assert len(analyzer.detector.detect(astronaut)) == 1
    assert len(analyzer.detector.detect(tom)) == 1


def test_detects_small_faces(analyzer, t1):
    # t1's faces are ~100 px wide; at 0.22x they are ~22 px.
    small = cv2.resize(t1, None, fx=0.22, fy=0.22, interpolation=cv2.INTER_AREA)
    faces = analyzer.detector.detect(small)
    assert len(faces) >= 5
    assert min(f.box[2] for f in faces) < 26


def test_large_image_is_tiled(analyzer, t1):
    # 3280x2486: above max_side, so the downscaled pass plus full-resolution tiles run.
    big = cv2.copyMakeBorder(t1, 800, 800, 1000, 1000, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    found = analyzer.detector.detect(big)
    ref = analyzer.detector.detect(t1)
    assert len(found) == 6
    for a, b in zip(found, ref, strict=True):
        assert np.abs(a.box[:2] - b.box[:2] - [1000, 800]).max() < 8


def test_no_face_gives_empty_result(analyzer):
    gradient = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    assert analyzer.detector.detect(cv2.merge([gradient] * 3)) == []


def _embed_main(analyzer, img, name):
    faces = analyzer.analyze(img, pose=False, recognizers=[name])
    assert faces, "face not detected"
    return max(faces, key=lambda f: f.box[2]).embeddings[name]


@pytest.mark.parametrize("name", RECOGNISERS)
def test_same_face_survives_jpeg_rescale_flip(analyzer, astronaut, name):
    rec = get_recognizer(name)
    ref = _embed_main(analyzer, astronaut, name)
    ok, buf = cv2.imencode(".jpg", astronaut, [cv2.IMWRITE_JPEG_QUALITY, 75])
    variants = {
        "jpeg75": cv2.imdecode(buf, cv2.IMREAD_COLOR),
        "half": cv2.resize(astronaut, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
        "flip": astronaut[:, ::-1].copy(),
    }
    for label, img in variants.items():
        emb = _embed_main(analyzer, img, name)
        assert rec.same_person(ref, emb), f"{name}: {label} judged a different person"


@pytest.mark.parametrize("name", RECOGNISERS)
def test_different_people_are_different(analyzer, t1, name):
    rec = get_recognizer(name)
    faces = analyzer.analyze(t1, pose=False, recognizers=[name])
    assert len(faces) == 6
    for a, b in itertools.combinations(faces, 2):
        assert not rec.same_person(a.embeddings[name], b.embeddings[name])


def test_recogniser_metrics_are_native():
    sface, dl = get_recognizer("sface"), get_recognizer("dlib")
    assert (sface.metric, sface.threshold) == ("cosine", 0.363)
    assert (dl.metric, dl.threshold) == ("euclidean", 0.6)
    a = np.zeros(128, np.float32)
    b = a.copy()
    b[0] = 0.59
    assert dl.same_person(a, b) and dl.score(a, b) == pytest.approx(0.59)
    b[0] = 0.61
    assert not dl.same_person(a, b)


def test_template_matches_sface_layout():
    assert np.allclose(template(112), [[38.2946, 51.6963], [73.5318, 51.5014],
                                       [56.0252, 71.7366], [41.5493, 92.3655],
                                       [70.7299, 92.2041]], atol=1e-3)
    t = template(256, padding=0.25)
    assert t[:, 0].min() > 256 * 0.25 and t[:, 0].max() < 256 * 0.75


def test_alignment_round_trip(analyzer, t1):
    for face in analyzer.analyze(t1, pose=False):
        aligned = warp_face(t1, face.kps, size=256, padding=0.25)
        # Least squares maps the landmark centroid exactly onto the template's centroid.
        mapped = transform_points(aligned.matrix, face.kps)
        assert np.abs(mapped.mean(0) - template(256, 0.25).mean(0)).max() < 0.5
        pasted = paste_back(t1, aligned.crop, aligned.matrix)
        region = face_mask(t1.shape[:2], face.landmarks) > 0
        assert psnr(pasted[region], t1[region]) > 35
        # Outside the pasted rectangle nothing changes.
        x, y, w, h = (int(v) for v in face.box)
        far = np.ones(t1.shape[:2], bool)
        far[max(0, y - 2 * h):y + 3 * h, max(0, x - 2 * w):x + 3 * w] = False
        assert np.array_equal(pasted[far], t1[far])


def test_landmarks_and_mask(analyzer, astronaut):
    face = analyzer.analyze(astronaut)[0]
    lm = face.landmarks
    assert lm.shape == (68, 2)
    x, y, w, h = face.box
    inside = (lm[:, 0] > x - 0.2 * w) & (lm[:, 0] < x + 1.2 * w) & (lm[:, 1] > y) & (
        lm[:, 1] < y + 1.2 * h)
    assert inside.all()
    # 5-point eyes agree with the 68-point eye centres within 10 % of the eye distance.
    eyes68 = np.array([lm[36:42].mean(0), lm[42:48].mean(0)])
    assert np.abs(eyes68 - face.kps[:2]).max() < 0.1 * face.inter_ocular
    mask = face_mask(astronaut.shape[:2], lm)
    pts = np.round(lm[17:]).astype(int)
    assert (mask[pts[:, 1], pts[:, 0]] > 0).mean() > 0.95
    assert 0.02 < mask.mean() / 255 < 0.2
    ears = eye_openness(lm)
    assert all(0.15 < e < 0.45 for e in ears)  # eyes open
    assert mouth_openness(lm) < 0.3


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (25, 0, 0), (-20, 10, 5), (10, -15, -10)])
def test_pose_recovers_synthetic_rotation(yaw, pitch, roll):
    # Project the 3D reference under a known rotation and check we read it back.
    # R = Rz(roll) Ry(-yaw) Rx(-pitch), matching estimate_pose's sign convention.
    def rx(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])

    def ry(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])

    def rz(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])

    r = rz(np.radians(roll)) @ ry(np.radians(-yaw)) @ rx(np.radians(-pitch))
    # Camera distance such that the focal prior (25 eye distances) is the true focal.
    pts3 = _MODEL @ r.T + np.array([0, 0, 25 * 7.10])
    f = 1200.0
    pts2 = pts3[:, :2] / pts3[:, 2:] * f + 500
    lm = np.zeros((68, 2))
    lm[PNP_POINTS] = pts2
    # Fill the other eye points with the corner midpoints (the prior reads eye centres).
    lm[[37, 38, 40, 41]] = pts2[4:6].mean(0)
    lm[[43, 44, 46, 47]] = pts2[6:8].mean(0)
    pose = estimate_pose(lm, (1000, 1000))
    assert pose.yaw == pytest.approx(yaw, abs=3)
    assert pose.pitch == pytest.approx(pitch, abs=3)
    assert pose.roll == pytest.approx(roll, abs=3)


def test_pose_on_real_faces(analyzer, astronaut):
    face = analyzer.analyze(astronaut)[0]
    # A frontal portrait (shot from slightly below, hence some pitch).
    assert abs(face.pose.yaw) < 15 and abs(face.pose.roll) < 15 and abs(face.pose.pitch) < 25
    mirrored = analyzer.analyze(astronaut[:, ::-1].copy())[0]
    assert mirrored.pose.yaw == pytest.approx(-face.pose.yaw, abs=4)
    assert mirrored.pose.pitch == pytest.approx(face.pose.pitch, abs=4)
    assert mirrored.pose.roll == pytest.approx(-face.pose.roll, abs=4)
