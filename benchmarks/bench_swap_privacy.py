"""Quick privacy + attribute check of ``swap`` on LFW eval people, three recognisers.

A lighter companion to ``run_audit_lfw.py`` (which measures everything and takes hours):
per person, the first photo is the probe (anonymised), the second the gallery. Reported
per recogniser (SFace and dlib, which the swap's own check queries, and HSE FaceRes,
which it never does): closed-set rank-1 of the anonymised probe among the N gallery
photos (chance 1/N), and the share verified as the same person as their own gallery
photo. Also: dlib false matches between different swapped people, and perceived
attribute agreement (face-api: sex, age within 8 years, expression class) original vs
anonymised.

    nice .venv/bin/python benchmarks/bench_swap_privacy.py --n 100 --donors gan
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
RECOGNISERS = ("sface", "dlib", "faceres")


def probe_and_gallery(analyzer, photos: list[Path], recognizers):
    """(probe image, probe face, gallery face) from a person's first two photos: the face
    nearest each centre, the gallery face described with ``recognizers``; None when
    either photo shows no face. Shared with ``bench_swap_ablation.py``."""
    from refacex.faces.detect import nearest_centre
    from refacex.io.images import read_image

    probe, gal = read_image(photos[0]), read_image(photos[1])
    pf, gf = analyzer.analyze(probe), analyzer.analyze(gal)
    if not pf or not gf:
        return None
    g = nearest_centre(gf, gal.shape[:2])
    analyzer.describe(gal, g, recognizers=recognizers)
    return probe, nearest_centre(pf, probe.shape[:2]), g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--donors", default="gan")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--render-donors", action="store_true")
    ap.add_argument("--set", default="{}", metavar="JSON",
                    help="extra SwapAnonymizer keyword arguments, e.g. "
                         "'{\"shape_alpha\": 1.25}' (a variant beside the default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from refacex.anonymize.base import FaceContext
    from refacex.anonymize.swap import SwapAnonymizer
    from refacex.faces.analysis import FaceAnalyzer
    from refacex.faces.attributes import face_attributes
    from refacex.faces.detect import match_detection
    from refacex.faces.recognizers import get_recognizer

    people = [s.strip() for s in (DATA / "splits/lfw_eval_people.txt").read_text().split()]
    rng = np.random.default_rng(args.seed)
    chosen = sorted(people[i] for i in rng.permutation(len(people))[: args.n])
    an = FaceAnalyzer()
    recs = {n: get_recognizer(n) for n in RECOGNISERS}
    sw = SwapAnonymizer(donors=args.donors, verify=not args.no_verify,
                        quality=args.render_donors, **json.loads(args.set))
    rows, times = [], []
    for name in chosen:
        pair = probe_and_gallery(an, sorted((DATA / "lfw-deepfunneled" / name).glob("*.jpg")),
                                 RECOGNISERS)
        if pair is None:
            continue
        probe, f, g = pair
        an.describe(probe, f, recognizers=RECOGNISERS)
        out = probe.copy()
        ctx = FaceContext.for_face(f, probe.shape[:2], donor_key=b"bench-key")
        t0 = time.perf_counter()
        sw.apply(out, ctx)
        times.append(time.perf_counter() - t0)
        m, _ = match_detection(f, an.analyze(out))
        if m is None:
            rows.append({"person": name, "redetected": False})
            continue
        an.describe(out, m, recognizers=RECOGNISERS)
        a0, a1 = face_attributes(probe, f), face_attributes(out, m)
        rows.append({"person": name, "redetected": True, "donor": ctx.info.get("donor"),
                     "anon": {n: m.embeddings[n] for n in RECOGNISERS},
                     "orig": {n: f.embeddings[n] for n in RECOGNISERS},
                     "gallery": {n: g.embeddings[n] for n in RECOGNISERS},
                     "sex": (a0.gender, a1.gender), "age": (a0.age, a1.age),
                     "expr": (a0.expression, a1.expression),
                     "pose_error": float(max(abs(f.pose.yaw - m.pose.yaw),
                                             abs(f.pose.pitch - m.pose.pitch)))})
        print(f"{len(rows)}/{len(chosen)} {name} {ctx.info.get('donor')} "
              f"{times[-1]:.1f}s", flush=True)
    ok = [r for r in rows if r["redetected"]]
    n = len(ok)
    res: dict = {"n": n, "redetected": n / max(1, len(rows)), "donors": args.donors,
                 "settings": json.loads(args.set),
                 "verify": not args.no_verify, "chance_rank1": 1 / n,
                 "seconds_per_face_median": float(np.median(times))}
    for rn, rec in recs.items():
        gal = [r["gallery"][rn] for r in ok]
        rank1 = verified = 0
        for i, r in enumerate(ok):
            scores = [rec.similarity(r["anon"][rn], gv) for gv in gal]
            rank1 += int(np.argmax(scores) == i)
            verified += int(rec.same_person(r["anon"][rn], gal[i]))
        # Reference: the same with the original probe (what anonymisation must destroy).
        base = sum(int(np.argmax([rec.similarity(r["orig"][rn], gv) for gv in gal]) == i)
                   for i, r in enumerate(ok))
        res[rn] = {"rank1": rank1 / n, "verified_vs_gallery": verified / n,
                   "rank1_original": base / n}
    dl = recs["dlib"]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    fm = sum(dl.same_person(ok[i]["anon"]["dlib"], ok[j]["anon"]["dlib"]) for i, j in pairs)
    fm0 = sum(dl.same_person(ok[i]["orig"]["dlib"], ok[j]["orig"]["dlib"]) for i, j in pairs)
    res["dlib_false_match_between_swapped"] = fm / max(1, len(pairs))
    res["dlib_false_match_between_originals"] = fm0 / max(1, len(pairs))
    res["sex_agreement"] = float(np.mean([r["sex"][0] == r["sex"][1] for r in ok]))
    res["age_within_8"] = float(np.mean([abs(r["age"][0] - r["age"][1]) <= 8 for r in ok]))
    res["expression_agreement"] = float(np.mean([r["expr"][0] == r["expr"][1] for r in ok]))
    res["distinct_donors"] = len({r["donor"] for r in ok})
    res["pose_error_median_deg"] = float(np.median([r["pose_error"] for r in ok]))
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
