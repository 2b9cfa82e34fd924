"""Visibility and survival of the robust mark at the capacity the pipeline fills.

For each photo: the bytes it carries invisibly (``robust.image_capacity``), PSNR, the
flat-region visibility score against its JPEG-90 bar (``refacex.stego.visibility``), and
whether ``robust.extract`` returns the payload after each attack (exact decodes only:
``bench_robust.py`` adds raw bit-error rates and timings, at many times the cost).

    .venv/bin/python benchmarks/bench_visibility.py --lfw 20
    .venv/bin/python benchmarks/bench_visibility.py --lfw 20 --attacks jpeg50,crop2+1
    git show 604e733:refacex/stego/robust.py > /tmp/robust_604e733.py
    .venv/bin/python benchmarks/bench_visibility.py --lfw 20 --module /tmp/robust_604e733.py

``--module``: another version of the channel (before the masking it has no
``image_capacity``: its payloads fill ``capacity_bytes``). Photos: the samples (astronaut
at 250x250, 512x512 and 640x480; t1) and ``--lfw`` photos of evaluation people (every
k-th name of ``splits/lfw_eval_people.txt``, first photo), read in place, never copied.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
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

ATTACKS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool]] = {
    # name: (attack, quick: same size, so the cheap as-is hypothesis finds a survivor)
    "none": (lambda i: i, True),
    "jpeg50": (lambda i: jpeg(i, 50), True),
    "jpeg75": (lambda i: jpeg(i, 75), True),
    "scale0.5": (lambda i: resize(i, 0.5), False),
    "scale2": (lambda i: resize(i, 2.0), False),
    "noise5": (lambda i: noise(i, 5.0), True),
    "contrast-20": (lambda i: contrast(i, -0.2), True),
    "bright+20": (lambda i: brightness(i, 0.2), False),
    "crop2+1": (lambda i: crop(i, 0.02, 0.02, 0.01, 0.01), False),
}


def photos(lfw: int) -> list[tuple[str, np.ndarray]]:
    ast = read_image(resolve("astronaut"))
    out = [("astronaut 250x250", cv2.resize(ast, (250, 250), interpolation=cv2.INTER_AREA)),
           ("astronaut 512x512", ast),
           ("astronaut 640x480", cv2.resize(ast, (640, 480), interpolation=cv2.INTER_AREA)),
           ("t1 1280x886", read_image(resolve("t1")))]
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    people = data / "splits" / "lfw_eval_people.txt"
    if lfw > 0 and people.is_file():
        names = people.read_text().split()
        for name in names[:: max(1, len(names) // lfw)][:lfw]:
            first = min((data / "lfw-deepfunneled" / name).glob("*.jpg"), default=None)
            if first is not None:
                out.append((f"lfw {name}", read_image(first)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lfw", type=int, default=20)
    ap.add_argument("--attacks", default="jpeg50,jpeg75,scale0.5,scale2,noise5,contrast-20")
    ap.add_argument("--module", type=Path, help="another robust.py (see above)")
    args = ap.parse_args()
    mod = robust
    if args.module:
        spec = importlib.util.spec_from_file_location("robust_under_test", args.module)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # (dataclasses look their module up there)
        spec.loader.exec_module(mod)
    attacks = [a for a in args.attacks.split(",") if a]
    print("| photo | bytes | PSNR dB | visibility / bar | " + " | ".join(attacks) + " |")
    print("|---|---|---|---|" + "---|" * len(attacks))
    ok = {a: 0 for a in attacks}
    rows = photos(args.lfw)
    for i, (name, img) in enumerate(rows):
        h, w = img.shape[:2]
        n = (mod.image_capacity(img) if hasattr(mod, "image_capacity")
             else mod.capacity_bytes(h, w))
        data = np.random.default_rng(i).bytes(n)
        marked = mod.embed(img, data)
        vis = visibility(img, marked)
        cells = []
        for a in attacks:
            fn, quick = ATTACKS[a]
            try:
                good = mod.extract(fn(marked), quick=quick) == data
            except NoPayloadError:
                good = False
            if not good and quick:  # the cheap hypotheses missed: try the full search
                try:
                    good = mod.extract(fn(marked)) == data
                except NoPayloadError:
                    good = False
            ok[a] += good
            cells.append("yes" if good else "**no**")
        print(f"| {name} | {n} | {psnr(marked, img):.2f} | {vis.score:.3f} / {vis.bar:.3f}"
              f"{'' if vis.ok else ' **over**'} | " + " | ".join(cells) + " |", flush=True)
    print("\nexact decodes: " + ", ".join(f"{a} {ok[a]}/{len(rows)}" for a in attacks))


if __name__ == "__main__":
    main()
