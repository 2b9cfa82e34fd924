"""HSE FaceRes vs SFace on the LFW evaluation pairs: accuracy, TAR at FAR 1 %, speed.

Pairs: ``../shared/data/splits/lfw_eval_pairs.tsv`` (3,000 same / 3,000 different, LFW
eval people only), deep-funneled photos. Each photo's central face is found by YuNet;
both recognisers embed that same face (SFace with its own alignment, FaceRes with
``FaceResRecognizer``'s). Reported per recogniser: accuracy at the best threshold (a
sweep over these pairs: optimistic), accuracy at the shipped threshold, TAR at FAR 1 %
(threshold = 99th percentile of different-person scores), and median ms per face
(embedding only, alignment included). Last, how often both err on the same pair, at
their best thresholds: the point of a third attacker is that its errors differ.

    .venv/bin/python benchmarks/bench_faceres.py [--pairs 6000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from refacex.faces import get_recognizer
from refacex.faces.detect import YuNetDetector, nearest_centre
from refacex.io.images import read_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NAMES = ("faceres", "sface")


def verification(scores: np.ndarray, same: np.ndarray, shipped: float) -> dict[str, float]:
    """Best-threshold accuracy (and that threshold); accuracy, TAR and FAR at ``shipped``;
    TAR at FAR 1 %."""
    cands = np.unique(scores)
    acc = np.array([((scores >= t) == same).mean() for t in cands])
    best = int(acc.argmax())
    far_thr = float(np.quantile(scores[~same], 0.99))
    return {"best_acc": float(acc[best]), "best_thr": float(cands[best]),
            "acc_at_shipped": float(((scores >= shipped) == same).mean()),
            "tar_at_shipped": float((scores[same] >= shipped).mean()),
            "far_at_shipped": float((scores[~same] >= shipped).mean()),
            "tar_far1": float((scores[same] > far_thr).mean()), "far1_thr": far_thr}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=6000, help="first N pairs of the file")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = [ln.split("\t") for ln in
            (SHARED / "splits" / "lfw_eval_pairs.tsv").read_text().splitlines()[1:]]
    rows = rows[:args.pairs]
    images = sorted({p for a, b, _ in rows for p in (a, b)})
    det = YuNetDetector()
    recs = {n: get_recognizer(n) for n in NAMES}
    emb: dict[str, dict[str, np.ndarray]] = {n: {} for n in NAMES}
    ms: dict[str, list[float]] = {n: [] for n in NAMES}
    missed = 0
    t0 = time.time()
    for rel in images:
        img = read_image(SHARED / "lfw-deepfunneled" / rel)
        faces = det.detect(img)
        if not faces:
            missed += 1
            continue
        face = nearest_centre(faces, img.shape[:2])
        for n, r in recs.items():
            t = time.perf_counter()
            emb[n][rel] = r.embed(img, face)
            ms[n].append((time.perf_counter() - t) * 1e3)
    kept = [(a, b, s == "1") for a, b, s in rows if a in emb[NAMES[0]] and b in emb[NAMES[0]]]
    same = np.array([s for _, _, s in kept])
    out: dict = {"pairs": len(rows), "pairs_scored": len(kept), "photos": len(images),
                 "photos_without_face": missed, "seconds": round(time.time() - t0),
                 "cv2_threads": cv2.getNumThreads(), "recognizers": {}}
    wrong = {}
    for n, r in recs.items():
        scores = np.array([r.score(emb[n][a], emb[n][b]) for a, b, _ in kept])
        m = verification(scores, same, r.threshold)
        m.update(threshold=r.threshold, ms_per_face=statistics.median(ms[n]))
        out["recognizers"][n] = m
        wrong[n] = (scores >= m["best_thr"]) != same
    both = wrong[NAMES[0]] & wrong[NAMES[1]]
    out["errors"] = {n: int(v.sum()) for n, v in wrong.items()} | {"both": int(both.sum())}
    print(f"{len(kept)} pairs ({len(images)} photos, {missed} without a face), "
          f"{out['seconds']} s")
    print(f"{'recogniser':<10}{'best acc':>9}{'at thr':>8}{'shipped thr':>12}{'acc':>7}"
          f"{'TAR':>7}{'FAR':>7}{'TAR@FAR1%':>10}{'ms/face':>9}")
    for n, m in out["recognizers"].items():
        print(f"{n:<10}{m['best_acc']:>9.4f}{m['best_thr']:>8.3f}{m['threshold']:>12.3f}"
              f"{m['acc_at_shipped']:>7.4f}{m['tar_at_shipped']:>7.4f}{m['far_at_shipped']:>7.4f}"
              f"{m['tar_far1']:>10.4f}{m['ms_per_face']:>9.1f}")
    print("errors at best thresholds:", out["errors"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
