"""Border-crop survival of the robust channel on photos below ~1 MP (the crop route).

    .venv/bin/python benchmarks/bench_crops.py [--payloads 5]

Each photo is marked with a full-capacity random payload (one per seed), cropped, and
decoded; a cell counts exact decodes. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib

import cv2
import numpy as np

from refacex.errors import NoPayloadError
from refacex.io.images import read_image
from refacex.models import resolve
from refacex.stego import robust


def _crop(img: np.ndarray, left: float, t: float, r: float, b: float) -> np.ndarray:
    h, w = img.shape[:2]
    return img[int(h * t): h - int(h * b), int(w * left): w - int(w * r)]


def _jpeg(img: np.ndarray, q: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1],
                        cv2.IMREAD_COLOR)


ATTACKS = {
    "crop2": lambda x: _crop(x, .02, .02, .02, .02),
    "crop5": lambda x: _crop(x, .05, .05, .05, .05),
    "crop3_left_top": lambda x: _crop(x, .03, .03, 0, 0),
    "crop3+jpeg75": lambda x: _jpeg(_crop(x, .03, .03, .03, .03), 75),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--payloads", type=int, default=5)
    a = ap.parse_args()
    t1, ast = read_image(resolve("t1")), read_image(resolve("astronaut"))
    photos = {"t1 640x480": cv2.resize(t1, (640, 480), interpolation=cv2.INTER_AREA),
              "astronaut 512x512": ast,
              "astronaut 250x250": cv2.resize(ast, (250, 250), interpolation=cv2.INTER_AREA)}
    print("| photo | " + " | ".join(ATTACKS) + " |")
    print("|---" * (len(ATTACKS) + 1) + "|")
    for name, img in photos.items():
        ok = dict.fromkeys(ATTACKS, 0)
        h, w = img.shape[:2]
        for seed in range(a.payloads):
            data = np.random.default_rng(seed + 10).bytes(robust.capacity_bytes(h, w))
            marked = robust.embed(img, data)
            for k, f in ATTACKS.items():
                with contextlib.suppress(NoPayloadError):
                    ok[k] += robust.extract(f(marked)) == data
        print(f"| {name} | " + " | ".join(f"{v}/{a.payloads}" for v in ok.values()) + " |",
              flush=True)


if __name__ == "__main__":
    main()
