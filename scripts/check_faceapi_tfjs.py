"""Check refacex's face-api port (ONNX via cv2.dnn + numpy crop) against face-api itself.

refacex/faces/attributes.py rewrites face-api's age/gender and expression nets as graphs,
converts them with our own converter and re-implements face-api's crop; this compares
the whole path (image + box -> numbers) with face-api's own code on the pure-JS
``@tensorflow/tfjs`` CPU backend (scripts/check_faceapi_tfjs.mjs), on every face of the
bundled sample photos, cropped both at the detector's (YuNet) box and at face-api's
landmark box. Needs node and, outside the repository::

    mkdir -p /tmp/tfjsref && cd /tmp/tfjsref && npm init -y && npm install \\
        --ignore-scripts @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0 \\
        @vladmandic/face-api@1.7.15

    .venv/bin/python scripts/check_faceapi_tfjs.py [--tfjs-dir /tmp/tfjsref] [--write-fixture]

It prints, per face, |ours - face-api| of age and of the probabilities, and splits the
error: the crop (our 112 px input vs face-api's ``toBatchTensor``) and the nets alone
(our ONNX fed face-api's own input). ``--write-fixture`` stores the boxes and face-api's
outputs (numbers only) in tests/data/faceapi_reference.json for tests/test_attributes.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from refacex.faces.analysis import FaceAnalyzer
from refacex.faces.attributes import (
    EXPRESSIONS,
    INPUT_SIZE,
    AgeGenderEstimator,
    ExpressionEstimator,
    faceapi_crop,
    landmark_box,
)
from refacex.io.images import read_image
from refacex.models import resolve

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "faceapi_reference.json"
SAMPLES = ("t1", "astronaut", "tom_hanks")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tfjs-dir", type=Path, default=Path("/tmp/tfjsref"))
    ap.add_argument("--write-fixture", action="store_true")
    args = ap.parse_args()

    analyzer = FaceAnalyzer()
    cases: list[dict] = []
    images = {}
    with tempfile.TemporaryDirectory() as tmp:
        job = []
        for sample in SAMPLES:
            img = images[sample] = read_image(resolve(sample))
            rgb = Path(tmp) / f"{sample}.rgb"
            np.ascontiguousarray(img[:, :, ::-1]).tofile(rgb)
            boxes = []
            for i, face in enumerate(analyzer.analyze(img, pose=False)):
                for kind, box in (("detector", face.box),
                                  ("landmarks", landmark_box(face.landmarks))):
                    box = [round(float(v), 3) for v in box]
                    cases.append({"name": f"{sample}:{i}:{kind}", "sample": sample, "box": box})
                    boxes.append(box)
            job.append({"rgb": str(rgb), "h": img.shape[0], "w": img.shape[1], "boxes": boxes})
        job_path, out_path, in_path = (Path(tmp) / n for n in ("job.json", "out.json", "in.f32"))
        job_path.write_text(json.dumps(job))
        proc = subprocess.run(["node", str(ROOT / "scripts" / "check_faceapi_tfjs.mjs"),
                               str(args.tfjs_dir), str(resolve("faceapi_age_gender_bin").parent),
                               str(job_path), str(out_path), str(in_path)],
                              check=True, capture_output=True, text=True)
        print(proc.stdout.strip())
        ref = json.loads(out_path.read_text())
        ref_inputs = np.fromfile(in_path, np.float32).reshape(-1, INPUT_SIZE, INPUT_SIZE, 3)

    crops = [faceapi_crop(images[c["sample"]], c["box"]) for c in cases]
    ag, ex = AgeGenderEstimator(), ExpressionEstimator()
    age, p_male = ag.predict(crops)
    probs = ex.predict(crops)
    age_r, p_male_r = ag.predict(list(ref_inputs))  # the nets alone, on face-api's input
    probs_r = ex.predict(list(ref_inputs))
    ref_age = np.array([r["age"] for r in ref])
    ref_pm = np.array([r["p_male"] for r in ref])
    ref_probs = np.array([r["expressions"] for r in ref])

    print(f"{'face':<24}{'age ref':>8}{'|d age|':>9}{'p_male':>8}{'|d p_m|':>9}{'|d expr|':>10}"
          f"{'|d crop|':>10}  expression")
    for k, c in enumerate(cases):
        print(f"{c['name']:<24}{ref_age[k]:>8.2f}{abs(age[k] - ref_age[k]):>9.1e}"
              f"{ref_pm[k]:>8.3f}{abs(p_male[k] - ref_pm[k]):>9.1e}"
              f"{np.abs(probs[k] - ref_probs[k]).max():>10.1e}"
              f"{np.abs(crops[k] - ref_inputs[k]).max():>10.1e}  "
              f"{EXPRESSIONS[int(np.argmax(ref_probs[k]))]}")
    crop_err = np.abs(np.stack(crops) - ref_inputs).max()
    print(f"all {len(cases)} crops: max |crop - face-api's| {crop_err:.2e} (0..255 levels)")
    print(f"whole path: max |d age| {np.abs(age - ref_age).max():.2e} y, max |d p_male| "
          f"{np.abs(p_male - ref_pm).max():.2e}, max |d expression prob| "
          f"{np.abs(probs - ref_probs).max():.2e}")
    print(f"nets alone: max |d age| {np.abs(age_r - ref_age).max():.2e} y, max |d p_male| "
          f"{np.abs(p_male_r - ref_pm).max():.2e}, max |d expression prob| "
          f"{np.abs(probs_r - ref_probs).max():.2e}")
    if args.write_fixture:
        for c, r in zip(cases, ref, strict=True):
            c.update(age=r["age"], p_male=r["p_male"], expressions=r["expressions"])
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps({
            "about": "face-api 1.7.15 (its own code, @tensorflow/tfjs 4.22.0 CPU backend) on the "
                     "sample photos at these boxes; made by scripts/check_faceapi_tfjs.py",
            "expressions": list(EXPRESSIONS),
            "faces": cases}, indent=1) + "\n")
        print(f"wrote {FIXTURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
