"""Stage 1 of the photoreal donor bank: render MobileStyleGAN faces of nobody.

MobileStyleGAN (PyPI ``random-face==2021.7.21.1``, OpenVINO IR; a compact imitation of
NVIDIA's StyleGAN2-FFHQ, whose licence is NON-COMMERCIAL) maps a 512-d latent to a
1024 px face. Every candidate is reproducible from (seed, index): ``z`` is drawn from
``numpy.random.default_rng([seed, index])``, mapped to the style ``w`` and truncated
towards the mean style (``psi``; the mean is itself seeded, over 4,096 draws) — truncation
trades diversity for fewer artefacts. Output: ``OUT/NNNNN.png`` (downscaled to 512 px) and
``OUT/styles.npy`` (the truncated styles, for latent attribute directions). Resumable:
existing PNGs are skipped.

    pip install openvino==2026.4.1   # the [donors] extra
    python scripts/render_gan_donors.py --wheel random_face-2021.7.21.1-py3-none-any.whl \
        --out /tmp/gan --count 1500
"""

from __future__ import annotations

import argparse
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

SEED = 20261202
STYLE_DIM = 512


def unpack(wheel: Path, dest: Path) -> Path:
    """The four IR files out of the wheel (only they are needed)."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith("random_face/data/") and name.endswith((".xml", ".bin")):
                target = dest / Path(name).name
                if not target.exists():
                    target.write_bytes(z.read(name))
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--wheel", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=1500)
    ap.add_argument("--psi", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    import openvino as ov

    ir = unpack(args.wheel, args.out / "ir")
    core = ov.Core()
    cfg = {"INFERENCE_NUM_THREADS": args.threads}
    mnet = core.compile_model(core.read_model(str(ir / "MappingNetwork.xml")), "CPU", cfg)
    snet = core.compile_model(core.read_model(str(ir / "SynthesisNetwork.xml")), "CPU", cfg)
    rng = np.random.default_rng([SEED, 10**9])
    mean = np.mean([mnet(rng.standard_normal((1, STYLE_DIM)).astype(np.float32))[0][0]
                    for _ in range(4096)], 0)
    styles_path = args.out / "styles.npy"
    styles = np.zeros((args.count, STYLE_DIM), np.float32)
    t0 = time.time()
    for i in range(args.count):
        z = np.random.default_rng([SEED, i]).standard_normal((1, STYLE_DIM)).astype(np.float32)
        w = mean + args.psi * (mnet(z)[0][0] - mean)
        styles[i] = w
        png = args.out / f"{i:05d}.png"
        if png.exists():
            continue
        img = snet(w[None].astype(np.float32))[0][0]
        img = np.clip((np.clip(img, -1, 1) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        img = cv2.resize(img.transpose(1, 2, 0)[:, :, ::-1], (args.size, args.size),
                         interpolation=cv2.INTER_AREA)
        tmp = png.with_suffix(".tmp.png")
        cv2.imwrite(str(tmp), img)
        tmp.rename(png)
        if i % 50 == 0:
            print(f"{i} {time.time() - t0:.0f}s", flush=True)
            np.save(styles_path, styles[: i + 1])
    np.save(styles_path, styles)
    print(f"done {args.count} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
