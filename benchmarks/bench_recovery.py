"""Robust-tier recovery quality after a sharing platform: learned code vs PCA code.

Protocol: each photo is anonymised (``swap``, robust tier only, a fixed key), written as
PNG, then *re-encoded from pixels* as JPEG 75 (so every byte of metadata, and the vault,
is gone) and recovered with the right key. For every face that got a code, the original
and the recovered face are compared on two aligned crops:

* ``tight112``: the recognisers' 112 px crop (ArcFace template, brows to chin, padding 0);
* ``ctx128``: the 128 px crop with 25 % context the earlier tables used (``CROP_PADDING``);

with PSNR, SSIM and LPIPS, and whether the recovered face *verifies as the original* for
SFace and dlib at their published thresholds. ``received`` rows are the anonymised JPEG
itself (no recovery): the floor. Photos: the bundled samples and the first photo of ``--n``
LFW evaluation people (seeded draw; never training people).

    .venv/bin/python benchmarks/bench_recovery.py --n 100 --json docs/bench_recovery.json

``--scale 2`` measures LFW at 500 px (codes ~4x larger: the rate curve's upper part).
``--codes``: any of ``learned``, ``pca`` (forced for every photo) and ``auto`` (the
pipeline's default choice per photo), default ``learned,pca``. Seconds per image are
wall time on the machine it runs on.
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
CROPS = {"tight112": (112, 0.0), "ctx128": (128, 0.25)}


def photos(n: int, seed: int = 0) -> list[tuple[str, Path]]:
    from refacex.models import resolve

    out = [(name, Path(resolve(name))) for name in ("t1", "astronaut", "tom_hanks")]
    people = (DATA / "splits" / "lfw_eval_people.txt").read_text().split()
    random.Random(seed).shuffle(people)
    for p in sorted(people[:n]):
        out.append((p, DATA / "lfw-deepfunneled" / p / f"{p}_0001.jpg"))
    return out


def measure(codes: list[str], items: list[tuple[str, Path]], scale: float = 1.0) -> dict:
    import cv2
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from refacex.audit.distortions import jpeg
    from refacex.audit.lpips import lpips_distance
    from refacex.audit.metrics import psnr, ssim
    from refacex.faces.align import warp_face
    from refacex.faces.recognizers import get_recognizer
    from refacex.io.images import encode_image, read_image
    from refacex.payload.keyring import OpenKeys, SealKeys
    from refacex.payload.sitekeys import SiteKey
    from refacex.pipeline import analyzer, anonymize
    from refacex.recover import recover

    site = SiteKey(bytes(range(32, 64)))
    key = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    seal = SealKeys(recipients=[key.public_key()], site=site)
    open_keys = OpenKeys(private_key=key, trusted=[site.public])
    recs = {n: get_recognizer(n) for n in ("sface", "dlib")}
    fa = analyzer()
    rows: dict[str, list[dict]] = {c: [] for c in codes}
    rows["received"] = []
    for code in codes:
        for name, path in items:
            img = read_image(path)
            if scale != 1.0:  # larger photos carry larger codes (the rate curve)
                img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            t0 = time.perf_counter()
            try:
                res = anonymize(img, seal, method="swap", tiers=("robust",),
                                robust_code=code)
            except Exception as exc:  # noqa: BLE001  (a benchmark reports, never stops)
                print(f"{name}: {exc}", file=sys.stderr)
                continue
            t_anon = time.perf_counter() - t0
            shared = encode_image(jpeg(res.image, 75), ".jpg", 95)  # pixels only
            t0 = time.perf_counter()
            try:
                rec = recover(shared, open_keys).image
                status = "recovered"
            except Exception as exc:  # noqa: BLE001
                rec, status = None, f"failed: {type(exc).__name__}"
            t_rec = time.perf_counter() - t0
            received = jpeg(res.image, 75)
            for f, rep in zip(res.detected, res.faces, strict=True):
                if not rep.robust_code_bytes:
                    continue
                fa.describe(img, f, landmarks=False, pose=False)
                row = {"photo": name, "face": rep.index, "code_bytes": rep.robust_code_bytes,
                       "status": status, "anonymise_s": t_anon, "recover_s": t_rec}
                pairs = [(rows[code], rec)]
                if code == codes[0]:  # the floor: the anonymised JPEG, no recovery
                    pairs.append((rows["received"], received))
                for target, out in pairs:
                    if out is None:
                        target.append(dict(row))
                        continue
                    r = dict(row)
                    for cname, (size, pad) in CROPS.items():
                        a = warp_face(img, f.kps, size, pad).crop
                        b = warp_face(out, f.kps, size, pad).crop
                        r[f"{cname}_psnr"] = psnr(a, b)
                        r[f"{cname}_ssim"] = ssim(a, b)
                        r[f"{cname}_lpips"] = lpips_distance(a, b)
                    for rn, rg in recs.items():
                        r[f"{rn}_same"] = bool(rg.same_person(rg.embed(img, f),
                                                              rg.embed(out, f)))
                    target.append(r)
                print(f"{code} {name} face {rep.index}: {rep.robust_code_bytes} B "
                      f"{rows[code][-1].get('tight112_psnr', float('nan')):.2f} dB "
                      f"(received {rows['received'][-1].get('tight112_psnr', 0):.2f})",
                      flush=True)
    return rows


def summarise(rows: list[dict]) -> dict:
    ok = [r for r in rows if "tight112_psnr" in r]
    out: dict = {"faces": len(rows), "recovered": len(ok)}
    for k in sorted({k for r in ok for k in r if k.endswith(("psnr", "ssim", "lpips"))}):
        out[k] = round(float(np.mean([r[k] for r in ok])), 4)
    for rn in ("sface", "dlib"):
        if ok:
            out[f"{rn}_verifies"] = round(float(np.mean([r[f"{rn}_same"] for r in ok])), 4)
    for k in ("anonymise_s", "recover_s"):
        if ok:
            out[k] = round(float(np.median([r[k] for r in ok])), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="LFW eval people")
    ap.add_argument("--codes", default="learned,pca")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="resize every photo first (e.g. 2: LFW at 500 px, ~4x the code)")
    ap.add_argument("--no-samples", action="store_true", help="LFW photos only")
    args = ap.parse_args(argv)
    codes = args.codes.split(",")
    items = photos(args.n)
    if args.no_samples:
        items = items[3:]
    rows = measure(codes, items, args.scale)
    samples = ("t1", "astronaut", "tom_hanks")
    groups = {"samples": lambda r: r["photo"] in samples,
              "lfw": lambda r: r["photo"] not in samples}
    summary = {}
    for code, rs in rows.items():
        for g, pick in groups.items():
            summary[f"{code}/{g}"] = summarise([r for r in rs if pick(r)])
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
