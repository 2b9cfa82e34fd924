"""Train the learned face code + recovery network, resumably, and export them to ONNX.

    python -m refacex.train.fit_recovery --data ~/.cache/refacex/train/recovery \\
        --out ~/.cache/refacex/train/recovery-run --minutes 90
    python -m refacex.train.fit_recovery --data ... --out ... --export refacex/data

The run is time-budgeted (``--minutes`` of training in all, over any number of restarts;
the learning rate follows a cosine over that budget), checkpoints every few minutes
(``ckpt.pt``, written atomically) and resumes from it; progress goes to ``train.log``.
Shard 0 of the data is held out for validation. Training samples: a random channel
(JPEG 90/75/50, half size + JPEG 75) per sample, a random rate (``RATES``), a placement
jitter of the received face (the decoder finds the face again to a fraction of a pixel,
not exactly), and a left-right flip. ``--device cuda`` and a bigger ``--batch`` for a GPU.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from refacex.train.recovery import RATES, RES, RecoveryModel, recovery_loss

#: Placement jitter of the received face at RES px: shift (px), scale, rotation (degrees).
JITTER = (1.0, 0.02, 1.5)


def data_shards(folder: Path) -> list[Path]:
    """The complete shards (``shard-NNNN.npz``; a generator still writing one writes it
    under another name and renames it when done), in order."""
    return sorted(p for p in folder.glob("shard-*.npz") if re.fullmatch(r"shard-\d+\.npz", p.name))


def load_shards(paths: list[Path]) -> dict[str, np.ndarray]:
    """Stack shards, resampled to RES px: orig, host (N, RES, RES, 3), recv (N, C, ...)."""
    parts: dict[str, list[np.ndarray]] = {"orig": [], "host": [], "recv": []}
    for p in paths:
        with np.load(p) as z:
            for k in parts:
                parts[k].append(z[k])
    out = {k: np.concatenate(v) for k, v in parts.items()}
    return out


def _to_res(img: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
    if m is None:
        return cv2.resize(img, (RES, RES), interpolation=cv2.INTER_AREA)
    return cv2.warpAffine(img, m, (RES, RES), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REFLECT_101)


def _jitter_matrix(rng: np.random.Generator, side: int) -> np.ndarray:
    """side px -> RES px, with a random small similarity about the centre."""
    shift, scale, rot = JITTER
    s = RES / side * (1.0 + rng.uniform(-scale, scale))
    a = np.deg2rad(rng.uniform(-rot, rot))
    c = side / 2.0
    m = np.array([[s * np.cos(a), -s * np.sin(a)], [s * np.sin(a), s * np.cos(a)]])
    t = np.array([RES / 2.0, RES / 2.0]) + rng.uniform(-shift, shift, 2) - m @ [c, c]
    return np.hstack([m, t[:, None]]).astype(np.float32)


def _t(batch: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch).astype(np.float32)).permute(0, 3, 1, 2)


def make_batch(data: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator,
               augment: bool = True, channel: int | None = None, k: int | None = None):
    """(original, anonymised, received, k) tensors for the samples ``idx``."""
    o, h, r, ks = [], [], [], []
    n_ch = data["recv"].shape[1]
    for i in idx:
        ch = channel if channel is not None else int(rng.integers(n_ch))
        recv = data["recv"][i, ch]
        orig, host = _to_res(data["orig"][i]), _to_res(data["host"][i])
        recv = _to_res(recv, _jitter_matrix(rng, recv.shape[0]) if augment else None)
        if augment and rng.random() < 0.5:
            orig, host, recv = orig[:, ::-1], host[:, ::-1], recv[:, ::-1]
        o.append(orig)
        h.append(host)
        r.append(recv)
        ks.append(k if k is not None else RATES[int(rng.integers(len(RATES)))])
    return _t(o), _t(h), _t(r), torch.tensor(ks)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 255).round() - b) ** 2).mean())
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


def validate(model: RecoveryModel, val: dict[str, np.ndarray]) -> dict[str, float]:
    """PSNR (RES px crop, JPEG 75 channel) of the received face and of the recovery."""
    model.eval()
    rng = np.random.default_rng(0)
    idx = np.arange(min(len(val["orig"]), 200))
    res = {}
    with torch.no_grad():
        for k in (RATES[0], RATES[1], RATES[6], RATES[-1]):
            o, h, r, ks = make_batch(val, idx, rng, augment=False, channel=1, k=k)
            res["received"] = psnr(r, o)
            res[f"k{k}"] = psnr(model(o, h, r, ks), o)
    model.train()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=90.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp32", action="store_true",
                    help="no bfloat16 autocast (measured ~2x faster on AVX512-BF16 CPUs)")
    ap.add_argument("--export", type=Path, help="write the ONNX pair here and stop")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "ckpt.pt"
    model = RecoveryModel().to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    state = {"step": 0, "seconds": 0.0, "samples": 0}
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=args.device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
    if args.export:
        from refacex.train.export import export_recovery

        export_recovery(model.cpu().eval(), args.export)
        return 0
    log = (args.out / "train.log").open("a")

    def say(msg: str) -> None:
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    def save() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, tmp)
        os.replace(tmp, ckpt_path)

    rng = np.random.default_rng(state["step"])
    shards = data_shards(args.data)
    if len(shards) < 2:
        say("need at least two data shards (shard 0 is held out)")
        return 2
    val = load_shards(shards[:1])
    train, n_loaded = None, 0
    budget = args.minutes * 60.0
    say(f"start step {state['step']} at {state['seconds']:.0f}s of {budget:.0f}s")
    last_save = last_log = time.time()
    losses: list[float] = []
    while state["seconds"] < budget:
        shards = data_shards(args.data)[1:]
        if len(shards) != n_loaded:  # the data generator may still be adding shards
            train, n_loaded = load_shards(shards), len(shards)
            say(f"training on {len(train['orig'])} samples ({n_loaded} shards)")
        t0 = time.time()
        for g in opt.param_groups:
            frac = state["seconds"] / budget
            g["lr"] = args.lr * max(0.05, 0.5 * (1 + math.cos(math.pi * frac)))
        for _ in range(20):
            idx = rng.integers(len(train["orig"]), size=args.batch)
            o, h, r, ks = (t.to(args.device) for t in make_batch(train, idx, rng))
            with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16,
                                enabled=not args.fp32):
                loss = recovery_loss(model, o, h, r, ks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            state["step"] += 1
            state["samples"] += args.batch
        state["seconds"] += time.time() - t0
        if time.time() - last_log > 120:
            v = validate(model, val)
            say(f"step {state['step']} {state['seconds']:.0f}s samples {state['samples']} "
                f"loss {np.mean(losses):.4f} lr {opt.param_groups[0]['lr']:.2e} val "
                + " ".join(f"{k} {x:.2f}" for k, x in v.items()))
            losses.clear()
            last_log = time.time()
        if time.time() - last_save > 300:
            save()
            last_save = time.time()
    save()
    v = validate(model, val)
    say(f"done step {state['step']} {state['seconds']:.0f}s val "
        + " ".join(f"{k} {x:.2f}" for k, x in v.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
