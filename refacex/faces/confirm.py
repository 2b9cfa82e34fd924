"""A second opinion on low-confidence detections: face, plausible, or not a face.

Why: YuNet is tuned for recall. Below ~0.9 it reports real faces (small, blurred, dark,
half-cut by the frame, background people) *and* hair, ears, the back of a head, hands,
shirts and wall patterns: on 1,500 LFW photos the 0.2-0.9 band held ~300 real faces and
~200 non-faces (``docs/benchmarks.md``). One threshold either leaves faces identifiable
(the old default left everything under 0.6) or pastes donor faces on hair and torsos
(what was swapped between 0.6 and 0.8). So each detection under ``CONFIDENT`` gets a
second look, and the anonymiser acts on the verdict:

* ``face`` -- confirmed: gets the chosen method (e.g. a swap);
* ``plausible`` -- may be a face, not confirmed: blurred by default (a blurred ear costs
  little; a face pasted on a shirt is a visible error; an unblurred face is a leak);
* ``not_face`` -- clearly not a face: left untouched.

The evidence, besides YuNet's own score:

* ``aligned`` -- YuNet re-run on the crop aligned by the detection's own 5 points and
  upscaled (face ~90 px): a real face becomes centred and upright and scores again; a
  "face" read into hair or a collar rarely survives the closer look;
* ``centred`` -- YuNet re-run on a 2x crop centred on the box, upscaled (no alignment:
  keeps faces whose 5 points were poor but whose box was right);
* ``head_overlap`` -- the share of the box inside the head region of a confident face
  of the same photo: most such detections are that person's ear, hairline or chin.

A logistic model combines them, fitted on labelled LFW detections
(``benchmarks/bench_low_confidence.py --fit``: 5 numbers, person-disjoint dev half).
Measured and left out: dlib's HOG frontal detector on the aligned crop (fires on 17 % of
faces and 8 % of non-faces in the band; no gain in held-out AUC, +7-10 ms), 68-point
fit quality (dlib 68 vs YuNet's 5 points, stability under a shifted start box) and
5-point geometry (AUC 0.45-0.6: the shape predictor draws a face anywhere), SFace's
feature norm (AUC 0.7 but 40-70 ms per crop). Colour is deliberately not used: skin
tone must not decide who is protected. Cost: two YuNet runs on 160 px crops, median
~14 ms and p90 ~19-23 ms per detection on a shared 2-core CPU; detections at or above
``CONFIDENT`` skip it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from refacex.faces.align import align_matrix
from refacex.faces.detect import iou
from refacex.faces.types import Face
from refacex.models import resolve

FACE, PLAUSIBLE, NOT_FACE = "face", "plausible", "not_face"
VERDICTS = (FACE, PLAUSIBLE, NOT_FACE)
#: What to do with a *plausible* detection (``--low-confidence``); blur is the default
#: because it protects an unconfirmed face without pasting a face on a non-face.
LOW_CONFIDENCE = ("blur", "swap", "skip")

#: At or above this YuNet score a detection is a face without a second look. In the
#: labelled LFW band no non-face scored 0.8-0.9, but a hand at a shirt cuff in the torso
#: probes scored 0.85, and the second look confirms the real faces there anyway.
CONFIDENT = 0.9

#: Logistic model over (logit YuNet score, logit aligned, logit centred, head overlap,
#: bias); fitted by ``benchmarks/bench_low_confidence.py --fit``.
WEIGHTS = np.array([1.67, 0.63, 0.27, -1.17, 0.38], np.float64)
#: p(face) at or above: confirmed (no dev-half non-face reached it); below
#: ``NOT_FACE_BELOW``: clearly not a face (1 of 141 dev-half faces fell below 0.05, 4 below
#: 0.1: the privacy default errs towards blurring a non-face).
FACE_AT = 0.935
NOT_FACE_BELOW = 0.05

_CROP = 160  # px, both re-detection crops
_ALIGN_PAD = 0.4  # context around the ArcFace box in the aligned crop (face ~ 89 px)
_RECHECK_FLOOR = 0.02  # the re-runs report (almost) everything; the model weighs it


def logit(p: float) -> float:
    """Log-odds of a score, bounded away from 0 and 1 so a 0 from a re-run is finite."""
    p = min(max(p, 0.0), 1.0)
    return float(np.log((p + 0.02) / (1.02 - p)))


@dataclass(frozen=True)
class Confirmation:
    """The verdict on one detection, why, and the evidence (JSON-friendly)."""

    verdict: str  # FACE | PLAUSIBLE | NOT_FACE
    reason: str
    p_face: float | None = None  # None when no second look was needed
    evidence: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out: dict = {"verdict": self.verdict, "reason": self.reason}
        if self.p_face is not None:
            out["p_face"] = round(self.p_face, 3)
        if self.evidence:
            out["evidence"] = {k: round(float(v), 3) for k, v in self.evidence.items()}
        return out


def head_overlap(face: Face, others: Sequence[Face], confident: float = CONFIDENT) -> float:
    """Share of ``face``'s box inside the head region (box x1.5 about its centre) of a
    confident *other* detection: an ear, hairline or chin of someone already found."""
    x, y, w, h = (float(v) for v in face.box)
    area = max(w * h, 1e-6)
    best = 0.0
    for o in others:
        if o is face or o.score < confident:
            continue
        ox, oy, ow, oh = (float(v) for v in o.box)
        cx, cy = ox + ow / 2, oy + oh / 2
        hx0, hy0, hx1, hy1 = cx - 0.75 * ow, cy - 0.75 * oh, cx + 0.75 * ow, cy + 0.75 * oh
        ix = max(0.0, min(x + w, hx1) - max(x, hx0))
        iy = max(0.0, min(y + h, hy1) - max(y, hy0))
        best = max(best, ix * iy / area)
    return best


class FaceConfirmer:
    """``confirm(img, face, others)`` -> ``Confirmation``; models load once, lazily."""

    def __init__(self, confident: float = CONFIDENT, face_at: float = FACE_AT,
                 not_face_below: float = NOT_FACE_BELOW) -> None:
        self.confident = confident
        self.face_at = face_at
        self.not_face_below = not_face_below
        self._yunet: cv2.FaceDetectorYN | None = None
        self._lock = threading.Lock()

    # -- the evidence ------------------------------------------------------------------
    def _redetect(self, crop: np.ndarray, expect: np.ndarray, min_iou: float) -> float:
        """Best YuNet score in ``crop`` for a face at the ``expect`` (x, y, w, h) box."""
        with self._lock:
            if self._yunet is None:
                self._yunet = cv2.FaceDetectorYN.create(
                    str(resolve("yunet")), "", (_CROP, _CROP), _RECHECK_FLOOR, 0.3, 50)
            self._yunet.setInputSize((crop.shape[1], crop.shape[0]))
            _, rows = self._yunet.detect(crop)
        best = 0.0
        for r in [] if rows is None else rows:
            if iou(r[:4], expect) > min_iou:
                best = max(best, float(r[14]))
        return best

    def evidence(self, img: np.ndarray, face: Face, others: Sequence[Face] = ()
                 ) -> dict[str, float]:
        """The measurements the verdict is made from (see the module doc)."""
        # Aligned by the detection's own 5 points; the ArcFace box spans 1/(1+2 pad) of it.
        m = align_matrix(face.kps, _CROP, _ALIGN_PAD)
        aligned = cv2.warpAffine(img, m, (_CROP, _CROP), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        s = _CROP / (1.0 + 2.0 * _ALIGN_PAD)
        c = _CROP / 2
        # YuNet's box runs from the forehead to the chin: taller than the ArcFace box.
        exp_al = np.array([c - 0.55 * s, c - 0.6 * s, 1.1 * s, 1.3 * s])
        # Centred on the box, twice its size.
        x, y, w, h = (float(v) for v in face.box)
        k = _CROP / (2.0 * max(w, h, 1.0))
        mc = np.array([[k, 0, c - k * (x + w / 2)], [0, k, c - k * (y + h / 2)]], np.float64)
        centred = cv2.warpAffine(img, mc, (_CROP, _CROP), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        exp_c = np.array([c - k * w / 2, c - k * h / 2, k * w, k * h])
        return {
            "yunet": float(face.score),
            "aligned": self._redetect(aligned, exp_al, 0.2),
            "centred": self._redetect(centred, exp_c, 0.3),
            "head_overlap": head_overlap(face, others, self.confident),
        }

    @staticmethod
    def p_face(ev: dict[str, float]) -> float:
        """The logistic model's probability that the evidence is a face."""
        x = np.array([logit(ev["yunet"]), logit(ev["aligned"]), logit(ev["centred"]),
                      ev["head_overlap"], 1.0])
        return float(1.0 / (1.0 + np.exp(-float(x @ WEIGHTS))))

    # -- the verdict -------------------------------------------------------------------
    def confirm(self, img: np.ndarray, face: Face, others: Sequence[Face] = ()
                ) -> Confirmation:
        """The verdict on ``face``; ``others`` are the photo's other detections (for
        ``head_overlap``). At or above ``confident`` no second look is taken."""
        if face.score >= self.confident:
            return Confirmation(FACE, f"detector confident ({face.score:.2f} >= "
                                      f"{self.confident:.2f})")
        ev = self.evidence(img, face, others)
        p = self.p_face(ev)
        why = (f"second look: YuNet {ev['yunet']:.2f}, aligned re-detection "
               f"{ev['aligned']:.2f}, centred {ev['centred']:.2f}"
               + (f", {ev['head_overlap']:.0%} inside a confident face's head"
                  if ev["head_overlap"] > 0.05 else ""))
        if p >= self.face_at:
            return Confirmation(FACE, f"confirmed (p={p:.2f}); {why}", p, ev)
        if p < self.not_face_below:
            return Confirmation(NOT_FACE, f"rejected (p={p:.2f}); {why}", p, ev)
        return Confirmation(PLAUSIBLE, f"unconfirmed (p={p:.2f}); {why}", p, ev)

    def confirm_all(self, img: np.ndarray, faces: Sequence[Face]) -> list[Confirmation]:
        """One verdict per detection of the same photo, in order."""
        return [self.confirm(img, f, faces) for f in faces]


def action_for(verdict: str, low_confidence: str = "blur") -> str:
    """The anonymiser's action for a verdict: ``"method"`` (the chosen method, e.g.
    swap), ``"blur"`` or ``"leave"``. Only plausible detections depend on the policy."""
    if low_confidence not in LOW_CONFIDENCE:
        raise ValueError(f"low_confidence must be one of {LOW_CONFIDENCE}, "
                         f"not {low_confidence!r}")
    if verdict == FACE:
        return "method"
    if verdict == NOT_FACE:
        return "leave"
    return {"blur": "blur", "swap": "method", "skip": "leave"}[low_confidence]


_shared: FaceConfirmer | None = None


def confirmer() -> FaceConfirmer:
    """A shared instance (the models load once per process)."""
    global _shared
    if _shared is None:
        _shared = FaceConfirmer()
    return _shared
