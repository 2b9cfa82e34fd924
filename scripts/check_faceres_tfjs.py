"""Check the FaceRes TF.js -> ONNX conversion against TensorFlow.js itself.

The converter (refacex/faces/tfjs.py) is ours, so its output is compared with the
original model run by the pure-JS ``@tensorflow/tfjs`` CPU backend (no native code), on
identical inputs: every face of the bundled sample photos, aligned and preprocessed as
``FaceResRecognizer`` does. Needs node and, outside the repository::

    mkdir -p /tmp/tfjsref && cd /tmp/tfjsref && npm init -y && \\
        npm install --ignore-scripts @tensorflow/tfjs@4.22.0

    .venv/bin/python scripts/check_faceres_tfjs.py [--tfjs-dir /tmp/tfjsref] [--write-fixture]

``--write-fixture`` stores the faces' 5 points and the TF.js embeddings in
tests/data/faceres_tfjs_ref.npz, which tests/test_faceres.py compares against (the test
suite cannot depend on node). Prints, per face, max |ONNX - TF.js| and their cosine.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from refacex.faces.detect import YuNetDetector
from refacex.faces.recognizers import FaceResRecognizer
from refacex.io.images import read_image
from refacex.models import resolve

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "faceres_tfjs_ref.npz"
SAMPLES = ("t1", "astronaut", "tom_hanks")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tfjs-dir", type=Path, default=Path("/tmp/tfjsref"))
    ap.add_argument("--write-fixture", action="store_true")
    args = ap.parse_args()

    rec = FaceResRecognizer()
    det = YuNetDetector()
    names, kps, crops = [], [], []
    for sample in SAMPLES:
        img = read_image(resolve(sample))
        for i, face in enumerate(det.detect(img)):
            names.append(f"{sample}:{i}")
            kps.append(face.kps)
            crops.append(rec.crop(img, face))
    # The model's input exactly as FaceResRecognizer.raw_features builds it, but NHWC.
    x = np.stack(crops).astype(np.float32) - np.float32(rec.mean_bgr)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.f32", Path(tmp) / "out.f32"
        x.tofile(src)
        subprocess.run(["node", str(ROOT / "scripts" / "check_faceres_tfjs.mjs"),
                        str(args.tfjs_dir), str(resolve("faceres_json")),
                        "global_pooling/Mean", str(src), *map(str, x.shape), str(dst)],
                       check=True)
        ref = np.fromfile(dst, np.float32).reshape(len(crops), -1)
    ours = rec.raw_features(crops)
    print(f"{'face':<14}{'max|diff|':>12}{'max|ref|':>10}{'cos raw':>12}{'cos centred':>13}")
    for n, a, b in zip(names, ours, ref, strict=True):
        ca, cb = rec.normalize(a), rec.normalize(b)
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        print(f"{n:<14}{np.abs(a - b).max():>12.2e}{np.abs(b).max():>10.3f}{cos:>12.7f}"
              f"{float(ca @ cb):>13.7f}")
    print(f"all faces: max |diff| {np.abs(ours - ref).max():.2e}")
    if args.write_fixture:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(FIXTURE, names=np.array(names), kps=np.stack(kps).astype(np.float32),
                            padding=np.float32(rec.padding), tfjs=ref.astype(np.float32))
        print(f"wrote {FIXTURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
