"""Border-crop survival of the robust channel on photos below ~1 MP (the crop route).

    .venv/bin/python benchmarks/bench_crops.py [--payloads 5]

Each photo is marked with a random payload (one per seed; full capacity unless the row
says otherwise), cropped, and decoded; a cell counts exact decodes. "cropN": N % of the
side off *every* border (bench_robust's "cropN%" is N % in all); "crop3_left_top": 3 %
off the left and top only. "dense layout": the
one small photos use when a face would otherwise get no code. Results:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib

import cv2
import numpy as np

from refacex.audit.distortions import crop, jpeg
from refacex.errors import NoPayloadError
from refacex.io.images import read_image
from refacex.models import resolve
from refacex.stego import robust

ATTACKS = {
    "crop2": lambda x: crop(x, .02, .02, .02, .02),
    "crop5": lambda x: crop(x, .05, .05, .05, .05),
    "crop3_left_top": lambda x: crop(x, .03, .03),
    "crop3+jpeg75": lambda x: jpeg(crop(x, .03, .03, .03, .03), 75),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--payloads", type=int, default=5)
    a = ap.parse_args()
    t1, ast = read_image(resolve("t1")), read_image(resolve("astronaut"))
    small = cv2.resize(ast, (250, 250), interpolation=cv2.INTER_AREA)
    # (label, photo, dense layout, payload as a fraction of capacity)
    rows = [("t1 640x480", cv2.resize(t1, (640, 480), interpolation=cv2.INTER_AREA), False, 1.0),
            ("astronaut 512x512", ast, False, 1.0),
            ("astronaut 250x250", small, False, 1.0),
            ("astronaut 250x250, dense layout", small, True, 1.0),
            ("astronaut 250x250, 80 % of capacity", small, False, 0.8)]
    print("| photo | payload | " + " | ".join(ATTACKS) + " |")
    print("|---" * (len(ATTACKS) + 2) + "|")
    for name, img, dense, fill in rows:
        ok = dict.fromkeys(ATTACKS, 0)
        h, w = img.shape[:2]
        size = int(robust.capacity_bytes(h, w, dense) * fill)
        for seed in range(a.payloads):
            data = np.random.default_rng(seed + 10).bytes(size)
            marked = robust.embed(img, data, dense)
            for k, f in ATTACKS.items():
                with contextlib.suppress(NoPayloadError):
                    ok[k] += robust.extract(f(marked)) == data
        print(f"| {name} | {size} B | " + " | ".join(f"{v}/{a.payloads}" for v in ok.values())
              + " |", flush=True)


if __name__ == "__main__":
    main()
