"""Key-holder re-identification (``refacex search``) on LFW evaluation people.

Protocol: ``--n`` LFW evaluation people with at least two photos (seeded draw; never
training people). Each person's first photo is anonymised (``swap``, both tiers, one
key) and kept twice: as the PNG refacex writes (the vault opens) and re-encoded *from
pixels* as JPEG 75 (metadata and vault gone: the robust tier alone). The probe is the
person's second photo. Closed-set rank-1: for every probe, is the best-scoring gallery
image that person's? Also, at the recogniser's threshold, the share of true pairs judged
the same person (TAR) and of false pairs (FAR). ``no key`` rows score the anonymised face
itself: what anyone without the key can link.

    .venv/bin/python benchmarks/bench_search.py --n 100 --json docs/bench_search.json
    .venv/bin/python benchmarks/bench_search.py --n 100 --recognizer faceres

The *no key* row is a privacy figure only with a recogniser ``swap`` never queries
(``faceres``); with SFace or dlib it understates what an attacker links.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def people(n: int, seed: int = 0) -> list[str]:
    names = (DATA / "splits" / "lfw_eval_people.txt").read_text().split()
    names = [p for p in names if (DATA / "lfw-deepfunneled" / p / f"{p}_0002.jpg").exists()]
    random.Random(seed).shuffle(names)
    return sorted(names[:n])


def rates(scores: np.ndarray, threshold: float) -> dict:
    """scores: (probes, gallery) similarity, the true match on the diagonal."""
    n = len(scores)
    true = np.eye(n, dtype=bool)
    valid = ~np.isnan(scores).all(axis=1)
    s = np.where(np.isnan(scores), -np.inf, scores)
    rank1 = float((s.argmax(axis=1) == np.arange(n))[valid].mean()) if valid.any() else 0.0
    return {"rank1": round(rank1, 4), "chance": round(1 / n, 4),
            "tar": round(float((s[true] >= threshold).mean()), 4),
            "far": round(float((s[~true] >= threshold).mean()), 4),
            "faces_read": int(valid.sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--recognizer", default="sface", choices=("sface", "faceres"),
                    help="sface (default; swap itself queries it) or faceres (audit-only: "
                         "the honest privacy figure for the no-key row); both are cosine "
                         "similarities with a >= threshold, as ``rates`` assumes")
    args = ap.parse_args(argv)

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from refacex.audit.distortions import jpeg
    from refacex.faces.recognizers import get_recognizer
    from refacex.io.images import encode_image, read_image
    from refacex.payload.keyring import OpenKeys, SealKeys
    from refacex.payload.sitekeys import SiteKey
    from refacex.pipeline import analyzer, anonymize, encode_output
    from refacex.recover.search import probe_embedding, restored_identities

    site = SiteKey(bytes(range(32, 64)))
    key = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    seal = SealKeys(recipients=[key.public_key()], site=site)
    keys = OpenKeys(private_key=key, trusted=[site.public])
    rec = get_recognizer(args.recognizer)
    names = people(args.n)
    probes = [probe_embedding(read_image(DATA / "lfw-deepfunneled" / p / f"{p}_0002.jpg"), rec)
              for p in names]
    gallery: dict[str, list[np.ndarray | None]] = {"vault": [], "robust": [], "no key": []}
    seconds: dict[str, list[float]] = {"vault": [], "robust": []}
    for p in names:
        img = read_image(DATA / "lfw-deepfunneled" / p / f"{p}_0001.jpg")
        res = anonymize(img, seal, method="swap")
        files = {"vault": encode_output(res, ".png"),
                 "robust": encode_image(jpeg(res.image, 75), ".jpg")}
        for tier, data in files.items():
            t0 = time.perf_counter()
            try:
                found = restored_identities(data, keys, rec)
            except Exception:  # noqa: BLE001  (a benchmark reports, never stops)
                found = []
            seconds[tier].append(time.perf_counter() - t0)
            # The person is the photo's most central face (LFW centres it).
            best = min(found, key=lambda fe: np.linalg.norm(np.mean(fe[0]["kps"], 0) - 125),
                       default=None)
            gallery[tier].append(None if best is None else best[1])
        faces = analyzer().detector.detect(res.image)
        centre = min(faces, key=lambda f: np.linalg.norm(f.box[:2] + f.box[2:] / 2 - 125),
                     default=None)
        gallery["no key"].append(None if centre is None else rec.embed(res.image, centre))
    out = {"n": len(names), "recognizer": args.recognizer, "threshold": rec.threshold}
    for tier, embs in gallery.items():
        scores = np.array([[np.nan if e is None else rec.similarity(pr, e) for e in embs]
                           for pr in probes])
        out[tier] = rates(scores, rec.threshold)
        if tier in seconds:
            out[tier]["seconds_per_image"] = round(float(np.median(seconds[tier])), 3)
        print(f"{tier:7s} " + " ".join(f"{k} {v}" for k, v in out[tier].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
