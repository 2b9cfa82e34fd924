"""Benchmark of the robust in-pixel channel (refacex.stego.robust).

Measures capacity (bytes and bits per megapixel), PSNR, embed/extract time, and for each
attack the raw bit-error rate before error correction (at the decoder's best
synchronisation hypothesis) and the exact-decode success rate.

    .venv/bin/python benchmarks/bench_robust.py --json out.json
    .venv/bin/python benchmarks/bench_robust.py --payload 40 --lfw 50

Images: the sample photos (astronaut at 250x250, 640x480 and 1280x720; t1 at its own
1280x886), plus up to ``--lfw`` photos read in place from ../shared/data/lfw-deepfunneled
when that folder exists (never copied).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from refacex.errors import NoPayloadError
from refacex.io.images import read_image
from refacex.models import resolve
from refacex.stego import robust

Attack = Callable[[np.ndarray], np.ndarray]


def _jpeg(q: int) -> Attack:
    def f(img: np.ndarray) -> np.ndarray:
        return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 1)

    return f


def _scale(s: float) -> Attack:
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return lambda img: cv2.resize(img, None, fx=s, fy=s, interpolation=interp)


def _crop(p: float) -> Attack:
    def f(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        dy, dx = int(round(h * p / 2)), int(round(w * p / 2))
        return img[dy : h - dy, dx : w - dx]

    return f


def _gain(a: float, contrast: bool) -> Attack:
    def f(img: np.ndarray) -> np.ndarray:
        x = img.astype(np.float64)
        m = x.mean() if contrast else 0.0
        return np.clip((x - m) * a + m, 0, 255).astype(np.uint8)

    return f


def _noise(sigma: float) -> Attack:
    def f(img: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(0)
        return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)

    return f


ATTACKS: dict[str, Attack] = {
    "none": lambda img: img,
    "jpeg95": _jpeg(95),
    "jpeg75": _jpeg(75),
    "jpeg50": _jpeg(50),
    "jpeg30": _jpeg(30),
    "scale0.5": _scale(0.5),
    "scale0.75": _scale(0.75),
    "scale1.5": _scale(1.5),
    "scale2.0": _scale(2.0),
    "crop2%": _crop(0.02),
    "crop5%": _crop(0.05),
    "crop10%": _crop(0.10),
    "bright+20%": _gain(1.2, False),
    "bright-20%": _gain(0.8, False),
    "contrast+20%": _gain(1.2, True),
    "contrast-20%": _gain(0.8, True),
    "noise2": _noise(2.0),
    "noise5": _noise(5.0),
    "scale0.5+jpeg75": lambda img: _jpeg(75)(_scale(0.5)(img)),
}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def _raw_ber(img: np.ndarray, h: int, w: int, data: bytes) -> float:
    """Bit-error rate of hard decisions before ECC, at the best sync hypothesis."""
    cands = list(robust._candidates(img))
    if not cands:
        return 0.5
    best = max(cands, key=lambda c: c.z)
    hc, wc = robust._canonical_shape(h, w)
    truth = robust._target_bits(hc // robust.BLOCK, wc // robust.BLOCK, data)
    ny = min(best.soft.shape[0], truth.shape[0] - best.by0)
    nx = min(best.soft.shape[1], truth.shape[1] - best.bx0)
    if ny <= 0 or nx <= 0:
        return 0.5
    soft = best.soft[:ny, :nx]
    ref = truth[best.by0 : best.by0 + ny, best.bx0 : best.bx0 + nx]
    used = soft != 0
    if not used.any():
        return 0.5
    return float(((soft < 0) != (ref > 0.5))[used].mean())


def _images(lfw: int) -> list[tuple[str, str, np.ndarray]]:
    ast = read_image(resolve("astronaut"))
    out = [
        ("astronaut", "250x250", cv2.resize(ast, (250, 250), interpolation=cv2.INTER_AREA)),
        ("astronaut", "640x480", cv2.resize(ast, (640, 480), interpolation=cv2.INTER_AREA)),
        ("astronaut", "1280x720", cv2.resize(ast, (1280, 720), interpolation=cv2.INTER_CUBIC)),
    ]
    t1 = read_image(resolve("t1"))
    out.append(("t1", f"{t1.shape[1]}x{t1.shape[0]}", t1))
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-deepfunneled"
    if lfw > 0 and root.is_dir():
        files = sorted(root.rglob("*.jpg"))
        for p in files[:: max(1, len(files) // lfw)][:lfw]:
            out.append(("lfw", "250x250", read_image(p)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--payload", default="full", help="'full' (capacity) or a byte count")
    ap.add_argument("--lfw", type=int, default=50, help="LFW photos to include (0: none)")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated subset")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    args = ap.parse_args()
    attacks = [a for a in args.attacks.split(",") if a]
    rng = np.random.default_rng(0)
    rows: dict[tuple[str, str], dict] = {}
    for src, size, img in _images(args.lfw):
        h, w = img.shape[:2]
        cap = robust.capacity_bytes(h, w)
        n = cap if args.payload == "full" else min(cap, int(args.payload))
        data = rng.bytes(n)
        t = time.perf_counter()
        marked = robust.embed(img, data)
        t_embed = time.perf_counter() - t
        key = (src, size)
        row = rows.setdefault(
            key,
            {"source": src, "size": size, "capacity_bytes": cap, "payload_bytes": n,
             "bits_per_mpix": 8 * cap / (h * w / 1e6), "psnr": [], "embed_ms": [],
             "extract_ms": [], "attacks": {a: {"ok": 0, "n": 0, "ber": []} for a in attacks}},
        )  # fmt: skip
        row["psnr"].append(_psnr(marked, img))
        row["embed_ms"].append(1000 * t_embed)
        for a in attacks:
            x = ATTACKS[a](marked)
            t = time.perf_counter()
            try:
                ok = robust.extract(x) == data
            except NoPayloadError:
                ok = False
            if a == "none":
                row["extract_ms"].append(1000 * (time.perf_counter() - t))
            r = row["attacks"][a]
            r["ok"] += int(ok)
            r["n"] += 1
            r["ber"].append(_raw_ber(x, h, w, data))
        print(f"done {src} {size}", flush=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, payload={args.payload}\n")
    print(
        "| image | size | n | capacity B | bits/MP | payload B | PSNR dB (min) | embed ms "
        "| extract ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows.values():
        print(
            f"| {row['source']} | {row['size']} | {len(row['psnr'])} | {row['capacity_bytes']} "
            f"| {row['bits_per_mpix']:.0f} | {row['payload_bytes']} "
            f"| {np.mean(row['psnr']):.2f} ({np.min(row['psnr']):.2f}) "
            f"| {np.mean(row['embed_ms']):.0f} | {np.mean(row['extract_ms']):.0f} |"
        )
    print("\nraw BER before ECC (%) / exact decodes\n")
    print("| attack | " + " | ".join(f"{r['source']} {r['size']}" for r in rows.values()) + " |")
    print("|---|" + "---|" * len(rows))
    for a in attacks:
        cells = []
        for row in rows.values():
            r = row["attacks"][a]
            cells.append(f"{100 * np.mean(r['ber']):.1f} / {r['ok']}/{r['n']}")
        print(f"| {a} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(list(rows.values()), indent=1))


if __name__ == "__main__":
    main()
