"""Low-confidence detections get a second opinion: a face is never left identifiable
because YuNet was unsure, and a hand or a torso never gets a face pasted on it.

The cases are cut from the bundled t1 group photo (no shared data needed):

* a hand holding a poker chip, upscaled 3x: YuNet calls it a face at 0.68, which the old
  0.6 threshold swapped;
* a torso with long hair, YuNet 0.49: nothing there to anonymise;
* a real face cut in half by the right border, YuNet 0.56, which the old default left.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from refacex.errors import NoFaceError
from refacex.faces.confirm import (
    CONFIDENT,
    FACE,
    NOT_FACE,
    PLAUSIBLE,
    FaceConfirmer,
    action_for,
)
from refacex.faces.detect import YuNetDetector, iou
from refacex.payload.keyring import SealKeys
from refacex.payload.sitekeys import SiteKey
from refacex.pipeline import LOW_FLOOR, anonymize

OLD_THRESHOLD = 0.6  # swapped at or above, left below, before the second opinion


@pytest.fixture(scope="module")
def seal() -> SealKeys:
    key = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    return SealKeys(recipients=[key.public_key()], site=SiteKey(bytes(range(32, 64))))


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return YuNetDetector(score_threshold=LOW_FLOOR)


@pytest.fixture(scope="module")
def hand(t1) -> np.ndarray:
    """A hand holding a chip below a face of t1, upscaled as a crop of a photo would be."""
    return cv2.resize(t1[487:670, 699:895], None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def torso(t1) -> np.ndarray:
    """Chest, long hair and a neckline under the left-most face of t1."""
    return np.ascontiguousarray(t1[408:600, 7:219])


@pytest.fixture(scope="module")
def half_face(t1) -> np.ndarray:
    """t1 cut through the right-most face: half a face at the border, 5 whole faces."""
    return np.ascontiguousarray(t1[:, :1174])


def _only(items: list, box: tuple[float, ...]):
    """The one detection (or per-face report) at ``box``."""
    (item,) = [o for o in items if iou(np.asarray(o.box, np.float32), np.asarray(box)) > 0.5]
    return item


def test_action_for_each_verdict_and_policy():
    assert [action_for(v) for v in (FACE, PLAUSIBLE, NOT_FACE)] == ["method", "blur", "leave"]
    assert action_for(PLAUSIBLE, "swap") == "method" and action_for(PLAUSIBLE, "skip") == "leave"
    assert action_for(FACE, "skip") == "method" and action_for(NOT_FACE, "swap") == "leave"
    with pytest.raises(ValueError, match="low_confidence"):
        action_for(PLAUSIBLE, "maybe")


def test_confident_faces_skip_the_second_look(t1, detector):
    faces = detector.detect(t1)
    verdicts = FaceConfirmer().confirm_all(t1, faces)
    assert len(faces) == 6 and all(f.score >= CONFIDENT for f in faces)
    assert all(v.verdict == FACE and v.p_face is None and "confident" in v.reason
               for v in verdicts)


def test_no_face_is_pasted_on_a_hand(hand, detector, seal):
    faces = detector.detect(hand)
    (f,) = faces
    assert OLD_THRESHOLD <= f.score < CONFIDENT  # the old default pasted a face here
    verdict = FaceConfirmer().confirm(hand, f, faces)
    assert verdict.verdict in (PLAUSIBLE, NOT_FACE), verdict
    res = anonymize(hand, seal, method="mask", tiers=("vault",))
    (rep,) = res.faces
    assert rep.status != "anonymized" and rep.decision["verdict"] != FACE
    if rep.status == "fallback-blur":  # blurred, not filled: the mask never ran
        x, y, w, h = (int(v) for v in f.box)
        assert not np.array_equal(res.image[y:y + h, x:x + w], hand[y:y + h, x:x + w])
        roi = res.image[y + h // 4:y + 3 * h // 4, x + w // 4:x + 3 * w // 4]
        assert roi.reshape(-1, 3).std(0).max() > 2.0  # still texture, not a solid fill
    for policy in ("blur", "skip"):
        r = anonymize(hand, seal, method="mask", tiers=("vault",), low_confidence=policy)
        assert r.faces[0].status != "anonymized"


def test_a_torso_is_not_a_face(torso, detector, seal):
    faces = detector.detect(torso)
    assert faces and all(f.score < CONFIDENT for f in faces)
    assert all(v.verdict == NOT_FACE for v in FaceConfirmer().confirm_all(torso, faces))
    with pytest.raises(NoFaceError, match="second look"):
        anonymize(torso, seal, method="mask", tiers=("vault",))


def test_half_cut_face_is_anonymised_and_the_decision_reported(half_face, detector, seal):
    cut = _only(detector.detect(half_face), (1128, 300, 56, 100))
    assert LOW_FLOOR <= cut.score < OLD_THRESHOLD  # the old default left it identifiable
    res = anonymize(half_face, seal, method="mask", tiers=("vault",))
    rep = _only(res.faces, tuple(cut.box))
    assert rep.status in ("anonymized", "fallback-blur"), rep
    x, y, w, h = (int(v) for v in cut.box)
    changed = np.abs(res.image[y:y + h, x:x + w].astype(int)
                     - half_face[y:y + h, x:x + w].astype(int)).max(2) > 8
    assert changed.mean() > 0.3, changed.mean()
    d = rep.decision
    assert d["verdict"] in (FACE, PLAUSIBLE) and d["reason"] and 0.0 <= d["p_face"] <= 1.0
    assert set(d["evidence"]) == {"yunet", "aligned", "centred", "head_overlap"}
    json.dumps([vars(r) for r in res.faces])  # the CLI's --json report
    assert res.summary["faces"] == 6 and res.summary["not_face"] == 0
    assert sum(r.status == "anonymized" for r in res.faces) >= 5
    # The vault restores the blurred face like any edit.
    assert any(rec.index == rep.index for rec in res.vault_payload.faces)
    skip = anonymize(half_face, seal, method="mask", tiers=("vault",), low_confidence="skip")
    srep = [r for r in skip.faces if r.index == rep.index][0]
    assert srep.status == ("anonymized" if d["verdict"] == FACE else "uncertain-left")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refacex", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_low_confidence_option(tmp_path, half_face):
    src = tmp_path / "half.png"
    cv2.imwrite(str(src), half_face)
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple")
    r = run("anonymize", str(src), "-o", str(tmp_path / "bad"), "--passphrase-file", str(pw),
            "--low-confidence", "maybe")
    assert r.returncode == 2 and "--low-confidence" in r.stderr
    r = run("anonymize", str(src), "-o", str(tmp_path / "out"), "--passphrase-file", str(pw),
            "--method", "mask", "--tiers", "vault", "--low-confidence", "skip", "--json")
    assert r.returncode == 0, r.stderr
    report = next(iter(json.loads(r.stdout)["files"].values()))
    verdicts = [f["decision"]["verdict"] for f in report["faces_detail"]]
    assert verdicts.count(FACE) >= 5 and all(v in (FACE, PLAUSIBLE) for v in verdicts)
    assert Path(report["output"][0]).is_file()
