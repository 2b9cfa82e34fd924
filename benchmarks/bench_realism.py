"""Realism of each method on LFW evaluation faces: FID / KID of the anonymised face crops.

Protocol (why): the same probes as ``run_audit_lfw.py`` (seeded draw of LFW evaluation
people, each person's first photo; never used for building donors), anonymised by the
shipped pipeline with default tiers (what a user gets, in-pixel code included). The
primary face's 5 landmarks in the original (YuNet) cut the audit's aligned crop
(``refacex.audit.realism``: 128 px, padding 0.25) from the original and from each output,
so every row compares the same faces at the same framing. Reference rows: the originals
after a whole-image JPEG-75 re-encode (a light, realistic change), and *another photo of
the same person* (real against real: what FID/KID at this n give for two sets of genuine
faces). KID is the paired form (``realism.kid(..., paired=True)``). Only numbers are
written (``--work``/realism.json); features are cached there, so a rerun resumes.

    nice -n 10 .venv/bin/python benchmarks/bench_realism.py --work ../realism-lfw --n 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
METHODS = ("swap", "swap-templates", "blur", "pixelate")
#: A set name -> (method, method options): "swap-templates" is ``--donors templates``.
VARIANTS = {"swap-templates": ("swap", {"donors": "templates"})}
REFERENCES = ("jpeg75", "other_photo")


def probes(data: Path, n: int, seed: int) -> list[tuple[str, Path, Path]]:
    """(person, first photo, second photo) of ``n`` LFW eval people, drawn as in
    ``run_audit_lfw.build_sets``."""
    people = [ln.strip() for ln in (data / "splits" / "lfw_eval_people.txt").read_text()
              .splitlines() if ln.strip()]
    rng = np.random.default_rng(seed)
    out = []
    for name in sorted(people[i] for i in rng.permutation(len(people))[:n]):
        photos = sorted((data / "lfw-deepfunneled" / name).glob("*.jpg"))
        if len(photos) >= 2:
            out.append((name, photos[0], photos[1]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT.parent / "realism-lfw")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    a = ap.parse_args(argv)
    if not a.data.is_dir():
        print(f"{a.data} absent: the LFW data is only on project machines", file=sys.stderr)
        return 2
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from refacex.audit import realism
    from refacex.audit.inception import default_inception
    from refacex.audit.privacy import primary_index
    from refacex.errors import RefacexError
    from refacex.faces import FaceAnalyzer
    from refacex.io.images import decode_image, encode_image, read_image
    from refacex.payload.keyring import SealKeys
    from refacex.payload.sitekeys import SiteKey
    from refacex.pipeline import anonymize

    methods = [m for m in a.methods.split(",") if m]
    (a.work / "features").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    default_inception()  # fetch + convert on first use, timed separately
    t_load = time.perf_counter() - t0
    keys = SealKeys(recipients=[X25519PrivateKey.generate().public_key()],
                    site=SiteKey.generate())
    analyzer = FaceAnalyzer()
    feats: dict[str, list[np.ndarray]] = {k: [] for k in ("orig", *REFERENCES, *methods)}
    t_feat = n_feat = 0.0
    t_anon: dict[str, float] = dict.fromkeys(methods, 0.0)
    n_anon: dict[str, int] = dict.fromkeys(methods, 0)
    skipped: list[str] = []
    todo = probes(a.data, a.n, a.seed)
    for i, (name, first, second) in enumerate(todo):
        cp = a.work / "features" / f"{name}.npz"
        got: dict[str, np.ndarray] = {}
        if cp.is_file():
            with np.load(cp) as z:
                got = {k: z[k] for k in z.files}
        want = [k for k in feats if k not in got]
        if want:
            img = read_image(first)
            faces = analyzer.detector.detect(img)
            p = primary_index(faces, img.shape[:2])
            g = read_image(second)
            gfaces = analyzer.detector.detect(g)
            gp = primary_index(gfaces, g.shape[:2])
            if p is None or gp is None:
                skipped.append(name)
                continue
            outs: dict[str, np.ndarray] = {"orig": img, "jpeg75": decode_image(
                encode_image(img, ".jpg", 75))}
            try:
                for m in (k for k in want if k in methods):
                    t1 = time.perf_counter()
                    method, options = VARIANTS.get(m, (m, None))
                    outs[m] = anonymize(img, keys, method=method,
                                        method_options=options).image
                    t_anon[m] += time.perf_counter() - t1
                    n_anon[m] += 1
            except RefacexError as exc:  # the sets stay paired: drop the probe everywhere
                print(f"{name}: {exc}", file=sys.stderr)
                skipped.append(name)
                continue
            crops = [realism.face_crops(outs[k], [faces[p].kps])[0]
                     for k in want if k != "other_photo"]
            keys_ = [k for k in want if k != "other_photo"]
            if "other_photo" in want:
                crops.append(realism.face_crops(g, [gfaces[gp].kps])[0])
                keys_.append("other_photo")
            t1 = time.perf_counter()
            f = realism.features(crops)
            t_feat += time.perf_counter() - t1
            n_feat += len(crops)
            got.update({k: f[j] for j, k in enumerate(keys_)})
            tmp = cp.with_suffix(".tmp.npz")
            np.savez(tmp, **got)
            tmp.replace(cp)
        for k in feats:
            feats[k].append(got[k])
        if (i + 1) % 20 == 0 and n_feat:
            print(f"{i + 1}/{len(todo)} probes, {t_feat / max(n_feat, 1):.2f} s/crop",
                  flush=True)
    real = np.stack(feats["orig"])
    rows: list[dict[str, Any]] = []
    for k in (*REFERENCES, *methods):
        fake = np.stack(feats[k])
        row = {"set": k, **realism.summarize(real, fake)}
        if k in methods and n_anon[k]:
            row["anonymise_s_per_img"] = t_anon[k] / n_anon[k]
        rows.append(row)
    result = {"n_probes": len(real), "seed": a.seed, "crop": [realism.CROP_SIZE,
                                                               realism.CROP_PADDING],
              "load_convert_s": t_load, "features_s_per_crop": t_feat / n_feat if n_feat
              else None, "crops_computed": int(n_feat), "skipped": skipped, "rows": rows}
    (a.work / "realism.json").write_text(json.dumps(result, indent=1))
    print(f"\n{len(real)} faces; features {result['features_s_per_crop'] or 0:.2f} s/crop "
          f"({int(n_feat)} computed); model load/convert {t_load:.1f} s")
    print("| set | FID | KID ×10³ (paired) | KID std ×10³ (half subsets) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['fid']:.1f} | {r['kid'] * 1e3:.2f} | "
              f"{r['kid_std'] * 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
