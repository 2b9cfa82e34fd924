"""Compositing a donor face into the original so that nothing looks pasted.

Three things made the old swap look pasted, each handled here:

* **the seam** — a feathered alpha blend is a compromise: a wide feather leaves a soft,
  half-transparent band (the donor's low frequencies *and* the original's details both
  half there), a narrow one a visible edge. ``multiband_blend`` (Burt & Adelson) blends
  each band of a Laplacian pyramid with a mask blurred to that band's scale: colour and
  shading change gradually, texture switches crisply, so there is no band and no edge;
* **occluders** — hair over the forehead, a hat brim, a hand: pixels in the replaced
  region that are not skin. ``occluder_mask`` finds them by their colour distance from the
  face's own cheek skin so they stay in front of the donor (a fringe stays a fringe);
* **grain** — the donor crop is cleaner (or noisier) than the photo around it.
  ``match_grain`` measures the fine-scale residual inside the skin of both and adds the
  missing noise or softens the donor, so skin, hair and neck share one grain.
"""

from __future__ import annotations

import cv2
import numpy as np

from refacex.faces.masks import face_mask


def multiband_blend(base: np.ndarray, top: np.ndarray, alpha: np.ndarray,
                    levels: int = 5) -> np.ndarray:
    """``top`` over ``base`` with ``alpha`` (H, W float in [0, 1]), band by band.

    ``top`` should already equal ``base`` wherever it has no content of its own (outside
    the face), otherwise its background bleeds into the coarse bands."""
    h, w = base.shape[:2]
    levels = max(1, min(levels, int(np.log2(max(2, min(h, w) // 8)))))
    a = alpha.astype(np.float32)
    gb, gt, ga = [base.astype(np.float32)], [top.astype(np.float32)], [a]
    for _ in range(levels):
        gb.append(cv2.pyrDown(gb[-1]))
        gt.append(cv2.pyrDown(gt[-1]))
        ga.append(cv2.pyrDown(ga[-1]))
    out = gt[-1] * ga[-1][..., None] + gb[-1] * (1.0 - ga[-1][..., None])
    for i in range(levels - 1, -1, -1):
        size = (gb[i].shape[1], gb[i].shape[0])
        lb = gb[i] - cv2.pyrUp(gb[i + 1], dstsize=size)
        lt = gt[i] - cv2.pyrUp(gt[i + 1], dstsize=size)
        m = ga[i][..., None]
        out = cv2.pyrUp(out, dstsize=size) + lt * m + lb * (1.0 - m)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def occluder_mask(crop: np.ndarray, lm: np.ndarray, skin_lab: np.ndarray,
                  forehead: float) -> np.ndarray:
    """float mask (1 = keep the original pixel) of non-skin in the forehead band and at
    the temples — fringes, hat brims, hands, glasses arms — of ``crop``'s face.

    Only the band above the brows (where hair falls) and the face outline are tested: the
    brows, eyes, nose and mouth are features the donor replaces, not occluders. A pixel
    counts as an occluder when it is far from the cheek colour ``skin_lab`` in Lab
    (mostly darker, as hair is) — the same face's cheeks, so lighting and camera cancel."""
    hw = crop.shape[:2]
    band = (face_mask(hw, lm, forehead) > 0) & (face_mask(hw, lm, 0.0) == 0)
    # The outer ring of the face (temples, cheeks' edge), where side hair covers skin.
    inner = cv2.erode(face_mask(hw, lm, 0.0), np.ones((9, 9), np.uint8))
    ring = (face_mask(hw, lm, 0.0) > 0) & (inner == 0)
    region = band | ring
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB).astype(np.float32)
    lab = cv2.GaussianBlur(lab, (0, 0), 1.0)
    skin = np.asarray(skin_lab, np.float32)
    d_l = skin[0] - lab[..., 0]  # > 0: darker than skin
    d_ab = np.linalg.norm(lab[..., 1:] - skin[1:], axis=-1)
    # Skin in a highlight is lighter and less saturated than the cheeks (towards white):
    # not an occluder. Counted as one, a shiny or overexposed forehead was kept as it
    # was, a pale patch with a hard edge in the donor's face (two of t1's women).
    chroma = np.linalg.norm(lab[..., 1:] - 128.0, axis=-1)
    highlight = (d_l < -5.0) & (chroma < np.linalg.norm(skin[1:] - 128.0))
    d_ab = np.where(highlight, 0.0, d_ab)
    score = np.maximum(d_l - 18.0, 0.0) / 12.0 + np.maximum(d_ab - 14.0, 0.0) / 10.0
    occ = (np.clip(score, 0.0, 1.0) * region).astype(np.float32)
    # Hair is a connected strand, not speckle: open away isolated pixels (pores, moles).
    occ = cv2.morphologyEx(occ, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return cv2.GaussianBlur(occ, (0, 0), 1.0)


def _residual_std(img: np.ndarray, sel: np.ndarray) -> float:
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    r = g - cv2.GaussianBlur(g, (0, 0), 1.2)
    return float(np.median(np.abs(r[sel]))) * 1.4826  # robust std (edges do not count)


def match_grain(donor: np.ndarray, orig: np.ndarray, sel: np.ndarray,
                seed: int = 0) -> np.ndarray:
    """``donor`` with the fine-scale grain of ``orig`` inside the skin ``sel``: Gaussian
    luminance noise added if the donor is cleaner, a light blur if it is sharper.
    Deterministic (``seed``), so the same input gives the same output."""
    if sel.sum() < 50:
        return donor
    s_o, s_d = _residual_std(orig, sel), _residual_std(donor, sel)
    out = donor.astype(np.float32)
    if s_d > 1.3 * s_o + 0.3:
        # Sharper than the photo (a small or soft face): blur until the grain matches.
        sigma = float(np.clip(0.6 * np.sqrt(s_d / max(s_o, 0.2) - 1.0), 0.3, 1.5))
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    elif s_o > 1.15 * s_d + 0.3:
        noise = np.random.default_rng(seed).standard_normal(donor.shape[:2]).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), 0.5)
        noise *= np.sqrt(max(s_o**2 - s_d**2, 0.0)) / (float(noise.std()) + 1e-6) * 0.8
        out += noise[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def local_tone(donor: np.ndarray, orig: np.ndarray, sel: np.ndarray,
               sigma: float) -> np.ndarray:
    """``donor`` with its low frequencies (scale ``sigma`` px) replaced by the original's,
    measured over the bare skin ``sel`` only (normalised convolution, so brows, eyes,
    hair and background do not count).

    A global Lab match leaves local differences — a forehead lit brighter than the
    cheeks, a shadowed temple — which show as patches wherever the original stays
    (occluders, kept eyes) and as a face that is lit "flat". At this scale the original
    carries light and skin tone, not the features that identify (those are finer)."""
    m = sel.astype(np.float32)
    den = cv2.GaussianBlur(m, (0, 0), sigma)[..., None] + 1e-3
    d = donor.astype(np.float32)
    o = orig.astype(np.float32)
    low_o = cv2.GaussianBlur(o * m[..., None], (0, 0), sigma) / den
    low_d = cv2.GaussianBlur(d * m[..., None], (0, 0), sigma) / den
    return np.clip(d + (low_o - low_d) + 0.5, 0, 255).astype(np.uint8)
