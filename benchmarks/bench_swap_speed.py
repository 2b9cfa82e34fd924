"""Time of the verified swap, photoreal donors vs templates (and quality mode if
OpenVINO is installed), on the 640x480 one-face photo of ``bench_core.py``; both payload
tiers, as the CLI runs it. Public-key mode, a fresh key per repetition, so the donor —
and the work the verification does — varies as for a user.

    .venv/bin/python benchmarks/bench_swap_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import test_images  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

from refacex.payload.keyring import SealKeys  # noqa: E402
from refacex.payload.sitekeys import SiteKey  # noqa: E402
from refacex.pipeline import anonymize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    img = test_images()["640x480, 1 face"]
    variants = {"gan, verified": {"donors": "gan"},
                "templates, verified": {"donors": "templates"},
                "gan, --no-verify": {"donors": "gan", "verify": False}}
    if importlib.util.find_spec("openvino"):
        variants["gan --render-donors, verified"] = {"donors": "gan", "quality": True}
    anonymize(img, SealKeys(passphrase=b"warm-up", site=SiteKey(os.urandom(32))))  # load models
    for label, opts in variants.items():
        times = []
        for _ in range(args.repeat):
            # Public-key mode, as bench_core.py (a passphrase adds ~120 ms of scrypt per
            # payload); fresh keys, so the donor varies.
            keys = SealKeys(recipients=[X25519PrivateKey.generate().public_key()],
                            site=SiteKey(os.urandom(32)))
            t0 = time.perf_counter()
            anonymize(img, keys, method="swap", method_options=opts)
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        print(f"{label:<34} median {statistics.median(times):6.0f} ms  "
              f"min {times[0]:6.0f}  max {times[-1]:6.0f}  (n={len(times)})", flush=True)


if __name__ == "__main__":
    main()
