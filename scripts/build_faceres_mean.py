"""Build FaceRes's feature-centring mean (refacex/data/faceres_mean.npy) and calibrate.

Why a mean: FaceRes features are averaged ReLU6 activations, all positive, so any two
faces have a high raw cosine; subtracting the mean over many faces before the cosine
makes the score discriminative (CelebA-id test pairs, padding 0.07: TAR at FAR 1 % 0.85
raw, 0.88 centred).

Training people only: the 4,069 one-photo LFW people (splits/lfw_train_people.txt) and
CelebA-id's train_dataset, never the LFW eval people. What ships is one 1024-d average
over ~8,900 faces of ~4,300 people: a statistic, not a photo or an identity.

Then, on CelebA-id's *test* photos (200 people x 6, all pairs) it reports, for the crop
paddings given with ``--paddings``, TAR at FAR 1 % and the best balanced-accuracy
threshold: the data the crop padding (``FaceResRecognizer.padding``) was chosen on.
(For a sweep the mean comes from a 1,600-face subset, as it must be rebuilt per padding.)

    .venv/bin/python scripts/build_faceres_mean.py [--paddings -0.1 0 0.07 0.15 0.3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from refacex.faces.detect import YuNetDetector
from refacex.faces.recognizers import FACERES_MEAN_PATH, FaceResRecognizer
from refacex.io.images import read_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def train_files() -> list[Path]:
    eval_people = set((SHARED / "splits/lfw_eval_people.txt").read_text().split())
    train_people = (SHARED / "splits/lfw_train_people.txt").read_text().split()
    assert not eval_people & set(train_people)
    lfw = SHARED / "lfw-deepfunneled"
    files = [p for n in train_people for p in sorted((lfw / n).glob("*.jpg"))]
    return files + sorted((SHARED / "celeba-id/Datasets/train_dataset").glob("*/*.jpg"))


def features(rec: FaceResRecognizer, det: YuNetDetector, files: list[Path],
             padding: float, cache: dict) -> np.ndarray:
    """Raw features of each file's central face (the detection is cached per file)."""
    rec.padding = padding
    out = []
    for f in files:
        img = read_image(f)
        if f not in cache:
            faces = det.detect(img)
            h, w = img.shape[:2]
            cache[f] = min(faces, key=lambda fc: np.hypot(
                *(fc.box[:2] + fc.box[2:] / 2 - [w / 2, h / 2]))) if faces else None
        if cache[f] is not None:
            out.append(rec.raw_features([rec.crop(img, cache[f])])[0])
    return np.stack(out)


def celeba_test(x: np.ndarray, people: list[str],
                mean: np.ndarray) -> tuple[float, float, float, float]:
    """TAR at FAR 1 % and that threshold, best balanced accuracy and its threshold, over
    all pairs."""
    z = x - mean
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    iu = np.triu_indices(len(z), 1)
    s = (z @ z.T)[iu]
    same = (np.array(people)[:, None] == np.array(people)[None, :])[iu]
    far1 = float(np.quantile(s[~same], 0.99))
    tar = float((s[same] > far1).mean())
    cands = np.quantile(s, np.linspace(0.5, 1, 2001))
    bal = [((s[same] >= t).mean() + (s[~same] < t).mean()) / 2 for t in cands]
    return tar, far1, float(max(bal)), float(cands[int(np.argmax(bal))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paddings", type=float, nargs="*", default=[])
    args = ap.parse_args()
    rec, det, cache = FaceResRecognizer(), YuNetDetector(), {}
    test = sorted((SHARED / "celeba-id/Datasets/test_dataset").glob("*/*.jpg"))
    people = [p.parent.name for p in test]
    train = train_files()
    rng = np.random.default_rng(0)
    subset = [train[i] for i in rng.permutation(len(train))[:1600]]
    for pad in args.paddings:
        x = features(rec, det, test, pad, cache)
        tar, far1, acc, thr = celeba_test(x, people,
                                          features(rec, det, subset, pad, cache).mean(0))
        print(f"padding {pad:+.2f}: TAR@FAR1% {tar:.4f} (at {far1:.3f}), "
              f"best balanced acc {acc:.4f} at {thr:.3f}")
    pad = FaceResRecognizer.padding
    t0 = time.time()
    train_x = features(rec, det, train, pad, cache)
    mean = train_x.mean(0).astype(np.float32)
    np.save(FACERES_MEAN_PATH, mean)
    print(f"wrote {FACERES_MEAN_PATH.name}: mean of {len(train_x)} faces "
          f"({time.time() - t0:.0f} s)")
    x = features(rec, det, test, pad, cache)
    for label, m in (("raw", np.zeros_like(mean)), ("centred", mean)):
        tar, far1, acc, thr = celeba_test(x, people, m)
        print(f"CelebA-id test, padding {pad}, {label}: TAR@FAR1% {tar:.4f} (at {far1:.3f}), "
              f"best balanced acc {acc:.4f} at threshold {thr:.3f}")


if __name__ == "__main__":
    main()
