"""How visible an in-pixel mark is where it shows most: on flat parts of the photo.

PSNR averages the change over the whole picture, so a mark can score 40+ dB while a faint
blocky texture is plain to see on a white wall, a sky or a shirt: texture hides a change
(contrast masking), a flat area does not. This module measures that case directly.

* **Flat patch.** An 8x8 patch whose *local activity* stays under ``FLAT_ACTIVITY`` grey
  levels at every pixel. Activity is the local RMS of the luma after removing its smooth
  shading (a Gaussian of ``SHADING_SIGMA`` px): a lit wall or a sky gradient counts as
  flat (shading does not mask anything), hair, foliage and fabric do not. The scale is
  that of the robust mark's own patterns (canonical DCT blocks of 8-16 px): masking is
  frequency-selective, so detail much finer or much coarser than the mark would not hide
  it.
* **Score.** The change (test minus reference luma), lightly smoothed (1 px Gaussian: at
  normal viewing distance single-pixel rounding noise is not seen, a pattern of edges is),
  then its gradient energy averaged per flat patch; the score is the RMS gradient (grey
  levels per pixel) of the 99th-percentile flat patch: *the strongest visible texture on a
  flat area*, not an average that a large clean region could dilute, and not the single
  worst patch (one patch is not a pattern). A grid-independent gradient rather than the
  step across 8x8 JPEG block edges: the mark's block edges do not fall on the JPEG grid.
* **Bar.** The same score for the reference re-encoded as JPEG 90 (what any sharing
  platform does to a photo, and accepted as invisible), with a floor of ``QUANT_FLOOR``:
  on an already compressed photo JPEG 90 may change flat patches not at all, and a score
  under one 8-bit rounding step of texture is below what a display can show
  (``quantisation_floor`` derives it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from refacex.io.images import decode_image, encode_image

__all__ = ["VisibilityReport", "activity", "flat_patches", "visibility", "visibility_score"]

PATCH = 8
#: Shading removed before measuring detail (px); see the module docstring.
SHADING_SIGMA = 4.0
#: Window over which the detail's RMS is taken (Gaussian, px).
ACTIVITY_SIGMA = 4.0
#: A pixel is flat below this much local detail (grey levels RMS).
FLAT_ACTIVITY = 1.0
#: Smoothing of the change before its gradient (px).
CHANGE_SIGMA = 1.0
PERCENTILE = 99.0
#: The score of independent +-0.5 grey-level rounding noise (``quantisation_floor()``:
#: 0.098-0.100 over seeds): the least texture an 8-bit image can carry.
QUANT_FLOOR = 0.1


def luma(img: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of a BGR (or grey) image, float32."""
    if img.ndim == 2:
        return img.astype(np.float32)
    f = img.astype(np.float32)
    return 0.114 * f[..., 0] + 0.587 * f[..., 1] + 0.299 * f[..., 2]


def activity(y: np.ndarray) -> np.ndarray:
    """Local detail (grey levels RMS) of luma ``y`` at every pixel: what masks a mark."""
    y = y.astype(np.float32)
    detail = y - cv2.GaussianBlur(y, (0, 0), SHADING_SIGMA)
    return np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), ACTIVITY_SIGMA))


def _patch_grid(a: np.ndarray, reduce: str) -> np.ndarray:
    h, w = a.shape
    nby, nbx = h // PATCH, w // PATCH
    p = a[: nby * PATCH, : nbx * PATCH].reshape(nby, PATCH, nbx, PATCH)
    return p.max(axis=(1, 3)) if reduce == "max" else p.mean(axis=(1, 3))


def flat_patches(reference: np.ndarray) -> np.ndarray:
    """Boolean grid (H//8, W//8): the 8x8 patches of ``reference`` that are flat."""
    return _patch_grid(activity(luma(reference)), "max") < FLAT_ACTIVITY


def _score(ref_y: np.ndarray, test_y: np.ndarray, flat: np.ndarray) -> float:
    if not flat.any():
        return 0.0
    d = cv2.GaussianBlur(test_y - ref_y, (0, 0), CHANGE_SIGMA)
    gx = np.zeros_like(d)
    gy = np.zeros_like(d)
    gx[:, :-1] = d[:, 1:] - d[:, :-1]
    gy[:-1] = d[1:] - d[:-1]
    energy = _patch_grid(gx * gx + gy * gy, "mean")
    return float(np.sqrt(np.percentile(energy[flat], PERCENTILE)))


def visibility_score(reference: np.ndarray, test: np.ndarray) -> float:
    """Strongest texture ``test`` adds to the flat patches of ``reference`` (see above);
    0.0 when the photo has no flat patch."""
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {test.shape}")
    return _score(luma(reference), luma(test), flat_patches(reference))


def quantisation_floor(size: int = 256, seed: int = 0) -> float:
    """The score of +-0.5 grey-level rounding noise on a flat grey image (why
    ``QUANT_FLOOR`` is what it is; a test keeps the two in step)."""
    ref = np.full((size, size), 127.5, np.float32)
    noisy = ref + np.random.default_rng(seed).uniform(-0.5, 0.5, ref.shape).astype(np.float32)
    return _score(ref, noisy, np.ones((size // PATCH, size // PATCH), bool))


@dataclass(frozen=True)
class VisibilityReport:
    """A mark's flat-region visibility next to its bar (see the module docstring)."""

    score: float  # the marked image's score
    jpeg90: float  # the unmarked image re-encoded as JPEG 90
    bar: float  # max(jpeg90, QUANT_FLOOR)
    flat_fraction: float  # share of 8x8 patches that are flat

    @property
    def ok(self) -> bool:
        return self.score <= self.bar

    def to_dict(self) -> dict:
        return {**{k: round(v, 4) for k, v in asdict(self).items()}, "ok": self.ok}


def visibility(reference: np.ndarray, marked: np.ndarray) -> VisibilityReport:
    """Score ``marked`` against ``reference`` (both BGR uint8) and against the JPEG-90 bar."""
    flat = flat_patches(reference)
    ref_y = luma(reference)
    j90 = decode_image(encode_image(reference, ".jpg", 90), name="jpeg90")
    jpeg90 = _score(ref_y, luma(j90), flat)
    return VisibilityReport(score=_score(ref_y, luma(marked), flat), jpeg90=jpeg90,
                            bar=max(jpeg90, QUANT_FLOOR), flat_fraction=float(flat.mean()))
