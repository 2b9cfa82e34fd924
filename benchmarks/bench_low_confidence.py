"""Low-confidence detections: how many real faces each policy leaves identifiable, and
on how many non-faces it pastes a face.

    .venv/bin/python benchmarks/bench_low_confidence.py [--lfw 1500] [--fit] [--json F]

The evaluation set is rebuilt from ../shared/data at run time (nothing but the labels is
stored): 1,500 LFW photos drawn with seed 0, every YuNet detection at >= 0.2, and — as
non-face probes — the torso under and the hair over the main face of 400 other photos
(seed 1), cut out and upscaled 3x so that they look like whole photos of a shirt or a
head of hair. ``benchmarks/data/low_confidence_labels.tsv`` holds a label for every
detection below 0.9 that is not the photo's main face (face / not_face / unclear), given
by looking at each crop (and again with its contrast stretched, for dark ones); a
detection is matched to its label by IoU >= 0.7. Main faces (>= 0.8, centred) count as
faces; the few other detections >= 0.9 are unlabelled and treated alike by every policy.

Policies compared:

* ``before``: detections >= 0.3; >= 0.6 swapped, the rest left (the old default);
* ``before+blur``: the same with ``--fallback blur`` (the rest blurred);
* ``after``: detections >= 0.2; >= 0.9 (``CONFIDENT``) swapped; between, the second opinion
  (``refacex.faces.confirm``): face -> swap, plausible -> ``--low-confidence``
  (blur by default, or swap / skip), not_face -> left.

``--fit`` refits the confirmer's logistic weights on the dev half (people split by a
hash of the name) and prints them with threshold suggestions; the report always gives
the held-out half separately.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from refacex.faces.confirm import (
    FACE,
    NOT_FACE,
    PLAUSIBLE,
    WEIGHTS,
    Confirmation,
    FaceConfirmer,
    action_for,
    logit,
)
from refacex.faces.detect import YuNetDetector, iou
from refacex.faces.types import Face
from refacex.pipeline import LOW_FLOOR

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LFW = SHARED / "lfw-deepfunneled"
LABELS = Path(__file__).resolve().parent / "data" / "low_confidence_labels.tsv"
FLOOR_BEFORE, SWAP_BEFORE = 0.3, 0.6
FLOOR_AFTER = LOW_FLOOR
MAIN = 0.8  # an LFW main face: centred and at least this (1,496 of the 1,500 sampled)


@dataclass
class Det:
    kind: str  # lfw | torso | hair
    path: str
    face: Face
    label: str  # face | not_face | unclear | unlabelled
    conf: Confirmation | None = None
    ms: float = 0.0

    @property
    def dev(self) -> bool:
        """Person-disjoint split: the dev half fits the weights, the rest is held out."""
        return zlib.crc32(self.path.split("/")[0].encode()) % 2 == 0


def machine() -> str:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {cv2.getNumberOfCPUs()} cores visible, Python {platform.python_version()}"


def load_labels() -> dict[tuple[str, str], list[tuple[np.ndarray, str]]]:
    out: dict[tuple[str, str], list[tuple[np.ndarray, str]]] = {}
    for line in LABELS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        kind, path, x, y, w, h, _score, label = line.split("\t")
        out.setdefault((kind, path), []).append(
            (np.array([float(x), float(y), float(w), float(h)]), label))
    return out


def label_of(labels: dict, kind: str, path: str, f: Face) -> str:
    for box, lab in labels.get((kind, path), []):
        if iou(box, f.box) >= 0.7:
            return lab
    return "unlabelled"


def is_main(f: Face, shape: tuple[int, ...]) -> bool:
    """LFW's centred main face."""
    h, w = shape[:2]
    x, y, bw, bh = (float(v) for v in f.box)
    return (f.score >= MAIN and abs(x + bw / 2 - w / 2) < 30
            and abs(y + bh / 2 - h / 2) < 35 and bw > 60)


def probe_crops(img: np.ndarray, det: YuNetDetector) -> dict[str, np.ndarray]:
    """The torso under and the hair over the main face, upscaled 3x (non-face probes)."""
    main = [f for f in det.detect(img) if is_main(f, img.shape)]
    if not main:
        return {}
    x, y, w, h = (float(v) for v in main[0].box)
    iw = img.shape[1]
    left, right = max(0, int(x - w * 0.3)), min(iw, int(x + w * 1.3))
    regions = {"torso": img[int(y + h * 1.05):, left:right],
               "hair": img[max(0, int(y - h * 0.6)):int(y + h * 0.15),
                           max(0, int(x)):min(iw, int(x + w))]}
    return {k: cv2.resize(c, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
            for k, c in regions.items() if c.shape[0] >= 30 and c.shape[1] >= 30}


def collect(n_lfw: int, n_probe: int, confirmer: FaceConfirmer) -> list[Det]:
    labels = load_labels()
    files = sorted(LFW.glob("*/*.jpg"))
    det = YuNetDetector(score_threshold=FLOOR_AFTER)
    probe_det = YuNetDetector(score_threshold=0.05)  # as when the probes were labelled
    out: list[Det] = []

    def add(kind: str, rel: str, img: np.ndarray, faces: list[Face]) -> None:
        for f in faces:
            if f.score < FLOOR_AFTER:
                continue
            lab = label_of(labels, kind, rel, f)
            if lab == "unlabelled" and kind == "lfw" and is_main(f, img.shape):
                lab = "face"
            d = Det(kind, rel, f, lab)
            t0 = time.perf_counter()
            d.conf = confirmer.confirm(img, f, faces)
            d.ms = (time.perf_counter() - t0) * 1e3
            out.append(d)

    for p in random.Random(0).sample(files, n_lfw):
        img = cv2.imread(str(p))
        add("lfw", str(p.relative_to(LFW)), img, det.detect(img))
    for p in random.Random(1).sample(files, n_probe):
        img = cv2.imread(str(p))
        for kind, crop in probe_crops(img, probe_det).items():
            add(kind, str(p.relative_to(LFW)), crop, probe_det.detect(crop))
    return out


def outcome(d: Det, policy: str) -> str:
    """'swap' | 'blur' | 'left' | 'unreported' for one detection under ``policy``."""
    s = d.face.score
    if policy.startswith("before"):
        if s < FLOOR_BEFORE:
            return "unreported"
        if s >= SWAP_BEFORE:
            return "swap"
        return "blur" if policy == "before+blur" else "left"
    assert d.conf is not None
    low = policy.split(":")[1]
    act = action_for(d.conf.verdict, low)
    return {"method": "swap", "blur": "blur", "leave": "left"}[act]


POLICIES = ("before", "before+blur", "after:blur", "after:swap", "after:skip")


def table(dets: list[Det], title: str) -> tuple[str, dict]:
    rows = [f"**{title}**", "",
            "| policy | real faces: swapped / blurred / left / unreported | "
            "non-faces: **pasted** / blurred / left / unreported | unclear: swap / blur / left |",
            "|---|---|---|---|"]
    data: dict = {}
    for pol in POLICIES:
        cells, data[pol] = [], {}
        for lab in ("face", "not_face", "unclear"):
            c = Counter(outcome(d, pol) for d in dets if d.label == lab)
            data[pol][lab] = dict(c)
            keys = ("swap", "blur", "left", "unreported") if lab != "unclear" else (
                "swap", "blur", "left")
            cells.append(" / ".join(str(c.get(k, 0)) for k in keys))
        rows.append(f"| {pol} | {cells[0]} | {cells[1]} | {cells[2]} |")
    return "\n".join(rows), data


def fit(dets: list[Det]) -> None:
    """Refit the logistic weights on dev-split face/not_face detections in the band."""
    band = [d for d in dets if d.dev and d.label in ("face", "not_face")
            and d.conf is not None and d.conf.evidence]
    x = np.array([[logit(d.conf.evidence["yunet"]), logit(d.conf.evidence["aligned"]),
                   logit(d.conf.evidence["centred"]), d.conf.evidence["head_overlap"], 1.0]
                  for d in band])
    y = np.array([d.label == "face" for d in band], float)
    w = np.zeros(x.shape[1])
    for _ in range(50):  # Newton steps, light L2 (not on the bias)
        p = 1.0 / (1.0 + np.exp(-x @ w))
        reg = 1e-2 * np.r_[w[:-1], 0.0]
        g = x.T @ (p - y) + reg
        hess = x.T @ (x * (p * (1 - p))[:, None]) + 1e-2 * np.eye(len(w))
        w -= np.linalg.solve(hess, g)
    p = 1.0 / (1.0 + np.exp(-x @ w))
    print(f"dev band: {int(y.sum())} faces, {int((1 - y).sum())} non-faces")
    print("WEIGHTS =", np.round(w, 2).tolist(), " (in use:", WEIGHTS.tolist(), ")")
    print("face_at: lowest p with no dev non-face at or above:",
          round(float(p[y == 0].max()) + 1e-3, 3))
    for t in (0.05, 0.1, 0.15, 0.2):
        print(f"not_face below {t}: dev faces {int(((p < t) & (y == 1)).sum())}, "
              f"non-faces {int(((p < t) & (y == 0)).sum())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=int, default=1500, help="LFW photos (seed 0)")
    ap.add_argument("--probes", type=int, default=400, help="torso/hair probe photos (seed 1)")
    ap.add_argument("--fit", action="store_true", help="refit the weights on the dev half")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if not LFW.is_dir():
        raise SystemExit(f"{LFW} not found: the benchmark needs ../shared/data")
    t0 = time.perf_counter()
    dets = collect(a.lfw, a.probes, FaceConfirmer())
    wall = time.perf_counter() - t0
    if a.fit:
        fit(dets)
    lfw = [d for d in dets if d.kind == "lfw"]
    probes = [d for d in dets if d.kind != "lfw"]
    print(f"machine: {machine()}; {wall:.0f} s")
    labs = Counter(d.label for d in lfw)
    print(f"LFW: {a.lfw} photos, {len(lfw)} detections >= {FLOOR_AFTER} ({dict(labs)}); "
          f"probes: {len(probes)} detections ({dict(Counter(d.label for d in probes))})\n")
    report: dict = {}
    for title, subset in (("LFW, all", lfw), ("LFW, held-out half", [d for d in lfw if not d.dev]),
                          ("LFW, background only (not the main face)",
                           [d for d in lfw if not is_main(d.face, (250, 250))]),
                          ("torso/hair probes", probes)):
        text, report[title] = table(subset, title)
        print(text + "\n")
    lost = [d for d in lfw + probes if d.label == "face" and outcome(d, "before") == "swap"
            and outcome(d, "after:blur") == "left"]
    print(f"real faces the old default swapped that the new one leaves: {len(lost)}")
    report["faces_lost_vs_before"] = len(lost)
    verdicts = Counter((d.label, d.conf.verdict) for d in dets if d.conf is not None
                       and d.conf.p_face is not None)
    print("second-look verdicts (label -> verdict):",
          {f"{lab}->{v}": verdicts[(lab, v)] for lab in ("face", "not_face", "unclear")
           for v in (FACE, PLAUSIBLE, NOT_FACE)})
    looked = [d.ms for d in dets if d.conf is not None and d.conf.p_face is not None]
    q = statistics.quantiles(looked, n=10)
    print(f"second look: {len(looked)} detections, median {statistics.median(looked):.1f} ms, "
          f"p90 {q[-1]:.1f} ms, max {max(looked):.1f} ms")
    report["timing_ms"] = {"n": len(looked), "median": statistics.median(looked),
                           "p90": q[-1], "max": max(looked)}
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
