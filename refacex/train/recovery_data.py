"""Training pairs for the learned recovery: what the recovery network will see, and what
it must give back.

For every training photo (LFW people with a single photo, and CelebA's training folders:
never an evaluation person, see ``shared/data/splits``) the real pipeline anonymises it
(swap mostly, blur and pixelate too: recovery works for every method) with a random key,
so the donor is random, and embeds the robust tier; the result is then sent through the
channels a robust payload must survive (JPEG 90/75/50, half size then JPEG 75). The
largest face is cut out in the face code's geometry (``payload.facecode``'s template at
``SIDE`` px) from the original, the anonymised image before the channel (what the
encoder sees when it writes the code) and each channel's output (what the decoder sees).

Shards of ``SHARD`` samples are written as ``.npz`` in a fixed photo order, so a stopped
run resumes where it was (``--out`` keeps what is done) and two runs write the same set.

    python -m refacex.train.recovery_data --out ~/.cache/refacex/train/recovery --limit 3000
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from refacex.audit.distortions import jpeg, resize
from refacex.errors import RefacexError
from refacex.faces.align import warp_face
from refacex.io.images import read_image
from refacex.payload import crypto
from refacex.payload.facecode import CODE_PADDING
from refacex.payload.keyring import SealKeys
from refacex.pipeline import anonymize

SIDE = 96  # stored crop side; training resamples to its working resolution
SHARD = 100
#: (name, channel): what the decoder input went through.
CHANNELS = (
    ("jpeg90", lambda im: jpeg(im, 90)),
    ("jpeg75", lambda im: jpeg(im, 75)),
    ("jpeg50", lambda im: jpeg(im, 50)),
    ("half_jpeg75", lambda im: resize(jpeg(resize(im, 0.5), 75), 2.0)),
)
METHODS = (("swap", 0.8), ("blur", 0.1), ("pixelate", 0.1))


def training_photos(shared: Path) -> list[Path]:
    """Every training photo, in a fixed shuffled order (the eval people never appear)."""
    data = shared / "data"
    eval_people = set((data / "splits" / "lfw_eval_people.txt").read_text().split())
    people = (data / "splits" / "lfw_train_people.txt").read_text().split()
    assert not eval_people & set(people)
    photos = [data / "lfw-deepfunneled" / p / f"{p}_0001.jpg" for p in people]
    celeba = data / "celeba-id" / "Datasets" / "train_dataset"
    photos += sorted(celeba.glob("*/*.jpg"))
    random.Random(0).shuffle(photos)
    return photos


def sample(path: Path, rng: random.Random) -> dict | None:
    """One training sample from one photo (None: no usable face)."""
    img = read_image(path)
    method = rng.choices([m for m, _ in METHODS], [w for _, w in METHODS])[0]
    keys = SealKeys(passphrase=rng.randbytes(16))
    try:
        res = anonymize(img, keys, method=method, tiers=("robust",))
    except RefacexError:
        return None
    faces = [f for f, r in zip(res.detected, res.faces, strict=True) if r.status != "not-face-left"
             and r.status != "uncertain-left"]
    if not faces:
        return None
    face = max(faces, key=lambda f: float(f.box[2] * f.box[3]))
    if face.box[2] < 40:
        return None
    crop = lambda im: warp_face(im, face.kps, SIDE, CODE_PADDING).crop  # noqa: E731
    return {"orig": crop(img), "host": crop(res.image),
            "recv": np.stack([crop(ch(res.image)) for _, ch in CHANNELS]),
            "method": method, "face_px": float(face.box[2]), "robust": res.robust_status}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get(
        "REFACEX_SHARED", Path(__file__).resolve().parents[3] / "shared")))
    ap.add_argument("--limit", type=int, default=0, help="photos to use (0: all)")
    args = ap.parse_args(argv)
    # The passphrase's scrypt is not what is being learned; keep it cheap here.
    crypto.COMPACT_SCRYPT = crypto.ScryptParams(log2_n=10, r=8, p=1)
    photos = training_photos(args.shared)
    if args.limit:
        photos = photos[: args.limit]
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    for s in range(0, len(photos), SHARD):
        dest = args.out / f"shard-{s // SHARD:04d}.npz"
        if dest.exists():
            continue
        rng = random.Random(s)
        rows = [r for p in photos[s:s + SHARD] if (r := sample(p, rng)) is not None]
        if not rows:
            continue
        tmp = dest.with_name(f"tmp-{dest.name}")  # not a shard-*.npz until complete
        np.savez_compressed(
            tmp, orig=np.stack([r["orig"] for r in rows]),
            host=np.stack([r["host"] for r in rows]),
            recv=np.stack([r["recv"] for r in rows]),
            method=np.array([r["method"] for r in rows]),
            face_px=np.array([r["face_px"] for r in rows], np.float32),
            channels=np.array([n for n, _ in CHANNELS]))
        os.replace(tmp, dest)
        print(f"{dest.name}: {len(rows)} samples, {time.time() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
