"""The documented distortion suite for the robustness audit.

Why these: they are what happens to a photo between the person who anonymised it and
the person who wants it back — sharing platforms re-encode (JPEG at 95..30, WebP),
rescale (0.5x..2x), crop borders, retouch brightness/contrast, add sensor/encoder noise
and strip metadata (which removes the lossless vault, leaving only the in-pixel tier).

Each distortion maps the anonymised image (BGR uint8, plus the file bytes it came in)
to the *file bytes* a recipient would get, and to the 2x3 affine that maps original
pixel coordinates to the distorted image's — so the recovered face can be compared with
the original's aligned crop at the right place. Pixel-level distortions are re-encoded
losslessly as PNG (no vault: the platform rebuilt the file), so only the named
distortion acts. All are deterministic (noise is seeded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from refacex.io.images import encode_image

__all__ = ["DISTORTIONS", "Distortion", "apply", "brightness", "contrast", "crop", "crop_px",
           "jpeg", "noise", "resize"]

Affine = np.ndarray  # 2x3, original -> distorted pixel coordinates


@dataclass(frozen=True)
class Distortion:
    """One named distortion: ``fn(img, file_bytes) -> (bytes, affine)``; ``family`` and
    ``level`` place it on a robustness curve (x axis)."""

    name: str
    family: str
    level: float
    fn: Callable[[np.ndarray, bytes], tuple[bytes, Affine]]


_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


# ----------------------------------------------------------------------------- on arrays
# The attacks themselves, on BGR uint8 arrays: the suite below, the robust channel's tests
# and the benchmarks all use these, so "crop 5 %" means the same thing everywhere.


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Re-encoded as JPEG at ``quality`` and decoded again."""
    return cv2.imdecode(np.frombuffer(encode_image(img, ".jpg", quality), np.uint8),
                        cv2.IMREAD_COLOR)


def resize(img: np.ndarray, f: float) -> np.ndarray:
    """Resized by ``f`` (area averaging down, bicubic up), sides rounded."""
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=interp)


def crop_px(img: np.ndarray, left: float = 0, top: float = 0, right: float = 0,
            bottom: float = 0) -> tuple[int, int, int, int]:
    """Pixels a crop of these fractions of the width/height removes at each border."""
    h, w = img.shape[:2]
    return round(w * left), round(h * top), round(w * right), round(h * bottom)


def crop(img: np.ndarray, left: float = 0, top: float = 0, right: float = 0,
         bottom: float = 0) -> np.ndarray:
    """Borders removed: fractions of the width (left, right) and height (top, bottom)."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = crop_px(img, left, top, right, bottom)
    return np.ascontiguousarray(img[y0:h - y1, x0:w - x1])


def brightness(img: np.ndarray, f: float) -> np.ndarray:
    """Every value scaled by ``1 + f`` (what a "brightness +20 %" slider does), clipped."""
    return np.clip(img.astype(np.float32) * (1 + f) + 0.5, 0, 255).astype(np.uint8)


def contrast(img: np.ndarray, f: float) -> np.ndarray:
    """Deviations from each channel's mean scaled by ``1 + f``, clipped."""
    x = img.astype(np.float32)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - mean) * (1 + f) + mean + 0.5, 0, 255).astype(np.uint8)


def noise(img: np.ndarray, sigma: float, seed: int = 1234) -> np.ndarray:
    """Seeded Gaussian noise of ``sigma`` grey levels, clipped."""
    n = np.random.default_rng(seed).normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(img.astype(np.float32) + n + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- on files

Fn = Callable[[np.ndarray, bytes], tuple[bytes, Affine]]


def _jpeg(q: int) -> Fn:
    return lambda img, _data: (encode_image(img, ".jpg", q), _IDENTITY.copy())


def _webp(q: int) -> Fn:
    return lambda img, _data: (encode_image(img, ".webp", q), _IDENTITY.copy())


def _pixels(attack: Callable[[np.ndarray], np.ndarray]) -> Fn:
    """A pixel attack whose geometry is unchanged, re-encoded losslessly."""
    return lambda img, _data: (encode_image(attack(img), ".png"), _IDENTITY.copy())


def _resize(f: float) -> Fn:
    def fn(img: np.ndarray, _data: bytes) -> tuple[bytes, Affine]:
        h, w = img.shape[:2]
        out = resize(img, f)
        nh, nw = out.shape[:2]
        return encode_image(out, ".png"), np.array([[nw / w, 0.0, 0.0], [0.0, nh / h, 0.0]])
    return fn


def _crop(pct: float) -> Fn:
    """Remove ``pct`` % of the width/height in total, half from each border."""
    def fn(img: np.ndarray, _data: bytes) -> tuple[bytes, Affine]:
        f = pct / 200
        dx, dy, _, _ = crop_px(img, f, f, f, f)
        m = np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy]])
        return encode_image(crop(img, f, f, f, f), ".png"), m
    return fn


def _strip(img: np.ndarray, data: bytes) -> tuple[bytes, Affine]:
    """Same pixels, container metadata (and so the vault) removed."""
    from refacex.stego import vault

    return vault.strip(data), _IDENTITY.copy()


DISTORTIONS: tuple[Distortion, ...] = (
    Distortion("jpeg95", "jpeg", 95, _jpeg(95)),
    Distortion("jpeg75", "jpeg", 75, _jpeg(75)),
    Distortion("jpeg50", "jpeg", 50, _jpeg(50)),
    Distortion("jpeg30", "jpeg", 30, _jpeg(30)),
    Distortion("webp75", "webp", 75, _webp(75)),
    Distortion("resize0.5", "resize", 0.5, _resize(0.5)),
    Distortion("resize0.75", "resize", 0.75, _resize(0.75)),
    Distortion("resize1.5", "resize", 1.5, _resize(1.5)),
    Distortion("resize2.0", "resize", 2.0, _resize(2.0)),
    Distortion("crop2", "crop", 2, _crop(2)),
    Distortion("crop5", "crop", 5, _crop(5)),
    Distortion("crop10", "crop", 10, _crop(10)),
    Distortion("brightness+20", "brightness", 20, _pixels(lambda x: brightness(x, 0.2))),
    Distortion("brightness-20", "brightness", -20, _pixels(lambda x: brightness(x, -0.2))),
    Distortion("contrast+20", "contrast", 20, _pixels(lambda x: contrast(x, 0.2))),
    Distortion("contrast-20", "contrast", -20, _pixels(lambda x: contrast(x, -0.2))),
    Distortion("noise2", "noise", 2, _pixels(lambda x: noise(x, 2))),
    Distortion("noise5", "noise", 5, _pixels(lambda x: noise(x, 5))),
    Distortion("strip", "metadata", 0, _strip),
)


def apply(name: str, img: np.ndarray, data: bytes) -> tuple[bytes, Affine]:
    """Apply the distortion called ``name`` (see ``DISTORTIONS``)."""
    for d in DISTORTIONS:
        if d.name == name:
            return d.fn(img, data)
    raise KeyError(f"unknown distortion {name!r}; known: {', '.join(d.name for d in DISTORTIONS)}")
