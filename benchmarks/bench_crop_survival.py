"""Border-crop survival of the robust channel on large photos, payload at capacity.

Large photos (over ``robust.CROP_ROUTE_PIXELS``) are resynchronised by the pilot route;
its scale estimate is biased by the host's own content at the pilot frequency, and the
exact-crop-scale search near it (``robust._crop_route(..., near=...)``) catches the rest.
Each trial embeds fresh random bytes filling ``image_capacity`` (the invisible capacity
the pipeline fills), then crops 2 % and 5 % (half from each border, as
``audit.distortions``) or re-encodes at JPEG 75, and decodes with the full search.

    .venv/bin/python benchmarks/bench_crop_survival.py PHOTO --trials 20 --seed 9
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

ATTACKS = ("crop2", "crop5", "jpeg75")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photo", type=Path)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="resize the photo first")
    args = ap.parse_args(argv)

    import cv2

    from refacex.audit.distortions import apply
    from refacex.errors import NoPayloadError
    from refacex.io.images import decode_image, encode_image, read_image
    from refacex.stego.robust import embed, extract, image_capacity

    img = read_image(args.photo)
    if args.scale != 1.0:
        img = cv2.resize(img, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_CUBIC)
    cap = image_capacity(img)
    print(f"{args.photo.name} {img.shape[1]}x{img.shape[0]}: {cap} B per trial", flush=True)
    rng = np.random.default_rng(args.seed)
    ok = dict.fromkeys(ATTACKS, 0)
    secs: dict[str, list[float]] = {a: [] for a in ATTACKS}
    for _ in range(args.trials):
        data = rng.bytes(cap)
        marked = embed(img, data)
        for name in ATTACKS:
            received = decode_image(apply(name, marked, encode_image(marked, ".png"))[0])
            t0 = time.perf_counter()
            with contextlib.suppress(NoPayloadError):
                ok[name] += extract(received) == data
            secs[name].append(time.perf_counter() - t0)
    for name in ATTACKS:
        print(f"{name}: {ok[name]}/{args.trials} exact, decode median "
              f"{np.median(secs[name]):.2f} s, max {max(secs[name]):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
