"""Alignment: warp a face out to a canonical crop, and paste a crop back.

This is the one place where image <-> crop geometry lives (facexlib's
``FaceRestoreHelper`` idea): a similarity transform from the 5 landmarks to a fixed
template, and its inverse for pasting back with a feathered mask. Everything that edits
a face (anonymisers, recovery) goes through ``warp_face`` and ``paste_back`` so that
geometry stored in a payload means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: ArcFace/SFace 5-point template for a 112x112 crop (same order as ``Face.kps``).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32,
)


def template(size: int, padding: float = 0.0) -> np.ndarray:
    """The 5-point template for a ``size`` crop; ``padding`` adds context around the face.

    ``padding=0`` is the recogniser crop (eyebrows to chin); anonymisers use ~0.25 so
    the crop includes forehead, jaw line and a margin to blend in.
    """
    t = ARCFACE_112 / 112.0
    t = (t - 0.5) / (1.0 + 2.0 * padding) + 0.5
    return (t * size).astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping ``src`` points to ``dst``.

    Returns a 2x3 float64 matrix. Closed form instead of RANSAC: with 5 exact points
    there are no outliers, and a deterministic result keeps payloads reproducible.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    var_s = (s**2).sum() / len(src)
    scale = (sig * np.diag(e)).sum() / var_s
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


@dataclass
class AlignedFace:
    """A canonical crop and the 2x3 affine that maps image pixels to crop pixels."""

    crop: np.ndarray
    matrix: np.ndarray  # image -> crop
    size: int


def align_matrix(kps: np.ndarray, size: int, padding: float = 0.0) -> np.ndarray:
    return similarity_transform(kps, template(size, padding))


def warp_face(img: np.ndarray, kps: np.ndarray, size: int = 112, padding: float = 0.0,
              matrix: np.ndarray | None = None) -> AlignedFace:
    """Cut out the face as a ``size``x``size`` canonical crop (reflect-padded at borders)."""
    m = align_matrix(kps, size, padding) if matrix is None else np.asarray(matrix, np.float64)
    crop = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT_101)
    return AlignedFace(crop=crop, matrix=m, size=size)


def crop_region(matrix: np.ndarray, size: int, shape_hw: tuple[int, int],
                margin: int = 2) -> tuple[int, int, int, int]:
    """Bounding rectangle (x, y, w, h), clipped to the image, that the crop covers."""
    inv = invert_affine(matrix)
    corners = transform_points(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]]))
    x0, y0 = np.floor(corners.min(0)).astype(int) - margin
    x1, y1 = np.ceil(corners.max(0)).astype(int) + margin
    h, w = shape_hw
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(w, x1), min(h, y1)
    return int(x0), int(y0), int(max(0, x1 - x0)), int(max(0, y1 - y0))


def feather_mask(size: int, mask: np.ndarray | None = None, feather: float = 0.06) -> np.ndarray:
    """Soft float32 mask in [0, 1] at crop resolution.

    Without ``mask`` it is the whole crop with a faded border; with one (uint8 or float),
    its edge is blurred by ``feather`` x size so the seam is invisible.
    """
    if mask is None:
        m = np.zeros((size, size), np.float32)
        b = max(1, int(round(size * feather)))
        m[b:-b, b:-b] = 1.0
    else:
        m = mask.astype(np.float32)
        if m.max() > 1.0:
            m /= 255.0
    k = max(1, int(round(size * feather))) | 1
    return cv2.GaussianBlur(m, (0, 0), sigmaX=k / 2.0)


def paste_back(img: np.ndarray, crop: np.ndarray, matrix: np.ndarray,
               mask: np.ndarray | None = None, feather: float = 0.06) -> np.ndarray:
    """Blend ``crop`` (in canonical space) back into a copy of ``img`` through ``matrix``.

    Only the face's bounding rectangle is warped, so the cost depends on the face size,
    not the photo size.
    """
    warped = warp_to_roi(crop, feather_mask(crop.shape[0], mask, feather), matrix,
                         img.shape[:2])
    out = img.copy()
    if warped is None:
        return out
    (x, y, w, h), face, alpha = warped
    roi = out[y:y + h, x:x + w].astype(np.float32)
    out[y:y + h, x:x + w] = np.clip(roi + alpha * (face.astype(np.float32) - roi) + 0.5,
                                    0, 255).astype(np.uint8)
    return out


def warp_to_roi(crop: np.ndarray, soft: np.ndarray, matrix: np.ndarray,
                shape_hw: tuple[int, int]) -> tuple[tuple[int, int, int, int], np.ndarray,
                                                    np.ndarray] | None:
    """Inverse-warp a canonical-space ``crop`` and its float ``soft`` mask into the image
    rectangle the crop covers: ``(rect, warped crop, alpha (h, w, 1))``, or None if the
    rectangle is empty. Only the rectangle is computed (cost ~ face size, not photo size).
    """
    size = crop.shape[0]
    x, y, w, h = crop_region(matrix, size, shape_hw)
    if w == 0 or h == 0:
        return None
    # Shift the transform so the warp writes straight into the ROI.
    m_roi = np.asarray(matrix, np.float64).copy()
    m_roi[:, 2] += m_roi[:, :2] @ np.array([x, y], np.float64)
    inv = invert_affine(m_roi)
    face = cv2.warpAffine(crop, inv, (w, h), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(soft, inv, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    return (x, y, w, h), face, alpha
