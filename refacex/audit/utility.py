"""Utility measurements: what an anonymised face still offers to downstream use.

Anonymisation is for keeping photos *useful* without the identity, so the audit asks
what a face pipeline can still read off the result, against the original: is the face
still detected (and how confidently), where are its 68 landmarks, its head pose, its
expression (eye/mouth openness and the landmark shape after Procrustes alignment), its
lighting (spherical-harmonic light direction) and skin colour, and is the background
untouched?

A face that is no longer detected is counted as such (``detected = False``), and its
landmark/pose/expression numbers are still computed by running the landmark predictor
at the *original* face's location — so the geometry numbers exist for every method and
"undetectable" is not silently dropped from the averages.
"""

from __future__ import annotations

import contextlib
from typing import Any

import cv2
import numpy as np

from refacex.audit.metrics import ciede2000, mean_skin_lab, psnr_outside, ssim_outside
from refacex.faces import Face
from refacex.faces.detect import IOU_MATCH, iou, match_detection  # noqa: F401 (re-export)
from refacex.faces.landmarks import eye_openness, mouth_openness
from refacex.faces.masks import face_mask, part_mask
from refacex.faces.photometry import face_normals, fit_sh_lighting, light_angle_deg, sh_irradiance
from refacex.faces.pose import estimate_pose


def procrustes_distance(a: np.ndarray, b: np.ndarray, iod: float) -> float:
    """Mean point distance between shape ``b`` and shape ``a`` after the best similarity
    transform of ``b`` onto ``a``, over the inter-ocular distance of ``a``.

    Why Procrustes: head pose changes and a donor's face proportions move every point;
    what is left after removing translation, rotation and scale is the *expression*
    (mouth shape, eye closure, brow raise) — what an anonymiser should keep."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ma, mb = a.mean(0), b.mean(0)
    a0, b0 = a - ma, b - mb
    u, s, vt = np.linalg.svd(b0.T @ a0)
    d = np.eye(2)
    if np.linalg.det(u @ vt) < 0:
        d[1, 1] = -1
    r = u @ d @ vt
    scale = float((s * np.diag(d)).sum() / (b0**2).sum())
    b_al = scale * b0 @ r + ma
    return float(np.linalg.norm(b_al - a, axis=1).mean() / max(iod, 1e-6))


def skin_region(shape_hw: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """Face mask minus (dilated) eyes and mouth: the skin whose colour and shading we
    compare — eyes and teeth are not skin and do not follow the Lambertian model."""
    iod = float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))
    fm = face_mask(shape_hw, lm) > 127
    parts = part_mask(shape_hw, lm, dilate=max(2, int(0.15 * iod))) > 0
    return fm & ~parts


def face_utility(orig_img: np.ndarray, anon_img: np.ndarray, orig: Face,
                 anon_lm: np.ndarray | None) -> dict[str, Any]:
    """Per-face geometry, expression, lighting and colour fidelity (see module doc)."""
    out: dict[str, Any] = {}
    lo = np.asarray(orig.landmarks, np.float64)
    iod = orig.inter_ocular
    if anon_lm is not None:
        la = np.asarray(anon_lm, np.float64)
        out["nme_pct"] = float(np.linalg.norm(la - lo, axis=1).mean() / max(iod, 1e-6) * 100)
        pa = estimate_pose(la, anon_img.shape[:2])
        po = orig.pose or estimate_pose(lo, orig_img.shape[:2])
        out["pose_err_deg"] = {"yaw": abs(pa.yaw - po.yaw), "pitch": abs(pa.pitch - po.pitch),
                               "roll": abs(pa.roll - po.roll)}
        out["pose_err_mean_deg"] = float(np.mean(list(out["pose_err_deg"].values())))
        eo, ea = np.mean(eye_openness(lo)), np.mean(eye_openness(la))
        out["d_eye_openness"] = float(abs(ea - eo))
        out["d_mouth_openness"] = float(abs(mouth_openness(la) - mouth_openness(lo)))
        out["expression_shape_dist"] = procrustes_distance(lo, la, iod)
    skin = skin_region(orig_img.shape[:2], lo)
    if skin.sum() >= 50:
        out.update(lighting_angles(orig_img, anon_img, lo, skin))
        out["skin_delta_e"] = float(ciede2000(mean_skin_lab(orig_img, skin),
                                              mean_skin_lab(anon_img, skin)))
    return out


LIGHT_VERSION = 2


def light_direction(img: np.ndarray, normals: np.ndarray, mask: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(robust direction, SH argmax direction) of the light on the masked face.

    Why not only the SH argmax (``SHLighting.direction``): fitted on the front half of an
    approximate face ellipsoid, a nearly ambient lighting leaves the argmax free to land
    on normals the face does not have (behind it), and single faces flip by 90–170°
    between an image and its mildly blurred copy. The robust direction is the mean of the
    *observed* normals whose fitted irradiance is in the top 10 %: "which part of this
    face is lit", which a blurred copy keeps within a few degrees.
    """

    lit = fit_sh_lighting(img, normals, mask)
    nv = normals[mask & (np.einsum("...k,...k->...", normals, normals) > 0.25)]
    e = sh_irradiance(lit.coeffs, nv)
    top = nv[e >= np.percentile(e, 90)]
    d = top.mean(0)
    return d / (np.linalg.norm(d) + 1e-12), lit.direction


def lighting_angles(orig_img: np.ndarray, anon_img: np.ndarray, lm: np.ndarray,
                    skin: np.ndarray) -> dict[str, Any]:
    """Angle between original and anonymised light directions, normals from the
    ORIGINAL landmarks (both images are lit on the same geometry), skin pixels only."""
    try:
        n = face_normals(orig_img.shape[:2], lm, mask=skin)
        ro, ao = light_direction(orig_img, n, skin)
        ra, aa = light_direction(anon_img, n, skin)
    except ValueError:  # too few usable (unsaturated) skin pixels
        return {}
    return {"light_angle_deg": light_angle_deg(ro, ra),
            "light_angle_sh_argmax_deg": light_angle_deg(ao, aa), "light_v": LIGHT_VERSION}


def background_mask(shape_hw: tuple[int, int], faces: list[Face]) -> np.ndarray:
    """Union of the face masks, dilated by one inter-ocular distance: the anonymisers
    feather beyond the landmark hull, and that seam is not "background"."""
    m = np.zeros(shape_hw, np.uint8)
    grow = 3
    for f in faces:
        if f.landmarks is None:
            x, y, w, h = (int(round(v)) for v in f.box)
            cv2.rectangle(m, (x, y), (x + w, y + h), 255, -1)
        else:
            m = np.maximum(m, face_mask(shape_hw, f.landmarks, forehead=0.8))
        grow = max(grow, int(f.inter_ocular))
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    return m > 0


def background_fidelity(orig_img: np.ndarray, anon_img: np.ndarray, faces: list[Face]
                        ) -> dict[str, Any]:
    """PSNR/SSIM outside the dilated face masks (inf/1.0 = untouched)."""
    m = background_mask(orig_img.shape[:2], faces)
    if m.all():
        return {}
    out: dict[str, Any] = {"bg_fraction": float(1 - m.mean())}
    out["bg_psnr"] = psnr_outside(orig_img, anon_img, m)
    with contextlib.suppress(ValueError):  # background too thin for SSIM windows
        out["bg_ssim"] = ssim_outside(orig_img, anon_img, m)
    return out
