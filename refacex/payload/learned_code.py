"""The robust tier's learned face code (``learned-v1``): a code of what the anonymiser
removed, read back by a recovery network that also sees the received anonymised face.

The PCA code (``facecode.py``) describes the whole original face at 48 px, so at tens to
hundreds of bytes it is a blurred face. Here the encoder sees the original *and* the
anonymised face (both exist when the payload is written), so its bytes go only to what
the anonymised image lacks, and the recovery network (ReFaceX's detached recovery: it
sees the received anonymised face, never sends a gradient into the anonymiser) puts the
person back on top of the pose, light and hair the anonymised image already holds.
Trained by ``refacex.train.fit_recovery`` (torch, training people only; see
``docs/model-cards/recovery.md``); run here as two ONNX files with OpenCV's DNN module
(as every other network here), no torch.

One model serves every byte budget: the code is ordered (trained with nested
truncation), so a prefix of ``k`` of its ``LATENT`` values is a coarser code. A code is
one byte (the rate index into ``RATES``) and ``k`` values of ``BITS`` bits each.

The two ONNX files are part of the codec: codes written as ``learned-v1`` decode only
with these exact files (``MODELS`` sha256). A retrained model ships as ``learned-v2``.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from refacex.payload.facecode import CODE_SIZE

NAME = "learned-v1"
RES = 64  # the networks' working resolution (the face code's template at 64 px)
CUT = 96  # cut out at this size, then area-resampled to RES (as the training data was)
LATENT_CH = 48
LATENT_HW = 4
LATENT = LATENT_CH * LATENT_HW * LATENT_HW
BITS = 3
LEVELS = 2**BITS
#: Values sent at each rate point (whole latent channels of 16 values). Code bytes:
#: 1 + ceil(BITS * k / 8) = 13, 19, 25, 37, 49, 73, 97, 145, 193, 241, 289.
RATES = (32, 48, 64, 96, 128, 192, 256, 384, 512, 640, 768)
#: Code bytes per face below which the pipeline's "auto" choice takes this code; from
#: there on the PCA code restores as much or more (LFW eval photos at 500 px, the same
#: face through both codes after JPEG 75: learned +2.5 dB under 60 B, +0.25 dB at
#: 60-90 B, -0.1 dB at 90-130 B; ``docs/benchmarks.md``).
BEST_BELOW = 90
DATA = Path(__file__).resolve().parents[1] / "data"
#: file name -> sha256 of the shipped ONNX pair (written by ``fit_recovery --export``).
MODELS = {
    "recovery_encoder.onnx": "997c619e9a2dd4130df44cd3f99f29be4c52bd6290945f2bdf82afce3f0e2c13",
    "recovery_decoder.onnx": "467d5fef4a75d257d5774d0f5cbd92fd58c8ccbafc882ae8ecc84b34d7b5ae86",
}


def code_bytes(k: int) -> int:
    return 1 + (BITS * k + 7) // 8


def cut(img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The face in the code's geometry at ``RES`` px; ``matrix`` maps the image to the
    ``CODE_SIZE`` code crop (``payload.facecode``'s template)."""
    m = np.asarray(matrix, np.float64) * (CUT / CODE_SIZE)
    crop = cv2.warpAffine(img, m, (CUT, CUT), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT_101)
    return cv2.resize(crop, (RES, RES), interpolation=cv2.INTER_AREA)


def quantise(t: np.ndarray) -> np.ndarray:
    """Level indices 0..LEVELS-1 of values in [-1, 1] (as ``refacex.train.recovery``)."""
    return np.clip(np.round((t + 1.0) * (LEVELS - 1) / 2.0), 0, LEVELS - 1).astype(np.int64)


def dequantise(j: np.ndarray) -> np.ndarray:
    return ((2.0 * j - (LEVELS - 1)) / (LEVELS - 1)).astype(np.float32)


def run(net, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """One forward pass of an OpenCV DNN network with named inputs."""
    for name, blob in inputs.items():
        net.setInput(np.ascontiguousarray(blob, np.float32), name)
    return net.forward()


def _nchw(*crops: np.ndarray) -> list[np.ndarray]:
    return [c.astype(np.float32).transpose(2, 0, 1)[None] for c in crops]


class LearnedCodec:
    """Encode (original, anonymised) faces to bytes within a budget; decode bytes plus the
    received anonymised face to the original face. Crops: BGR uint8 ``RES`` px (``cut``)."""

    name = NAME

    def __init__(self, data: Path | None = None) -> None:
        nets = []
        for fname, digest in MODELS.items():
            blob = ((data or DATA) / fname).read_bytes()
            # ``data``: a model under development (its own files); the shipped pair must
            # be the registered one, or its codes would decode wrong.
            if data is None and hashlib.sha256(blob).hexdigest() != digest:
                raise ValueError(f"{fname}: sha256 does not match the {NAME} codec")
            nets.append(cv2.dnn.readNetFromONNX(np.frombuffer(blob, np.uint8)))
        self._enc, self._dec = nets

    @staticmethod
    def best_level(max_bytes: int) -> int | None:
        fitting = [i for i, k in enumerate(RATES) if code_bytes(k) <= max_bytes]
        return fitting[-1] if fitting else None

    def latent(self, original: np.ndarray, anonymised: np.ndarray) -> np.ndarray:
        return run(self._enc, dict(zip(("original", "anonymised"),
                                       _nchw(original, anonymised), strict=True)))[0]

    def encode(self, original: np.ndarray, anonymised: np.ndarray, max_bytes: int) -> bytes:
        """Best code of at most ``max_bytes`` (ValueError if even the smallest won't fit)."""
        idx = self.best_level(max_bytes)
        if idx is None:
            raise ValueError(f"no learned face code fits in {max_bytes} bytes "
                             f"(smallest is {code_bytes(RATES[0])})")
        return self.encode_latent(self.latent(original, anonymised), max_bytes)

    def encode_latent(self, latent: np.ndarray, max_bytes: int) -> bytes:
        """``encode`` from the encoder's output (one network run serves every budget)."""
        idx = self.best_level(max_bytes)
        if idx is None:
            raise ValueError(f"no learned face code fits in {max_bytes} bytes "
                             f"(smallest is {code_bytes(RATES[0])})")
        j = quantise(latent[: RATES[idx]])
        acc = 0
        for v in j:
            acc = (acc << BITS) | int(v)
        nbits = BITS * len(j)
        pad = (-nbits) % 8
        return bytes([idx]) + (acc << pad).to_bytes((nbits + pad) // 8, "big")

    def values(self, code: bytes) -> np.ndarray:
        """The ``LATENT`` code values a code stands for (0 where not sent)."""
        if not code or code[0] >= len(RATES):
            raise ValueError(f"not a {NAME} face code")
        k = RATES[code[0]]
        if len(code) != code_bytes(k):
            raise ValueError(f"{NAME} face code is {len(code)} bytes, not {code_bytes(k)}")
        nbits = BITS * k
        acc = int.from_bytes(code[1:], "big") >> ((-nbits) % 8)
        j = np.array([(acc >> (BITS * (k - 1 - i))) & (LEVELS - 1) for i in range(k)])
        out = np.zeros(LATENT, np.float32)
        out[:k] = dequantise(j)
        return out

    def decode(self, code: bytes, received: np.ndarray) -> np.ndarray:
        """The original face (BGR uint8, ``RES`` px) from a code and the received face."""
        (r,) = _nchw(received)
        out = run(self._dec, {"received": r, "code": self.values(code)[None]})[0]
        return np.clip(out.transpose(1, 2, 0) + 0.5, 0, 255).astype(np.uint8)


def available() -> bool:
    """True when the ONNX pair ships with this install."""
    return all((DATA / f).is_file() for f in MODELS)


@cache
def codec() -> LearnedCodec:
    """Shared codec (two ONNX sessions; load once)."""
    return LearnedCodec()
