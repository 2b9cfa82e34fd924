"""Are donor choices under different site keys independent?

For each face and each of K random site keys, record (a) the keyed first pick
(``DonorBank.keyed_order``, what the key alone decides) and (b) the donor the verified
swap finally used (after its privacy check may have moved on). Report how often two
different keys give a face the same donor, against chance: 1 / (plausible candidates)
for the first pick, and the agreement the final donors' own spread implies.

    .venv/bin/python benchmarks/bench_donor_keys.py [--keys 8] [--lfw 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from refacex.anonymize.donors import N_CANDIDATES, load_bank
from refacex.io.images import read_image
from refacex.models import resolve
from refacex.payload.keyring import SealKeys
from refacex.payload.sitekeys import SiteKey
from refacex.pipeline import anonymize

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _images(n_lfw: int) -> dict[str, np.ndarray]:
    imgs = {"t1": read_image(resolve("t1")), "astronaut": read_image(resolve("astronaut"))}
    eval_people = SHARED / "splits" / "lfw_eval_people.txt"
    if eval_people.is_file():
        people = eval_people.read_text().split()[:n_lfw]
        for p in people:
            f = SHARED / "lfw-deepfunneled" / p / f"{p}_0001.jpg"
            if f.is_file():
                imgs[p] = read_image(f)
    return imgs


def _agreement(picks: list[list[int]]) -> tuple[float, int]:
    """Fraction of (face, key pair) with the same donor, and the number of such pairs."""
    same = total = 0
    for row in picks:
        for a, b in itertools.combinations(row, 2):
            same += a == b
            total += 1
    return same / max(total, 1), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=8)
    ap.add_argument("--lfw", type=int, default=12)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    bank = load_bank()
    pub = X25519PrivateKey.generate().public_key()
    sites = [SiteKey.generate() for _ in range(args.keys)]
    first: dict[tuple[str, int], list[int]] = {}
    final: dict[tuple[str, int], list[int]] = {}
    for name, img in _images(args.lfw).items():
        for site in sites:
            keys = SealKeys(recipients=[pub], site=site)
            res = anonymize(img, keys, method="swap", tiers=())
            for f in res.faces:
                if f.status != "anonymized":
                    continue
                final.setdefault((name, f.index), []).append(bank.ids.index(f.donor))
            for i, face in enumerate(res.detected):
                ctx_order = _first_pick(img, face, keys)
                first.setdefault((name, i), []).append(ctx_order)
    fa, pairs = _agreement(list(first.values()))
    ga, _ = _agreement([v for v in final.values() if len(v) == args.keys])
    spread = Counter(d for v in final.values() for d in v)
    p = np.array(list(spread.values()), float) / sum(spread.values())
    out = {"faces": len(first), "keys": args.keys, "key_pairs_per_face":
           args.keys * (args.keys - 1) // 2, "pairs": pairs,
           "first_pick_agreement": round(fa, 3), "first_pick_chance": round(1 / N_CANDIDATES, 3),
           "final_donor_agreement": round(ga, 3),
           "final_chance_from_spread": round(float((p ** 2).sum()), 3),
           "donors_used": len(spread), "bank_size": len(bank)}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def _first_pick(img: np.ndarray, face, keys: SealKeys) -> int:
    import cv2

    from refacex.anonymize import FaceContext, get_method
    from refacex.anonymize.base import CROP_SIZE
    from refacex.faces.align import transform_points

    swap = get_method("swap")
    ctx = FaceContext.for_face(face, img.shape[:2], donor_key=keys.donor_key)
    m = np.asarray(ctx.matrix, np.float64)
    crop = cv2.warpAffine(img, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
    lm = transform_points(m, face.landmarks).astype(np.float32)
    return swap.donor_order(crop, lm, ctx, img)[0]


if __name__ == "__main__":
    main()
