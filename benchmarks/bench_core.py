"""Reversible core: per-image time of anonymise and recover (each tier separately),
robust-tier capacity, and survival/recovery quality of the whole pipeline under the
audit's distortion suite.

    .venv/bin/python benchmarks/bench_core.py [--repeat 3] [--json out.json]

Channel-level bit-error rates (before error correction) are measured by
``benchmarks/bench_robust.py``; this script measures what a user gets end to end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from refacex.anonymize import CROP_PADDING
from refacex.audit.distortions import DISTORTIONS
from refacex.audit.metrics import psnr
from refacex.errors import RefacexError
from refacex.faces.align import transform_points, warp_face
from refacex.io.images import encode_image, read_image
from refacex.payload.crypto import overhead
from refacex.payload.facecode import codec
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.payload.sitekeys import SiteKey
from refacex.pipeline import analyzer, anonymize, encode_output
from refacex.recover import recover
from refacex.stego import robust

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_images() -> dict[str, np.ndarray]:
    from refacex.models import resolve

    astro = read_image(resolve("astronaut"))
    imgs = {
        "640x480, 1 face": cv2.resize(astro, (640, 640), interpolation=cv2.INTER_CUBIC)[80:560],
        "astronaut 512x512, 1 face": astro,
        "t1 1280x886, 6 faces": read_image(resolve("t1")),
    }
    lfw = sorted((SHARED / "lfw-deepfunneled").glob("A*/*_0001.jpg"))[:1]
    if lfw:
        imgs["LFW 250x250, 1 face"] = read_image(lfw[0])
    return imgs


def _ms(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def speed(imgs: dict, keys: SealKeys, opener: OpenKeys, repeat: int) -> list[dict]:
    rows = []
    for name, img in imgs.items():
        row = {"image": name}
        for label, kw in [("swap, no payload", {"tiers": ()}),
                          ("swap, vault", {"tiers": ("vault",)}),
                          ("swap, robust", {"tiers": ("robust",)}),
                          ("swap, both tiers", {}),
                          ("swap unverified, both", {"method_options": {"verify": False}}),
                          ("blur, both tiers", {"method": "blur"})]:
            ms, res = _ms(lambda kw=kw, img=img: anonymize(img, keys, **{"method": "swap", **kw}),
                          repeat)
            row[label] = round(ms)
            if label == "swap, both tiers":
                row["stages (both)"] = {k: round(v) for k, v in res.timings_ms.items()}
                data = encode_output(res, ".png")
                row["encode+attach .png"] = round(_ms(lambda r=res: encode_output(r, ".png"),
                                                      repeat)[0])
                stripped = encode_image(res.image, ".png")
                row["recover vault"] = round(_ms(lambda d=data: recover(d, opener), repeat)[0])
                try:
                    row["recover robust"] = round(_ms(lambda d=stripped: recover(d, opener),
                                                      repeat)[0])
                except RefacexError as exc:
                    row["recover robust"] = f"failed: {exc}"
        rows.append(row)
    return rows


def capacity() -> list[dict]:
    fc = codec()
    rows = []
    for w, h in [(250, 250), (640, 480), (1280, 720), (1920, 1080)]:
        cap = robust.capacity_bytes(h, w)
        row = {"size": f"{w}x{h}", "capacity_bytes": cap,
               "bits_per_MP": round(cap * 8 / (w * h / 1e6))}
        for mode, n in [("compact-public-key", 1), ("compact-passphrase", 1),
                        ("compact-public-key", 6)]:
            # envelope 6 + crypto + image size ~5 + per face ~15 + code
            free = cap - 6 - overhead(mode) - 5 - 15 * n
            per_face = free // n
            lvl = fc.best_level(per_face) if per_face > 0 else None
            key = f"{mode.replace('compact-', '')} x{n}: code B/face"
            row[key] = 0 if lvl is None else fc.levels[lvl].nbytes
        rows.append(row)
    return rows


def survival(imgs: dict, keys: SealKeys, opener: OpenKeys) -> list[dict]:
    rows = []
    for name, img in imgs.items():
        faces = analyzer().detector.detect(img)
        res = anonymize(img, keys)
        data = encode_output(res, ".png")
        row = {"image": name, "robust_bytes": res.robust_bytes}
        for d in DISTORTIONS:
            out, m = d.fn(res.image, data)
            try:
                rec = recover(out, opener)
            except RefacexError:
                row[d.name] = "lost"
                continue
            f = faces[0]
            kps = transform_points(m, f.kps)
            ps = psnr(warp_face(img, f.kps, 128, CROP_PADDING).crop,
                      warp_face(rec.image, kps, 128, CROP_PADDING).crop)
            row[d.name] = f"{rec.tier[0]} {ps:.1f}"
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    k = X25519PrivateKey.generate()
    site = SiteKey.generate()
    keys = SealKeys(recipients=[k.public_key()], site=site)
    opener = OpenKeys(private_key=k, trusted=[site.public])
    imgs = test_images()
    anonymize(imgs["640x480, 1 face"], keys)  # load every model once
    out = {"capacity": capacity(), "speed_ms": speed(imgs, keys, opener, args.repeat),
           "survival": survival(imgs, keys, opener)}
    print("## Robust-tier capacity\n\n" + table(out["capacity"]))
    print("\n## Time per image (ms, median)\n\n" + table(
        [{k: v for k, v in r.items() if k != "stages (both)"} for r in out["speed_ms"]]))
    print("\nstages (swap, both tiers): " + "; ".join(
        f"{r['image']}: {r['stages (both)']}" for r in out["speed_ms"]))
    print("\n## Survival (tier used, PSNR dB of face 0's 128 px crop; 'lost' = no payload)\n")
    print(table(out["survival"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
