"""The robust tier's compact face code: a quantised PCA ("eigenface") code.

The in-pixel channel carries only tens to hundreds of bytes per face, so the face is
described in the basis that packs a face's energy best at that rate: principal
components of aligned faces (trained on the training people only, see
``scripts/build_facecode.py``). Coefficients are uniformly quantised with a step ``Δ``
and a per-component range of ±3.5σ, so each component costs ``ceil(log2(7σ/Δ + 1))``
bits and components with σ below ~Δ/7 cost nothing.

A *level* is a (number of components, step) pair. All levels on the rate–distortion
frontier are enumerated once; ``encode`` picks the best level that fits the byte budget
the image offers (graceful degradation: a smaller image gets a coarser face, never a
failure), and its index is the code's first byte so ``decode`` needs nothing else.

The basis file is part of the codec: codes written as ``pca-v1`` decode only with this
exact ``facecode_pca.npz``. A retrained basis must ship as a new codec id (``pca-v2``,
see ``payload.format.register_codec``) next to the old one, never replace it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

CODE_SIZE = 48  # px of the canonical crop the code describes
CODE_PADDING = 0.1  # brows-to-chin plus a forehead band (see faces.align.template)
N_COMPONENTS = 256
BASIS_PATH = Path(__file__).resolve().parents[1] / "data" / "facecode_pca.npz"
_RANGE = 3.5  # quantiser range in standard deviations


@dataclass(frozen=True)
class Level:
    k: int  # components used
    step: float  # quantiser step (pixel-intensity units: the basis is orthonormal)
    bits: np.ndarray  # bits per component, shape (k,)
    mse: float  # expected mean squared error per pixel value

    @property
    def nbytes(self) -> int:
        return 1 + (int(self.bits.sum()) + 7) // 8


class FaceCodec:
    """Encode a ``CODE_SIZE`` aligned crop (BGR uint8) to bytes within a budget, and back."""

    def __init__(self, path: Path = BASIS_PATH) -> None:
        with np.load(path) as z:
            self.mean = z["mean"].astype(np.float32)
            self.basis = z["basis"].astype(np.float32)
            self.std = z["std"].astype(np.float64)
        self.dim = self.mean.size
        self.levels = self._frontier()

    def _frontier(self) -> list[Level]:
        var = self.std**2
        tail = np.concatenate([np.cumsum(var[::-1])[::-1], [0.0]])  # energy from k on
        cands = []
        for step in np.geomspace(3.0, 600.0, 48):
            n = np.floor(2 * _RANGE * self.std / step) + 1
            bits = np.ceil(np.log2(n)).astype(int)
            for k in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256):
                if k > len(var):
                    break
                b = bits[:k]
                used = b > 0
                mse = (tail[k] + var[:k][~used].sum() + used.sum() * step**2 / 12) / self.dim
                cands.append(Level(k, float(step), b, float(mse)))
        cands.sort(key=lambda lv: (lv.nbytes, lv.mse))
        frontier: list[Level] = []
        for lv in cands:
            if not frontier or lv.mse < frontier[-1].mse * 0.97:
                frontier.append(lv)
        return frontier[:255]

    def best_level(self, max_bytes: int) -> int | None:
        fitting = [i for i, lv in enumerate(self.levels) if lv.nbytes <= max_bytes]
        return fitting[-1] if fitting else None

    def encode(self, crop: np.ndarray, max_bytes: int) -> bytes:
        """Best code of at most ``max_bytes`` (ValueError if even the smallest won't fit)."""
        idx = self.best_level(max_bytes)
        if idx is None:
            raise ValueError(f"no face code fits in {max_bytes} bytes "
                             f"(smallest is {self.levels[0].nbytes})")
        lv = self.levels[idx]
        x = crop.reshape(-1).astype(np.float32) - self.mean
        coef = self.basis[: lv.k] @ x
        out = bytearray([idx])
        acc, nacc = 0, 0
        for c, b, s in zip(coef, lv.bits, self.std[: lv.k], strict=True):
            if b == 0:
                continue
            half = (2**b - 1) // 2
            lim = min(half, int(np.floor(_RANGE * s / lv.step)))
            q = int(np.clip(np.round(c / lv.step), -lim, lim)) + half
            acc = (acc << int(b)) | q
            nacc += int(b)
            while nacc >= 8:
                nacc -= 8
                out.append((acc >> nacc) & 0xFF)
        if nacc:
            out.append((acc << (8 - nacc)) & 0xFF)
        return bytes(out)

    def decode(self, code: bytes) -> np.ndarray:
        """The ``CODE_SIZE`` x ``CODE_SIZE`` BGR uint8 face a code describes."""
        if not code or code[0] >= len(self.levels):
            raise ValueError("not a face code of this codec version")
        lv = self.levels[code[0]]
        bitstr = int.from_bytes(code[1:], "big") if len(code) > 1 else 0
        total = 8 * (len(code) - 1)
        pos = 0
        coef = np.zeros(lv.k, np.float32)
        for i, b in enumerate(lv.bits):
            if b == 0:
                continue
            pos += int(b)
            if pos > total:
                raise ValueError("face code truncated")
            q = (bitstr >> (total - pos)) & ((1 << int(b)) - 1)
            coef[i] = (q - (2**b - 1) // 2) * lv.step
        x = self.mean + coef @ self.basis[: lv.k]
        return np.clip(x + 0.5, 0, 255).astype(np.uint8).reshape(CODE_SIZE, CODE_SIZE, 3)


@cache
def codec() -> FaceCodec:
    """Shared codec (the basis is ~3 MB; load once)."""
    return FaceCodec()
