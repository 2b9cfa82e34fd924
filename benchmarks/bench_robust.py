"""Benchmark of the robust in-pixel channel (refacex.stego.robust).

Measures capacity (bytes and bits per megapixel), PSNR, flat-region visibility against
the JPEG-90 bar (``refacex.stego.visibility``), embed time, and for each attack the raw
bit-error rate before error correction (at the decoder's best synchronisation
hypothesis, erased blocks left out), the exact-decode success rate and the extract time.

    .venv/bin/python benchmarks/bench_robust.py --json out.json
    .venv/bin/python benchmarks/bench_robust.py --payload 40 --lfw 50
    .venv/bin/python benchmarks/bench_robust.py --layout fine --attacks none,jpeg75

``--module PATH`` measures another version of the channel (embedding and decoding), e.g.
the one before the masking::

    git show 604e733:refacex/stego/robust.py > /tmp/robust_604e733.py
    .venv/bin/python benchmarks/bench_robust.py --module /tmp/robust_604e733.py --payload full

(a module without ``image_capacity`` takes "invisible" as "full").

``--payload``: "invisible" (default: what the photo carries invisibly,
``robust.image_capacity``, i.e. what the pipeline fills), "full" (``capacity_bytes`` of
the size: the excess goes on flat blocks, visibly) or a byte count (capped at the
invisible capacity).

Images: the sample photos (astronaut at 250x250, 640x480 and 1280x720; t1 at its own
1280x886), plus up to ``--lfw`` photos of evaluation people (``splits/lfw_eval_people.txt``)
read in place from ../shared/data/lfw-deepfunneled when that folder exists (never
copied).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from refacex.audit.distortions import brightness, contrast, crop, jpeg, noise, resize
from refacex.audit.metrics import psnr
from refacex.errors import NoPayloadError
from refacex.io.images import read_image
from refacex.models import resolve
from refacex.stego import robust
from refacex.stego.visibility import visibility

Attack = Callable[[np.ndarray], np.ndarray]


ATTACKS: dict[str, Attack] = {
    "none": lambda img: img,
    "jpeg95": lambda img: jpeg(img, 95),
    "jpeg75": lambda img: jpeg(img, 75),
    "jpeg50": lambda img: jpeg(img, 50),
    "jpeg30": lambda img: jpeg(img, 30),
    "scale0.5": lambda img: resize(img, 0.5),
    "scale0.75": lambda img: resize(img, 0.75),
    "scale1.5": lambda img: resize(img, 1.5),
    "scale2.0": lambda img: resize(img, 2.0),
    "crop2%": lambda img: crop(img, 0.01, 0.01, 0.01, 0.01),
    "crop5%": lambda img: crop(img, 0.025, 0.025, 0.025, 0.025),
    "crop10%": lambda img: crop(img, 0.05, 0.05, 0.05, 0.05),
    "bright+20%": lambda img: brightness(img, 0.2),
    "bright-20%": lambda img: brightness(img, -0.2),
    "contrast+20%": lambda img: contrast(img, 0.2),
    "contrast-20%": lambda img: contrast(img, -0.2),
    "noise2": lambda img: noise(img, 2.0),
    "noise5": lambda img: noise(img, 5.0),
    "scale0.5+jpeg75": lambda img: jpeg(resize(img, 0.5), 75),
}


def _raw_ber(img: np.ndarray, h: int, w: int, data: bytes, layout: str) -> float:
    """Bit-error rate of hard decisions before ECC, at the best sync hypothesis (blocks the
    decoder erased as unmarked are not counted)."""
    cands = list(robust._candidates(img))
    if not cands:
        return 0.5
    best = max(cands, key=lambda c: c.z)
    hc, wc = robust._canonical_shape(
        h, w, layout if hasattr(robust, "LAYOUTS") else layout == "dense")
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
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    root, people = data / "lfw-deepfunneled", data / "splits" / "lfw_eval_people.txt"
    if lfw > 0 and root.is_dir() and people.is_file():
        names = people.read_text().split()
        for name in names[:: max(1, len(names) // lfw)][:lfw]:
            first = min((root / name).glob("*.jpg"), default=None)
            if first is not None:
                out.append(("lfw", "250x250", read_image(first)))
    return out


def _load(path: Path):
    """Another version of ``refacex.stego.robust``, from its source file."""
    spec = importlib.util.spec_from_file_location("robust_under_test", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (dataclasses look their module up there)
    spec.loader.exec_module(mod)
    return mod


def _payload_size(img: np.ndarray, payload: str, layout: str) -> int:
    h, w = img.shape[:2]
    if not hasattr(robust, "image_capacity"):  # a version before the masking
        full = robust.capacity_bytes(h, w, layout == "dense")
        return full if payload in ("invisible", "full") else min(full, int(payload))
    invisible = robust.image_capacity(img, layout)
    if payload == "invisible":
        return invisible
    if payload == "full":
        return robust.capacity_bytes(h, w, layout)
    return min(invisible, int(payload))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--payload", default="invisible",
                    help="'invisible' (image_capacity), 'full' (capacity_bytes) or a byte count")
    ap.add_argument("--layout", default="normal", choices=["normal", "dense", "fine"])
    ap.add_argument("--module", type=Path, help="another robust.py to measure (see above)")
    ap.add_argument("--lfw", type=int, default=50, help="LFW photos to include (0: none)")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated subset")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    args = ap.parse_args()
    if args.module:
        global robust
        robust = _load(args.module)
    attacks = [a for a in args.attacks.split(",") if a]
    rng = np.random.default_rng(0)
    rows: dict[tuple[str, str], dict] = {}
    for src, size, img in _images(args.lfw):
        h, w = img.shape[:2]
        layout = args.layout if hasattr(robust, "LAYOUTS") else args.layout == "dense"
        cap = robust.capacity_bytes(h, w, layout)
        n = _payload_size(img, args.payload, args.layout)
        data = rng.bytes(n)
        t = time.perf_counter()
        marked = robust.embed(img, data, layout)
        t_embed = time.perf_counter() - t
        key = (src, size)
        row = rows.setdefault(
            key,
            {"source": src, "size": size, "capacity_bytes": cap, "payload_bytes": n,
             "bits_per_mpix": 8 * cap / (h * w / 1e6), "psnr": [], "embed_ms": [],
             "extract_ms": [], "unmarked_ms": [], "payloads": [], "visibility": [],
             "attacks": {a: {"ok": 0, "n": 0, "ber": [], "ms": []} for a in attacks}},
        )  # fmt: skip
        row["psnr"].append(psnr(marked, img))
        row["payloads"].append(n)
        row["visibility"].append(visibility(img, marked).to_dict())
        row["embed_ms"].append(1000 * t_embed)
        t = time.perf_counter()
        with contextlib.suppress(NoPayloadError):  # (a false payload would be caught by tests)
            robust.extract(img)
        row["unmarked_ms"].append(1000 * (time.perf_counter() - t))  # every route tried
        for a in attacks:
            x = ATTACKS[a](marked)
            t = time.perf_counter()
            try:
                ok = robust.extract(x) == data
            except NoPayloadError:
                ok = False
            ms = 1000 * (time.perf_counter() - t)
            if a == "none":
                row["extract_ms"].append(ms)
            r = row["attacks"][a]
            r["ms"].append(ms)
            r["ok"] += int(ok)
            r["n"] += 1
            r["ber"].append(_raw_ber(x, h, w, data, args.layout))
        print(f"done {src} {size}", flush=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, payload={args.payload}, "
          f"layout={args.layout}\n")
    print(
        "| image | size | n | capacity B | bits/MP | payload B (min-max) | PSNR dB (min) "
        "| flat visibility: worst score / its bar (ok) | embed ms | extract ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows.values():
        vis = row["visibility"]
        worst = max(vis, key=lambda v: v["score"] - v["bar"])
        print(
            f"| {row['source']} | {row['size']} | {len(row['psnr'])} | {row['capacity_bytes']} "
            f"| {row['bits_per_mpix']:.0f} | {min(row['payloads'])}-{max(row['payloads'])} "
            f"| {np.mean(row['psnr']):.2f} ({np.min(row['psnr']):.2f}) "
            f"| {worst['score']:.3f} / {worst['bar']:.3f} ({sum(v['ok'] for v in vis)}/{len(vis)}) "
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
    print("\nextract time (ms, mean): which synchronisation route finds the copy decides it\n")
    print("| attack | " + " | ".join(f"{r['source']} {r['size']}" for r in rows.values()) + " |")
    print("|---|" + "---|" * len(rows))
    for a in attacks:
        ms = (np.mean(row["attacks"][a]["ms"]) for row in rows.values())
        print(f"| {a} | " + " | ".join(f"{v:.0f}" for v in ms) + " |")
    print("| unmarked (no payload) | "
          + " | ".join(f"{np.mean(row['unmarked_ms']):.0f}" for row in rows.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps(list(rows.values()), indent=1))


if __name__ == "__main__":
    main()
