"""Build the PCA basis of the robust tier's compact face code (refacex/data/facecode_pca.npz).

Training people only: the 4,069 one-photo LFW people (splits/lfw_train_people.txt) and
CelebA's train_dataset — never the LFW eval people. Each face is aligned to the codec's
canonical crop (refacex.payload.facecode.CODE_SIZE / CODE_PADDING), mirrored for
augmentation, and the top components of the pooled covariance are kept. What ships is
a mean face and principal axes over thousands of people: statistics, not photos.

    .venv/bin/python scripts/build_facecode.py [--max-faces 6000]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from refacex.faces.align import warp_face
from refacex.faces.detect import YuNetDetector
from refacex.io.images import read_image
from refacex.payload.facecode import BASIS_PATH, CODE_PADDING, CODE_SIZE, N_COMPONENTS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def training_files(max_faces: int, per_celeb: int = 10) -> list[Path]:
    lfw = SHARED / "lfw-deepfunneled"
    eval_people = set((SHARED / "splits/lfw_eval_people.txt").read_text().split())
    train_people = (SHARED / "splits/lfw_train_people.txt").read_text().split()
    assert not eval_people & set(train_people)
    files = [p for name in train_people for p in sorted((lfw / name).glob("*.jpg"))[:1]]
    celeba = SHARED / "celeba-id/Datasets/train_dataset"
    # Several photos per CelebA person: PCA wants appearance variety (pose, light), and
    # the basis is a statistic over thousands of faces either way.
    files += [p for d in sorted(celeba.iterdir()) if d.is_dir()
              for p in sorted(d.glob("*.jpg"))[:per_celeb]]
    random.Random(0).shuffle(files)
    return files[:max_faces]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-faces", type=int, default=6000)
    args = ap.parse_args()
    det = YuNetDetector()
    crops = []
    t0 = time.time()
    for f in training_files(args.max_faces):
        img = read_image(f)
        faces = det.detect(img)
        if not faces:
            continue
        h, w = img.shape[:2]
        face = min(faces, key=lambda fc: np.hypot(*(fc.box[:2] + fc.box[2:] / 2 - [w / 2, h / 2])))
        crop = warp_face(img, face.kps, CODE_SIZE, CODE_PADDING).crop
        crops.append(crop)
        crops.append(crop[:, ::-1])  # mirror: twice the data, a left-right symmetric basis
    x = np.stack(crops).reshape(len(crops), -1).astype(np.float32)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    std = s[:N_COMPONENTS] / np.sqrt(len(x) - 1)
    BASIS_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(BASIS_PATH, mean=mean.astype(np.float32),
                        basis=vt[:N_COMPONENTS].astype(np.float16), std=std.astype(np.float32),
                        faces=np.int32(len(crops) // 2))
    var = s**2
    print(f"{len(crops) // 2} faces, {time.time() - t0:.0f} s; variance kept by "
          + ", ".join(f"K={k}: {var[:k].sum() / var.sum():.3f}" for k in (16, 64, 128, 256)))


if __name__ == "__main__":
    main()
