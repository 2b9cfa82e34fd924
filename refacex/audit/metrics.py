"""Full-reference image metrics for the audit: PSNR, SSIM, LPIPS, CIEDE2000, skin colour.

Conventions (why they matter for comparing numbers across runs and papers):

* Images are refacex's uint8 BGR arrays; float images are accepted too. ``data_range``
  defaults to 255 for integer input and 1.0 for float input (pass it explicitly for
  anything else).
* **PSNR** pools the squared error over every channel of every (masked) pixel, like
  ``skimage.metrics.peak_signal_noise_ratio`` on RGB. Identical inputs give ``inf``.
* **SSIM** is Wang et al. 2004 exactly as their reference ``ssim_index.m``: 11x11
  Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, and the map restricted to the "valid"
  region (windows fully inside the image; 5 px trimmed each side), with no automatic
  downsampling. ``channels="luma"`` (default) scores the BT.601 luma exactly as Matlab
  ``rgb2gray`` computes it (0.2989 R + 0.5870 G + 0.1140 B, rounded for uint8 input),
  the convention behind published single-number SSIMs — it reproduces the official
  values of the pyiqa calibration pairs to 4 decimals; ``channels="rgb"`` averages the
  per-channel SSIMs. With a mask, the mean is taken over the valid-region map pixels inside the mask
  (windows centred in the mask still see up to 5 px beyond it).
* **Masks**: boolean (H, W); ``*_outside`` variants score the complement — background
  preservation after anonymising the face region.
* **CIEDE2000** follows Sharma, Wu & Dalal (2005), including their notes on hue
  angles for achromatic colours; verified on their published test pairs.
* **Lab** here is CIE L*a*b* (D65 white, 2° observer) from properly linearised sRGB in
  float64 — not ``cv2.COLOR_BGR2LAB`` on uint8, whose output is rescaled to 0..255
  (L*255/100, a+128, b+128) and quantised, which silently breaks ΔE thresholds.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from refacex.audit.lpips import LPIPS, lpips_distance
from refacex.faces.photometry import linear_to_srgb, srgb_to_linear

__all__ = [
    "LPIPS",
    "bgr_to_lab",
    "ciede2000",
    "linear_to_srgb",
    "lpips_distance",
    "mean_skin_lab",
    "psnr",
    "psnr_outside",
    "srgb_to_linear",
    "ssim",
    "ssim_outside",
]

_SSIM_WIN = 11
_SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def _default_range(img: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    return 255.0 if np.issubdtype(img.dtype, np.integer) else 1.0


def _check_pair(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if mask is None:
        return None
    m = np.asarray(mask).astype(bool)
    if m.shape != a.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image {a.shape[:2]}")
    if not m.any():
        raise ValueError("mask selects no pixels")
    return m


def psnr(
    img_a: np.ndarray,
    img_b: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB over all channels (of the masked pixels).

    Returns ``inf`` for identical inputs, so "unchanged" is unambiguous in reports.
    """
    m = _check_pair(img_a, img_b, mask)
    diff = img_a.astype(np.float64) - img_b.astype(np.float64)
    sq = diff * diff
    mse = float(sq[m].mean()) if m is not None else float(sq.mean())
    if mse == 0.0:
        return float("inf")
    peak = _default_range(img_a, data_range)
    return float(10.0 * np.log10(peak * peak / mse))


#: Matlab ``rgb2gray`` weights (first row of the inverse NTSC YIQ matrix), B, G, R order.
_GRAY_BGR = (0.114020904255103, 0.587043074451121, 0.298936021293775)


def _luma(img: np.ndarray) -> np.ndarray:
    """Matlab ``rgb2gray`` of a BGR image as float64; rounded when the input is integer.

    The rounding is deliberate: SSIM's published reference numbers (Wang's
    ``ssim_index.m`` on ``rgb2gray`` output) are computed on the uint8 gray image, and
    the rounding alone moves SSIM by ~1e-3.
    """
    f = img.astype(np.float64)
    y = _GRAY_BGR[0] * f[..., 0] + _GRAY_BGR[1] * f[..., 1] + _GRAY_BGR[2] * f[..., 2]
    return np.round(y) if np.issubdtype(img.dtype, np.integer) else y


def _ssim_map(x: np.ndarray, y: np.ndarray, peak: float) -> np.ndarray:
    """Wang et al. SSIM map of two float64 single-channel images, "valid" region only."""
    g = cv2.getGaussianKernel(_SSIM_WIN, _SSIM_SIGMA, cv2.CV_64F)
    win = g @ g.T

    def filt(z: np.ndarray) -> np.ndarray:
        # filter2D is a correlation with the (symmetric) window; trimming the border
        # afterwards gives Matlab's filter2(..., 'valid') regardless of border mode.
        out = cv2.filter2D(z, cv2.CV_64F, win, borderType=cv2.BORDER_REFLECT)
        r = _SSIM_WIN // 2
        return out[r:-r, r:-r]

    c1 = (_K1 * peak) ** 2
    c2 = (_K2 * peak) ** 2
    mu_x, mu_y = filt(x), filt(y)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_xx = filt(x * x) - mu_xx
    s_yy = filt(y * y) - mu_yy
    s_xy = filt(x * y) - mu_xy
    num = (2 * mu_xy + c1) * (2 * s_xy + c2)
    den = (mu_xx + mu_yy + c1) * (s_xx + s_yy + c2)
    return num / den


def ssim(
    img_a: np.ndarray,
    img_b: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float | None = None,
    channels: Literal["luma", "rgb"] = "luma",
) -> float:
    """Structural similarity (Wang et al. 2004) in [-1, 1]; 1 means identical.

    Gray (H, W) input is scored directly; (H, W, 3) BGR input per ``channels`` (see the
    module docstring). Images must be at least 11 px a side.
    """
    m = _check_pair(img_a, img_b, mask)
    if min(img_a.shape[:2]) < _SSIM_WIN:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WIN} px a side")
    peak = _default_range(img_a, data_range)
    if img_a.ndim == 2:
        planes = [(img_a.astype(np.float64), img_b.astype(np.float64))]
    elif channels == "luma":
        planes = [(_luma(img_a), _luma(img_b))]
    elif channels == "rgb":
        planes = [
            (img_a[..., c].astype(np.float64), img_b[..., c].astype(np.float64))
            for c in range(img_a.shape[2])
        ]
    else:
        raise ValueError(f"channels must be 'luma' or 'rgb', not {channels!r}")
    r = _SSIM_WIN // 2
    m_valid = m[r:-r, r:-r] if m is not None else None
    if m_valid is not None and not m_valid.any():
        raise ValueError("mask lies entirely within 5 px of the image border")
    scores = []
    for x, y in planes:
        smap = _ssim_map(x, y, peak)
        scores.append(float(smap[m_valid].mean() if m_valid is not None else smap.mean()))
    return float(np.mean(scores))


def psnr_outside(
    img_a: np.ndarray, img_b: np.ndarray, mask: np.ndarray, data_range: float | None = None
) -> float:
    """PSNR of the pixels *outside* ``mask`` — is the background left untouched?"""
    return psnr(img_a, img_b, ~np.asarray(mask).astype(bool), data_range)


def ssim_outside(
    img_a: np.ndarray,
    img_b: np.ndarray,
    mask: np.ndarray,
    data_range: float | None = None,
    channels: Literal["luma", "rgb"] = "luma",
) -> float:
    """SSIM averaged over the map outside ``mask`` (background preservation)."""
    return ssim(img_a, img_b, ~np.asarray(mask).astype(bool), data_range, channels)


# --- colour -----------------------------------------------------------------------------

#: sRGB (linear) → XYZ, IEC 61966-2-1 / D65.
_RGB2XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
#: D65 reference white (2° observer): the matrix's row sums (0.95047, 1.0, 1.08883),
#: so that sRGB white maps to exactly L* = 100, a* = b* = 0.
_WHITE_D65 = _RGB2XYZ.sum(axis=1)


def bgr_to_lab(bgr: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB colours in BGR order, float64, shape (..., 3).

    uint8 input is scaled by 1/255; float input is taken as sRGB-encoded in [0, 1].
    """
    bgr = np.asarray(bgr)
    scale = 255.0 if np.issubdtype(bgr.dtype, np.integer) else 1.0
    rgb = bgr[..., ::-1].astype(np.float64) / scale
    xyz = srgb_to_linear(rgb) @ _RGB2XYZ.T / _WHITE_D65
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    lab = np.empty_like(f)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def mean_skin_lab(img_bgr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean colour of the masked skin pixels as a Lab triple (D65).

    Averaging happens in *linear* RGB (physically the average reflected light), and
    only that mean is converted to Lab, so a few dark pores or specular highlights do
    not pull the result the way averaging gamma-encoded values or Lab values would.
    """
    m = np.asarray(mask).astype(bool)
    if m.shape != img_bgr.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image {img_bgr.shape[:2]}")
    if not m.any():
        raise ValueError("mask selects no pixels")
    scale = 255.0 if np.issubdtype(img_bgr.dtype, np.integer) else 1.0
    lin = srgb_to_linear(img_bgr[m].astype(np.float64) / scale).mean(axis=0)
    return bgr_to_lab(linear_to_srgb(lin))


def ciede2000(
    lab1: np.ndarray | tuple[float, float, float] | list[float],
    lab2: np.ndarray | tuple[float, float, float] | list[float],
    k_l: float = 1.0,
    k_c: float = 1.0,
    k_h: float = 1.0,
) -> np.ndarray | float:
    """CIEDE2000 colour difference ΔE00 between Lab colours (broadcast over ``...``).

    Implements Sharma, Wu & Dalal, "The CIEDE2000 color-difference formula:
    implementation notes, supplementary test data, and mathematical observations"
    (2005), eqs. (1)–(17). Returns a float for single colours, else an array.
    """
    a = np.asarray(lab1, dtype=np.float64)
    b = np.asarray(lab2, dtype=np.float64)
    l1, a1, b1 = a[..., 0], a[..., 1], a[..., 2]
    l2, a2, b2 = b[..., 0], b[..., 1], b[..., 2]

    c1 = np.hypot(a1, b1)
    c2 = np.hypot(a2, b2)
    c_bar7 = ((c1 + c2) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    # Hue angles in degrees [0, 360); atan2(0, 0) is defined as 0 (eq. 4 note).
    h1p = np.where((a1p == 0) & (b1 == 0), 0.0, np.degrees(np.arctan2(b1, a1p)) % 360)
    h2p = np.where((a2p == 0) & (b2 == 0), 0.0, np.degrees(np.arctan2(b2, a2p)) % 360)

    dlp = l2 - l1
    dcp = c2p - c1p
    cprod = c1p * c2p
    dh = h2p - h1p
    dhp = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dhp = np.where(cprod == 0, 0.0, dhp)
    dHp = 2 * np.sqrt(cprod) * np.sin(np.radians(dhp) / 2)

    lp_bar = (l1 + l2) / 2
    cp_bar = (c1p + c2p) / 2
    hsum = h1p + h2p
    hp_bar = np.where(
        np.abs(h1p - h2p) <= 180,
        hsum / 2,
        np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2),
    )
    hp_bar = np.where(cprod == 0, hsum, hp_bar)

    t = (
        1
        - 0.17 * np.cos(np.radians(hp_bar - 30))
        + 0.24 * np.cos(np.radians(2 * hp_bar))
        + 0.32 * np.cos(np.radians(3 * hp_bar + 6))
        - 0.20 * np.cos(np.radians(4 * hp_bar - 63))
    )
    d_theta = 30 * np.exp(-(((hp_bar - 275) / 25) ** 2))
    cp_bar7 = cp_bar**7
    r_c = 2 * np.sqrt(cp_bar7 / (cp_bar7 + 25.0**7))
    l50 = (lp_bar - 50) ** 2
    s_l = 1 + 0.015 * l50 / np.sqrt(20 + l50)
    s_c = 1 + 0.045 * cp_bar
    s_h = 1 + 0.015 * cp_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c

    tl = dlp / (k_l * s_l)
    tc = dcp / (k_c * s_c)
    th = dHp / (k_h * s_h)
    de = np.sqrt(tl * tl + tc * tc + th * th + r_t * tc * th)
    return float(de) if de.ndim == 0 else de
