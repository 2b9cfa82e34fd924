"""Face-analysis speed: ms per image for detection, ms per face for landmarks and each
recogniser, on the bundled samples and (when present) 200 LFW photos from ../shared.

    .venv/bin/python benchmarks/bench_faces.py [--lfw N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import cv2

from refacex.faces import FaceAnalyzer, get_recognizer
from refacex.faces.pose import estimate_pose
from refacex.io.images import read_image
from refacex.models import resolve
from refacex.models.registry import DEMO_SAMPLES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {cv2.getNumberOfCPUs()} cores visible, cv2 threads "
            f"{cv2.getNumThreads()}, Python {platform.python_version()}")


def bench(images: list, analyzer: FaceAnalyzer) -> dict:
    recs = {n: get_recognizer(n) for n in ("sface", "dlib")}
    t = {"detect": [], "landmarks": [], "pose": [], "sface": [], "dlib": []}
    faces_total = 0
    for img in images:
        t0 = time.perf_counter()
        faces = analyzer.detector.detect(img)
        t["detect"].append((time.perf_counter() - t0) * 1e3)
        for f in faces:
            faces_total += 1
            t0 = time.perf_counter()
            f.landmarks = analyzer.landmarker.predict(img, f)
            t["landmarks"].append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            estimate_pose(f.landmarks, img.shape[:2])
            t["pose"].append((time.perf_counter() - t0) * 1e3)
            for n, r in recs.items():
                t0 = time.perf_counter()
                r.embed(img, f)
                t[n].append((time.perf_counter() - t0) * 1e3)
    out = {"images": len(images), "faces": faces_total}
    for k, v in t.items():
        out[f"{k}_ms_median"] = round(statistics.median(v), 2) if v else None
        out[f"{k}_ms_mean"] = round(statistics.fmean(v), 2) if v else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lfw", type=int, default=200, help="LFW photos to time (0 to skip)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    analyzer = FaceAnalyzer()
    warm = read_image(resolve("astronaut"))
    analyzer.analyze(warm, recognizers=("sface", "dlib"))  # load models, warm caches
    results = {"machine": machine()}
    samples = {n: read_image(resolve(n)) for n in DEMO_SAMPLES}
    for name, img in samples.items():
        # 5 repetitions so single-image timings are not one noisy sample
        results[f"sample:{name} ({img.shape[1]}x{img.shape[0]})"] = bench([img] * 5, analyzer)
    lfw = SHARED / "lfw-deepfunneled"
    if args.lfw and lfw.is_dir():
        files = sorted(lfw.glob("*/*.jpg"))
        random.Random(0).shuffle(files)
        imgs = [read_image(p) for p in files[: args.lfw]]
        results[f"lfw ({len(imgs)} photos, 250x250)"] = bench(imgs, analyzer)
    cols = ["images", "faces", "detect", "landmarks", "pose", "sface", "dlib"]
    print(f"machine: {results['machine']}\n")
    print("| set | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for k, v in results.items():
        if k == "machine":
            continue
        cells = [str(v["images"]), str(v["faces"])] + [
            f"{v[c + '_ms_median']}" for c in cols[2:]]
        print(f"| {k} | " + " | ".join(cells) + " |")
    print("\n(detect: ms per image; others: ms per face; medians)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
