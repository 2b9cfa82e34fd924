"""Blur, pixelate and mask: the baselines users know, and the audit compares against.

All three act on the face mask (jaw, brows and a forehead band from the 68 landmarks),
slightly dilated and feathered, so they hide the same region a swap replaces.
"""

from __future__ import annotations

import cv2
import numpy as np

from refacex.anonymize.base import Anonymizer, FaceContext
from refacex.faces.masks import face_mask


def _region_mask(ctx: FaceContext, shape_hw: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """Soft float mask of the face inside the edit rectangle, and the rectangle slices."""
    x, y, w, h = ctx.rect
    lm = ctx.face.landmarks - np.array([x, y], np.float32)
    m = face_mask((h, w), lm, forehead=0.8)
    grow = max(3, int(0.08 * ctx.face.inter_ocular * 2))
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    soft = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), grow / 2.0)
    return soft[..., None], (slice(y, y + h), slice(x, x + w))


def _blend(img: np.ndarray, sl: tuple, new: np.ndarray, alpha: np.ndarray) -> None:
    roi = img[sl].astype(np.float32)
    img[sl] = np.clip(roi + alpha * (new.astype(np.float32) - roi) + 0.5, 0, 255).astype(
        np.uint8)


class BlurAnonymizer(Anonymizer):
    """Gaussian blur with sigma proportional to the face size (identity-destroying)."""

    name = "blur"

    def __init__(self, strength: float = 1.0) -> None:
        self.strength = strength

    def sigma(self, ctx: FaceContext) -> float:
        """The blur's sigma (px) for this face: 0.35 eye distances at strength 1."""
        return max(1.0, 0.35 * ctx.face.inter_ocular * self.strength)

    def apply(self, img: np.ndarray, ctx: FaceContext) -> None:
        alpha, sl = _region_mask(ctx, img.shape[:2])
        _blend(img, sl, cv2.GaussianBlur(img[sl], (0, 0), self.sigma(ctx)), alpha)


class PixelateAnonymizer(Anonymizer):
    """Mosaic of ~8 blocks across the eye distance x 2.5."""

    name = "pixelate"

    def __init__(self, strength: float = 1.0) -> None:
        self.strength = strength

    def apply(self, img: np.ndarray, ctx: FaceContext) -> None:
        alpha, sl = _region_mask(ctx, img.shape[:2])
        roi = img[sl]
        h, w = roi.shape[:2]
        block = max(2, int(round(ctx.face.inter_ocular * 0.3 * self.strength)))
        small = cv2.resize(roi, (max(1, w // block), max(1, h // block)),
                           interpolation=cv2.INTER_AREA)
        mosaic = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        _blend(img, sl, mosaic, np.where(alpha > 0.05, 1.0, 0.0).astype(np.float32))


class MaskAnonymizer(Anonymizer):
    """Solid fill with the face's mean colour (nothing of the face is left)."""

    name = "mask"

    def apply(self, img: np.ndarray, ctx: FaceContext) -> None:
        alpha, sl = _region_mask(ctx, img.shape[:2])
        roi = img[sl]
        inside = alpha[..., 0] > 0.5
        colour = roi[inside].mean(0) if inside.any() else roi.reshape(-1, 3).mean(0)
        fill = np.empty_like(roi)
        fill[:] = np.round(colour).astype(np.uint8)
        _blend(img, sl, fill, np.where(alpha > 0.05, 1.0, 0.0).astype(np.float32))
