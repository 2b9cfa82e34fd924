"""Time to recover a 640x480 one-face photo from the robust tier alone.

The astronaut sample cut to 640x480 around the face is anonymised (``swap``, robust tier
only, a fixed key), re-encoded from pixels as JPEG 75 (no metadata, no vault), and
``recover`` is timed ``--repeat`` times after one warm-up (models loaded): median and
the stages of one run (synchronisation + decode of the in-pixel payload, opening it, the
face's decode and blend).

    .venv/bin/python benchmarks/bench_recover_speed.py --repeat 20 --code learned
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def photo_640x480() -> np.ndarray:
    import cv2

    from refacex.io.images import read_image
    from refacex.models import resolve

    img = read_image(resolve("astronaut"))  # 512x512
    big = cv2.resize(img, (640, 640), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(big[40:520])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--code", choices=("learned", "pca"), default="learned")
    args = ap.parse_args(argv)

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from refacex.audit.distortions import jpeg
    from refacex.io.images import decode_image, encode_image
    from refacex.payload.format import decode_payload
    from refacex.payload.keyring import OpenKeys, SealKeys
    from refacex.payload.sitekeys import SiteKey
    from refacex.pipeline import anonymize
    from refacex.recover import recover
    from refacex.stego import robust

    site = SiteKey(bytes(range(32, 64)))
    key = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    img = photo_640x480()
    res = anonymize(img, SealKeys(recipients=[key.public_key()], site=site), method="swap",
                    tiers=("robust",), robust_code=args.code)
    data = encode_image(jpeg(res.image, 75), ".jpg", 95)
    keys = OpenKeys(private_key=key, trusted=[site.public])
    out = recover(data, keys)  # warm-up: loads every model
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        recover(data, keys)
        times.append(time.perf_counter() - t0)
    received = decode_image(data)
    t0 = time.perf_counter()
    located = robust.locate(received)
    t_locate = time.perf_counter() - t0
    t0 = time.perf_counter()
    decode_payload(located.data, **keys.crypto_kwargs())
    t_open = time.perf_counter() - t0
    face = out.faces[0]
    print(f"640x480, 1 face, {face.get('code')} {face.get('code_bytes')} B: recover median "
          f"{1e3 * np.median(times):.0f} ms (min {1e3 * min(times):.0f}, max "
          f"{1e3 * max(times):.0f}) over {args.repeat}; of which locate+decode "
          f"{1e3 * t_locate:.0f} ms, opening the payload {1e3 * t_open:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
