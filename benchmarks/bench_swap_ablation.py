"""What carries the identity that survives ``swap``: one setting changed at a time.

Why: after the swap, FaceRes (the audit-only recogniser the swap never queries) still
verifies 10-15 % of LFW eval probes as their own gallery photo. To remove that residue we
must know where it lives — the kept eye openings, the face's own shape, the original
pixels kept in front of the forehead (occluders), shading. This benchmark renders the
unverified swap (``verify=False``: the keyed first donor, no escalation, so only the
render differs between rows) under named settings and reports, per recogniser, the mean
similarity of the anonymised probe to the same person's gallery photo, the share verified
and closed-set rank-1.

The people are the CelebA-id *train* split (settings are tuned here; the LFW eval people
stay for ``bench_swap_privacy.py``): per person photo 1 is the probe, photo 2 the gallery.

    nice .venv/bin/python benchmarks/bench_swap_ablation.py --n 150
    nice .venv/bin/python benchmarks/bench_swap_ablation.py --variants '{"eyes0": {"eye_keep": 0}}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
PEOPLE = ROOT.parent / "shared" / "data" / "celeba-id" / "Datasets" / "train_dataset"
RECOGNISERS = ("sface", "faceres")

#: The rows of docs/benchmarks.md ("What carries the residual identity"): ``SwapAnonymizer``
#: keyword arguments; "original" is the photo itself (no swap), the ceiling.
VARIANTS: dict[str, dict] = {
    "original": {},
    "default": {},
    "donor eyes (eye_keep 0)": {"eye_keep": 0.0},
    "no occluders kept (occlusion off)": {"occlusion": False},
    "shape x1.5": {"shape_alpha": 1.5, "own_beta": 1.5},
    "shape x2": {"shape_alpha": 2.0, "own_beta": 2.0},
    "forehead 1.2": {"forehead": 1.2},
    "no shading transfer": {"shading": False},
    "occlusion off + shape x1.5": {"occlusion": False, "shape_alpha": 1.5, "own_beta": 1.5},
    "occlusion off + shape x2 + donor eyes + forehead 1.2": {
        "occlusion": False, "shape_alpha": 2.0, "own_beta": 2.0, "eye_keep": 0.0,
        "forehead": 1.2},
}


def load_people(n: int, seed: int, analyzer) -> list[tuple[str, Path, object, dict]]:
    """(person, probe path, probe face, gallery embeddings) for the first ``n`` people of a
    seeded order whose two photos both have a face."""
    from bench_swap_privacy import probe_and_gallery

    people = sorted(d.name for d in PEOPLE.iterdir() if d.is_dir())
    out = []
    for i in np.random.default_rng(seed).permutation(len(people)):
        photos = sorted((PEOPLE / people[i]).glob("*.jpg"))
        if len(photos) < 2:
            continue
        pair = probe_and_gallery(analyzer, photos, RECOGNISERS)
        if pair is None:
            continue
        _, f, g = pair
        out.append((people[i], photos[0], f, dict(g.embeddings)))
        if len(out) >= n:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variants", default=None,
                    help="JSON object: name -> SwapAnonymizer keyword arguments "
                         "(default: the documented rows)")
    ap.add_argument("--strips", type=Path, default=None,
                    help="write the first 8 anonymised probes of each row here (PNG; "
                         "CelebA pixels: keep them out of the repository)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import cv2

    from refacex.anonymize.base import FaceContext
    from refacex.anonymize.swap import SwapAnonymizer
    from refacex.faces.analysis import FaceAnalyzer
    from refacex.faces.detect import match_detection
    from refacex.faces.recognizers import get_recognizer
    from refacex.io.images import read_image

    variants = json.loads(args.variants) if args.variants else VARIANTS
    an = FaceAnalyzer()
    recs = {n: get_recognizer(n) for n in RECOGNISERS}
    people = load_people(args.n, args.seed, an)
    results = {}
    for name, kw in variants.items():
        sw = SwapAnonymizer(verify=False, **kw)
        found, shown = [], []
        for _, path, face, _ in people:
            probe = read_image(path)
            out = probe.copy()
            if name != "original":
                ctx = FaceContext.for_face(face, probe.shape[:2], donor_key=b"ablation-key")
                sw.apply(out, ctx)
            m, _ = match_detection(face, an.analyze(out))
            if m is not None:
                an.describe(out, m, landmarks=False, pose=False, recognizers=RECOGNISERS)
            found.append(None if m is None else m.embeddings)
            if len(shown) < 8:
                shown.append(cv2.resize(out, (256, 256), interpolation=cv2.INTER_AREA))
        row: dict = {"n": len(people), "redetected": sum(e is not None for e in found)}
        for rn, rec in recs.items():
            gallery = [p[3][rn] for p in people]
            sims, verified, rank1 = [], 0, 0
            for i, emb in enumerate(found):
                if emb is None:
                    continue
                scores = [rec.similarity(emb[rn], g) for g in gallery]
                sims.append(scores[i])
                verified += int(rec.same_person(emb[rn], gallery[i]))
                rank1 += int(np.argmax(scores) == i)
            k = max(1, len(sims))
            row[rn] = {"mean_similarity": round(float(np.mean(sims)), 4),
                       "verified": round(verified / k, 3), "rank1": round(rank1 / k, 3)}
        results[name] = row
        print(f"{name:55s} " + "  ".join(
            f"{rn} sim {row[rn]['mean_similarity']:.3f} ver {100 * row[rn]['verified']:.1f}% "
            f"r1 {100 * row[rn]['rank1']:.1f}%" for rn in RECOGNISERS), flush=True)
        if args.strips:
            args.strips.mkdir(parents=True, exist_ok=True)
            slug = "".join(c if c.isalnum() else "_" for c in name)
            cv2.imwrite(str(args.strips / f"{slug}.png"), np.hstack(shown))
    print(f"chance rank-1: {1 / max(1, len(people)):.4f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
