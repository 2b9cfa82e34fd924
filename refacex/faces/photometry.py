"""Photometry shared by the swap and the audit: the sRGB transfer curve, lighting
estimation and shading transfer with 2nd-order spherical harmonics (SH).

It lives in ``faces/`` (a low layer) because both ``refacex.anonymize.swap`` (re-shading
the donor) and ``refacex.audit`` (lighting consistency, skin colour) use it; it depends
on numpy only.

Why SH: the irradiance on a convex Lambertian surface under *any* distant lighting is,
to within a few percent, a 9-term (order ≤ 2) SH polynomial of the surface normal
(Ramamoorthi & Hanrahan 2001). Fitting those 9 numbers to the luminance of a face by
least squares — with the unknown albedo absorbed into the coefficients — gives a
compact lighting description that can (a) be compared between the original and the
anonymised face (the audit's "is the lighting consistent?" check) and (b) drive a
re-shading of a donor face to the target's lighting (:func:`transfer_shading`).

Conventions:

* Normals live in a camera frame: **x → image right, y → image up, z → toward the
  viewer**; unit vectors, shape (H, W, 3), all-zero where undefined.
* Luminance is fitted in *linear light* (shading multiplies linear radiance, not
  gamma-encoded values): uint8 input is treated as sRGB and decoded; float input is
  taken as already linear.
* SH order (real, orthonormal constants): ``[Y00, Y1-1 (y), Y10 (z), Y11 (x), Y2-2 (xy),
  Y2-1 (yz), Y20 (3z²-1), Y21 (xz), Y22 (x²-y²)]``. The dominant light direction is
  the normal at which the fitted irradiance peaks (:func:`sh_direction` says why not
  the raw first-order vector).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SHLighting",
    "face_normals",
    "fit_sh_lighting",
    "light_angle_deg",
    "linear_to_srgb",
    "luminance_linear",
    "relight",
    "sh_basis",
    "sh_direction",
    "sh_first_order_direction",
    "sh_irradiance",
    "sphere_normals",
    "srgb_to_linear",
    "transfer_shading",
]

# Real SH normalisation constants.
_C0 = 0.28209479177387814  # 1 / (2 sqrt(pi))
_C1 = 0.4886025119029199  # sqrt(3 / (4 pi))
_C2 = 1.0925484305920792  # sqrt(15 / (4 pi))
_C20 = 0.31539156525252005  # sqrt(5 / (16 pi))
_C22 = 0.5462742152960396  # sqrt(15 / (16 pi))

#: Rec. 709 / sRGB luminance weights in B, G, R order (linear light).
_LUM_BGR = np.array([0.0722, 0.7152, 0.2126])


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] → linear light (IEC 61966-2-1 piecewise curve)."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] → sRGB-encoded values (inverse of :func:`srgb_to_linear`)."""
    v = np.clip(np.asarray(v, dtype=np.float64), 0.0, None)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


@dataclass(frozen=True)
class SHLighting:
    """Result of :func:`fit_sh_lighting`.

    ``coeffs`` are the 9 SH coefficients of (albedo x irradiance) in linear luminance
    units; ``direction`` the unit dominant-light vector; ``rms`` the fit residual (same
    units — large relative to ``coeffs[0]`` means the Lambertian/normal model is poor);
    ``n_pixels`` how many pixels entered the fit.
    """

    coeffs: np.ndarray
    direction: np.ndarray
    rms: float
    n_pixels: int


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """The 9 real SH basis functions of unit normals (..., 3) → (..., 9), float64."""
    n = np.asarray(normals, dtype=np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    return np.stack(
        [
            np.full_like(x, _C0),
            _C1 * y,
            _C1 * z,
            _C1 * x,
            _C2 * x * y,
            _C2 * y * z,
            _C20 * (3 * z * z - 1),
            _C2 * x * z,
            _C22 * (x * x - y * y),
        ],
        axis=-1,
    )


def sh_irradiance(coeffs: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Evaluate an SH lighting (9 coefficients) at normals (..., 3) → (...)."""
    return sh_basis(normals) @ np.asarray(coeffs, dtype=np.float64)


def luminance_linear(img: np.ndarray) -> np.ndarray:
    """Linear-light luminance (H, W) of a BGR or gray image, float64.

    uint8/uint16 input is sRGB-decoded; float input is assumed linear already.
    """
    a = np.asarray(img)
    if np.issubdtype(a.dtype, np.integer):
        lin = srgb_to_linear(a.astype(np.float64) / float(np.iinfo(a.dtype).max))
    else:
        lin = a.astype(np.float64)
    if lin.ndim == 2:
        return lin
    if lin.ndim == 3 and lin.shape[2] == 3:
        return lin @ _LUM_BGR
    raise ValueError(f"expected (H, W) or (H, W, 3) image, got {a.shape}")


def _valid(normals: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    ok = np.einsum("...k,...k->...", normals, normals) > 0.25  # defined (unit) normals
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != normals.shape[:2]:
            raise ValueError(f"mask shape {m.shape} does not match normals {normals.shape[:2]}")
        ok &= m.astype(bool)
    return ok


def fit_sh_lighting(
    img: np.ndarray,
    normals: np.ndarray,
    mask: np.ndarray | None = None,
    min_pixels: int = 50,
) -> SHLighting:
    """Least-squares fit of 9 SH coefficients to the luminance over ``mask``.

    Pixels without a normal (all-zero) are ignored. Albedo is assumed constant over the
    region and absorbed into the coefficients; saturated pixels (linear luminance
    ≥ 0.99, i.e. clipped highlights) are dropped because they break linearity.
    """
    if img.shape[:2] != normals.shape[:2]:
        raise ValueError(f"image {img.shape[:2]} and normals {normals.shape[:2]} differ")
    lum = luminance_linear(img)
    ok = _valid(normals, mask)
    if np.issubdtype(np.asarray(img).dtype, np.integer):
        ok &= lum < 0.99
    n_pix = int(ok.sum())
    if n_pix < min_pixels:
        raise ValueError(f"only {n_pix} usable pixels for the SH fit (need {min_pixels})")
    basis = sh_basis(normals[ok])
    target = lum[ok]
    coeffs, *_ = np.linalg.lstsq(basis, target, rcond=1e-10)
    rms = float(np.sqrt(np.mean((basis @ coeffs - target) ** 2)))
    return SHLighting(coeffs, sh_direction(coeffs), rms, n_pix)


def _fibonacci_sphere(k: int) -> np.ndarray:
    i = np.arange(k) + 0.5
    phi = np.arccos(1 - 2 * i / k)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack(
        [np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=-1
    )


_SEARCH_DIRS = _fibonacci_sphere(2000)  # ~4.5° spacing; refined locally below


def sh_direction(coeffs: np.ndarray) -> np.ndarray:
    """Dominant light direction: the unit normal that the SH lighting lights most.

    Why not simply normalise the first-order coefficients ``(c11, c1-1, c10)``: that is
    exact for a full-sphere SH projection, but a face (or any object seen from one side)
    shows only the front hemisphere of normals, where the 9 basis functions are not
    orthogonal; the least-squares fit then trades first- against second-order terms and
    the first-order vector is biased by up to ~30° for oblique lights (measured on a
    Lambertian sphere). The argmax of the fitted irradiance depends only on the fitted
    *function*, which is pinned down by the data, and lands within a few degrees.
    Found by a 2000-direction search and three local refinements (to ~0.1°).
    """
    c = np.asarray(coeffs, dtype=np.float64)
    if not np.any(c[1:]):
        return np.array([0.0, 0.0, 1.0])  # pure ambient: no direction; say "frontal"
    best = _SEARCH_DIRS[int(np.argmax(sh_basis(_SEARCH_DIRS) @ c))]
    offs = np.linspace(-1.0, 1.0, 9)
    for step in np.radians([4.0, 1.0, 0.25]):
        # Two tangent vectors at ``best``; evaluate a 9x9 patch and keep its maximum.
        helper = np.array([1.0, 0.0, 0.0]) if abs(best[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        t1 = np.cross(best, helper)
        t1 /= np.linalg.norm(t1)
        t2 = np.cross(best, t1)
        u, v = np.meshgrid(offs * step, offs * step)
        cand = best + u.reshape(-1, 1) * t1 + v.reshape(-1, 1) * t2
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        best = cand[int(np.argmax(sh_basis(cand) @ c))]
    return best / np.linalg.norm(best)


def sh_first_order_direction(coeffs: np.ndarray) -> np.ndarray:
    """Normalised ``(c11, c1-1, c10)`` — exact only for full-sphere SH data (see above)."""
    c = np.asarray(coeffs, dtype=np.float64)
    v = np.array([c[3], c[1], c[2]])
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def light_angle_deg(dir_a: np.ndarray, dir_b: np.ndarray) -> float:
    """Angle in degrees between two light directions (normalised here)."""
    a = np.asarray(dir_a, dtype=np.float64)
    b = np.asarray(dir_b, dtype=np.float64)
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def sphere_normals(
    shape_hw: tuple[int, int], center_xy: tuple[float, float], radius: float
) -> np.ndarray:
    """Normals of an orthographically viewed sphere (zeros off the disc) — for tests."""
    h, w = shape_hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    x = (xx - center_xy[0]) / radius
    y = -(yy - center_xy[1]) / radius
    r2 = x * x + y * y
    inside = r2 < 1.0
    z = np.sqrt(np.clip(1.0 - r2, 0.0, None))
    n = np.stack([x, y, z], axis=-1) * inside[..., None]
    return n.astype(np.float32)


def _face_ellipse(
    shape_hw: tuple[int, int], landmarks68: np.ndarray | None, mask: np.ndarray | None
) -> tuple[float, float, float, float]:
    """(cx, cy, half-width, half-height) of the face ellipse in pixels."""
    h, w = shape_hw
    if landmarks68 is not None:
        pts = np.asarray(landmarks68, dtype=np.float64).reshape(-1, 2)
        if pts.shape[0] != 68:
            raise ValueError(f"expected 68 landmarks, got {pts.shape[0]}")
        jaw, brows = pts[0:17], pts[17:27]
        x0, x1 = jaw[:, 0].min(), jaw[:, 0].max()
        chin = jaw[:, 1].max()
        brow = brows[:, 1].min()
        # Brow-to-chin is ~2/3 of the face height; the hairline sits half that above.
        top = brow - 0.5 * (chin - brow)
        return (x0 + x1) / 2, (top + chin) / 2, (x1 - x0) / 2, (chin - top) / 2
    if mask is not None and np.asarray(mask).any():
        rows, cols = np.nonzero(np.asarray(mask))
        x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    else:
        x0, x1, y0, y1 = 0, w, 0, h
    return (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5, (x1 - x0) / 2, (y1 - y0) / 2


def face_normals(
    shape_hw: tuple[int, int],
    landmarks68: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    depth_ratio: float = 0.8,
) -> np.ndarray:
    """Approximate per-pixel unit normals (H, W, 3) of a frontal face, zeros elsewhere.

    The approximation: the face is the front half of an ellipsoid whose outline is the
    face ellipse — from the 68 landmarks (jaw width, chin, and a hairline placed half
    the brow-to-chin distance above the brows) if given, else the bounding box of
    ``mask``, else the whole image — and whose depth (outline plane to nose-tip plane)
    is ``depth_ratio`` x half-width, a rough anthropometric ratio for the front half of
    a head. Nose, eye sockets, lips and head yaw/pitch are ignored, so single
    normals can be off by tens of degrees; an SH fit over thousands of pixels averages
    that out well enough for a dominant light direction and for smooth re-shading, which
    is all this is for. Pixels outside the ellipse or ``mask`` get zero normals.
    """
    h, w = shape_hw
    cx, cy, a, b = _face_ellipse(shape_hw, landmarks68, mask)
    if a <= 0 or b <= 0:
        raise ValueError("degenerate face box")
    c = depth_ratio * a
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    x = xx - cx
    y = -(yy - cy)
    rho2 = (x / a) ** 2 + (y / b) ** 2
    inside = rho2 < 1.0
    z = c * np.sqrt(np.clip(1.0 - rho2, 0.0, None))
    g = np.stack([x / a**2, y / b**2, z / c**2], axis=-1)
    norm = np.linalg.norm(g, axis=-1, keepdims=True)
    n = np.where(inside[..., None] & (norm > 0), g / np.maximum(norm, 1e-12), 0.0)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != (h, w):
            raise ValueError(f"mask shape {m.shape} does not match {shape_hw}")
        n = n * m.astype(bool)[..., None]
    return n.astype(np.float32)


def transfer_shading(
    src_img: np.ndarray,
    src_coeffs: np.ndarray,
    dst_coeffs: np.ndarray,
    normals: np.ndarray,
    mask: np.ndarray | None = None,
    preserve_brightness: bool = True,
    max_gain: float = 4.0,
) -> np.ndarray:
    """Re-shade ``src_img`` from SH lighting ``src_coeffs`` to ``dst_coeffs``.

    Each pixel's linear RGB is multiplied by ``E_dst(n) / E_src(n)``, the ratio of the
    two SH irradiances at its normal: albedo cancels, so texture is kept while the
    shading changes. With ``preserve_brightness`` the target lighting is first scaled to
    the source's DC term, so only the *shape* of the shading moves (the donor's overall
    exposure and skin tone are left to colour matching). The ratio is clipped to
    ``[0, max_gain]`` and the source irradiance floored at 5 % of its maximum so
    near-black attached shadows do not blow up. ``mask`` may be boolean, uint8 0/255
    (as ``refacex.faces.masks`` makes, anti-aliased edges act as weights) or a float
    weight in [0, 1] (feathered edge); pixels without normals are left unchanged.
    Returns the same dtype as ``src_img`` (uint8 is treated as sRGB).
    """
    src_c = np.asarray(src_coeffs, dtype=np.float64)
    dst_c = np.asarray(dst_coeffs, dtype=np.float64)
    if preserve_brightness:
        if dst_c[0] == 0:
            raise ValueError("target lighting has zero DC term")
        dst_c = dst_c * (src_c[0] / dst_c[0])
    valid = _valid(normals, None)
    e_src = sh_irradiance(src_c, normals)
    e_dst = sh_irradiance(dst_c, normals)
    peak = float(e_src[valid].max()) if valid.any() else 1.0
    floor = max(0.05 * peak, 1e-12)
    ratio = np.clip(e_dst / np.maximum(e_src, floor), 0.0, max_gain)
    weight = valid.astype(np.float64)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != normals.shape[:2]:
            raise ValueError(f"mask shape {m.shape} does not match normals {normals.shape[:2]}")
        if m.dtype == bool:
            w = m.astype(np.float64)
        elif np.issubdtype(m.dtype, np.integer):  # 0/1 or 0/255 (refacex.faces.masks)
            w = m.astype(np.float64) / (255.0 if m.max() > 1 else 1.0)
        else:
            w = np.clip(m.astype(np.float64), 0.0, 1.0)
        weight = weight * w
    gain = 1.0 + weight * (ratio - 1.0)

    a = np.asarray(src_img)
    is_int = np.issubdtype(a.dtype, np.integer)
    top = float(np.iinfo(a.dtype).max) if is_int else 1.0
    lin = srgb_to_linear(a.astype(np.float64) / top) if is_int else a.astype(np.float64)
    out = lin * (gain[..., None] if lin.ndim == 3 else gain)
    if is_int:
        enc = np.clip(linear_to_srgb(np.clip(out, 0.0, 1.0)) * top + 0.5, 0, top)
        return enc.astype(a.dtype)
    return out.astype(a.dtype)


#: Short alias used by the face-swap anonymiser.
relight = transfer_shading
