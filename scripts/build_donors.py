"""Build the donor templates shipped in ``refacex/data/donors.npz``.

Only TRAINING people are used: ``splits/lfw_train_people.txt`` (one photo each) and
CelebA-id ``train_dataset`` (one photo per identity). The LFW evaluation people and the
CelebA test set are never read, so the audit's identities cannot leak into donors.

Pipeline: detect (YuNet) -> 68 landmarks -> canonical 256 crop (same geometry as the
anonymiser) -> descriptor (cheek Lab + appearance PCA) -> k-means into groups ->
merge groups under ``MIN_MEMBERS`` people -> per group, warp every member to the
group's mean shape (piecewise affine) and average. Shape normalisation is what keeps
the average sharp instead of a ghost of misaligned mouths and jaws. Only averages over
>= 30 people leave this script: no single photo is recoverable from the npz.

Usage: nice -n 10 .venv/bin/python scripts/build_donors.py [--lfw 1900] [--k 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refacex.anonymize.base import CROP_PADDING, CROP_SIZE  # noqa: E402
from refacex.anonymize.donors import (  # noqa: E402
    BUCKET_BITS,
    DONORS_PATH,
    MIN_MEMBERS,
    appearance_vector,
    border_points,
    defringe,
    delaunay,
    piecewise_affine,
    skin_lab,
)
from refacex.faces.align import transform_points, warp_face  # noqa: E402
from refacex.faces.analysis import FaceAnalyzer  # noqa: E402
from refacex.faces.detect import nearest_centre  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
N_PCA = 8
#: Appearance features count half as much as skin tone in the clustering.
APPEARANCE_WEIGHT = 0.5


def photo_list(n_lfw: int, seed: int) -> list[tuple[str, Path]]:
    """(person, photo) pairs: a seeded sample of LFW train people + every CelebA train id."""
    train = [s.strip() for s in (DATA / "splits/lfw_train_people.txt").read_text().split()]
    evals = set((DATA / "splits/lfw_eval_people.txt").read_text().split())
    train = [p for p in train if p and p not in evals]  # belt and braces
    rng = np.random.default_rng(seed)
    rng.shuffle(train)
    out = [(f"lfw:{p}", DATA / "lfw-deepfunneled" / p / f"{p}_0001.jpg") for p in train[:n_lfw]]
    for d in sorted((DATA / "celeba-id/Datasets/train_dataset").iterdir()):
        if d.is_dir():
            photos = sorted(d.glob("*.jpg"))
            if photos:
                out.append((f"celeba:{d.name}", photos[0]))
    return out


def process(analyzer: FaceAnalyzer, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Aligned crop and crop-space landmarks of the central, near-frontal face."""
    img = cv2.imread(str(path))
    if img is None:
        return None
    faces = analyzer.detector.detect(img)
    if not faces:
        return None
    face = nearest_centre(faces, img.shape[:2])
    analyzer.describe(img, face, landmarks=True, pose=True)
    if face.pose is None or abs(face.pose.yaw) > 20 or abs(face.pose.pitch) > 20:
        return None  # profile faces would smear the average
    al = warp_face(img, face.kps, CROP_SIZE, CROP_PADDING)
    lm = transform_points(al.matrix, face.landmarks).astype(np.float32)
    return al.crop, lm


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    cv2.setRNGSeed(seed)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
    _, labels, _ = cv2.kmeans(x.astype(np.float32), k, None, crit, 8, cv2.KMEANS_PP_CENTERS)
    return labels.ravel()


def merge_small(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Dissolve groups under MIN_MEMBERS: members go to the nearest remaining centroid,
    smallest group first, until every group has >= MIN_MEMBERS people."""
    labels = labels.copy()
    while True:
        ids, counts = np.unique(labels, return_counts=True)
        if counts.min() >= MIN_MEMBERS or len(ids) == 1:
            break
        small = ids[np.argmin(counts)]
        keep = [i for i in ids if i != small]
        cents = np.stack([x[labels == i].mean(0) for i in keep])
        for j in np.where(labels == small)[0]:
            labels[j] = keep[int(np.argmin(((cents - x[j]) ** 2).sum(1)))]
    _, labels = np.unique(labels, return_inverse=True)
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=int, default=1900, help="LFW train people to sample")
    ap.add_argument("--k", type=int, default=20, help="k-means groups before merging")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=DONORS_PATH)
    args = ap.parse_args()
    t0 = time.time()
    analyzer = FaceAnalyzer()
    photos = photo_list(args.lfw, args.seed)
    crops, lms, who = [], [], []
    for i, (person, path) in enumerate(photos):
        r = process(analyzer, path)
        if r is not None:
            crops.append(r[0])
            lms.append(r[1])
            who.append(person)
        if (i + 1) % 250 == 0:
            print(f"  {i + 1}/{len(photos)} photos, {len(crops)} usable, "
                  f"{time.time() - t0:.0f}s", flush=True)
    assert len(set(who)) == len(who), "one photo per person"
    crops_a = np.stack(crops)
    lms_a = np.stack(lms)
    n = len(crops_a)
    print(f"{n} faces of {n} different people ({sum(w.startswith('celeba') for w in who)} "
          f"CelebA) in {time.time() - t0:.0f}s")

    # Descriptor: cheek Lab + appearance PCA, each feature scaled to unit spread.
    labs = np.stack([skin_lab(c, lm) for c, lm in zip(crops_a, lms_a, strict=True)])
    app = np.stack([appearance_vector(c) for c in crops_a])
    pca_mean = app.mean(0)
    _, _, vt = np.linalg.svd(app - pca_mean, full_matrices=False)
    basis = vt[:N_PCA]
    feats = np.hstack([labs, (app - pca_mean) @ basis.T])
    scale = feats.std(0) + 1e-6
    scale[3:] /= APPEARANCE_WEIGHT
    x = feats / scale
    labels = merge_small(x, kmeans(x, args.k, args.seed))
    k = int(labels.max()) + 1

    # One triangulation for everything, on the global mean shape + crop border.
    border = border_points(CROP_SIZE)
    mean_all = lms_a.mean(0)
    tris = delaunay(np.vstack([mean_all, border]), CROP_SIZE)

    images, shapes, counts, skins, cents = [], [], [], [], []
    for g in range(k):
        idx = np.where(labels == g)[0]
        assert len(idx) >= MIN_MEMBERS
        mean_shape = lms_a[idx].mean(0)
        dst = np.vstack([mean_shape, border])
        acc = np.zeros((CROP_SIZE, CROP_SIZE, 3), np.float64)
        for j in idx:
            src = np.vstack([lms_a[j], border])
            acc += piecewise_affine(crops_a[j], src, dst, tris, CROP_SIZE)
        mean_img = np.clip(acc / len(idx) + 0.5, 0, 255).astype(np.uint8)
        # Hair/background of the average -> extrapolated skin (see donors.defringe).
        images.append(defringe(mean_img, mean_shape))
        shapes.append(mean_shape)
        counts.append(len(idx))
        skins.append(labs[idx].mean(0))
        cents.append(x[idx].mean(0))
    order = np.argsort([s[0] for s in skins])[::-1]  # light to dark, for readability
    ids = np.array([f"d{i:02d}" for i in range(k)])
    rng = np.random.default_rng(args.seed + 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        images=np.stack(images)[order], landmarks=np.stack(shapes)[order].astype(np.float32),
        counts=np.array(counts, np.int32)[order], skin=np.stack(skins)[order].astype(np.float32),
        centroids=np.stack(cents)[order].astype(np.float32),
        pca_mean=pca_mean.astype(np.float32), pca_basis=basis.astype(np.float32),
        desc_scale=scale.astype(np.float32), triangles=tris.astype(np.int32),
        projections=rng.standard_normal((BUCKET_BITS, 128)).astype(np.float32), ids=ids,
    )
    print(f"{k} templates -> {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), "
          f"{time.time() - t0:.0f}s total")
    for i, o in enumerate(order):
        lab = skins[o]
        print(f"  {ids[i]}: {counts[o]:4d} people, skin Lab=({lab[0]:.0f},{lab[1]:.0f},"
              f"{lab[2]:.0f})")


if __name__ == "__main__":
    main()
