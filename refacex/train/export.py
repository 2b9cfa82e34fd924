"""Export the trained recovery pair to ONNX, check it against torch, print the sha256s.

The runtime (``refacex.payload.learned_code``) feeds NCHW float32 BGR 0..255 crops and
quantises the encoder's output itself, so the graphs hold only the networks.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from refacex.payload.learned_code import LATENT, MODELS, RES, run
from refacex.train.recovery import RecoveryModel

OPSET = 17


def export_recovery(model: RecoveryModel, dest: Path) -> dict[str, str]:
    """Write ``recovery_encoder.onnx`` and ``recovery_decoder.onnx`` into ``dest``; return
    {file name: sha256}. Raises if OpenCV's DNN (the runtime) disagrees with torch."""
    model = model.cpu().eval()
    dest.mkdir(parents=True, exist_ok=True)
    enc_name, dec_name = MODELS
    # Batch 1, static shapes: OpenCV's importer mis-sizes the code map's concat when the
    # batch axis is dynamic, and the runtime codes one face at a time.
    face = torch.rand(1, 3, RES, RES) * 255
    code = torch.rand(1, LATENT) * 2 - 1
    jobs = [(model.encoder, (face, face.flip(3)), ["original", "anonymised"], ["latent"],
             enc_name),
            (model.recovery, (face, code), ["received", "code"], ["recovered"], dec_name)]
    digests = {}
    for net, args, inputs, outputs, fname in jobs:
        path = dest / fname
        with warnings.catch_warnings():  # the TorchScript exporter is "legacy", and enough
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(net, args, str(path), input_names=inputs,
                              output_names=outputs, opset_version=OPSET, dynamo=False)
        net_cv = cv2.dnn.readNetFromONNX(str(path))
        with torch.no_grad():
            want = net(*args).numpy()
        got = run(net_cv, {n: a.numpy() for n, a in zip(inputs, args, strict=True)})
        err = float(np.abs(got - want).max())
        if err > 1e-2:
            raise RuntimeError(f"{fname}: OpenCV's DNN differs from torch by {err}")
        digests[fname] = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{fname}: {path.stat().st_size / 1e6:.2f} MB sha256 {digests[fname]} "
              f"(max |onnx - torch| {err:.2e})")
    return digests
