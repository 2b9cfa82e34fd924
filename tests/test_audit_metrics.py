"""Numerical audit metrics: PSNR, SSIM, LPIPS, CIEDE2000, Lab, SH lighting.

Reference values come from published sources, not from this code:
* LPIPS / PSNR / SSIM of three TID2013 pairs: the official implementations' results that
  pyiqa 0.1.16 ships in ``ResultsCalibra/results_official.csv`` (LPIPS from
  richzhang/PerceptualSimilarity v0.1 alex; PSNR from skimage on RGB; SSIM from Wang's
  ``ssim_index.m`` on ``rgb2gray`` without downsampling). The pairs are registry samples.
* CIEDE2000: Sharma, Wu & Dalal (2005), Table 1 test data.
* sRGB → Lab of pure red: the standard value (D65) 53.2408, 80.0925, 67.2032.
"""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from refacex.audit import metrics as mt
from refacex.audit.lpips import LPIPS, load_weights
from refacex.errors import ModelMissingError
from refacex.faces import photometry as lt
from refacex.io.images import read_image
from refacex.models import resolve


def _asset(name: str):
    try:
        return resolve(name)
    except ModelMissingError as exc:
        pytest.skip(f"{name} not installed ({exc}); run `refacex models fetch`")


@pytest.fixture(scope="module")
def lp() -> LPIPS:
    return LPIPS(_asset("lpips_alex"))


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """256x256 crop around the astronaut's face (real photo, BGR uint8)."""
    img = read_image(_asset("astronaut"))
    return np.ascontiguousarray(img[0:256, 96:352])


# --- identical / degraded -----------------------------------------------------------------


def test_identical_images_score_perfect(face: np.ndarray, lp: LPIPS) -> None:
    copy = face.copy()
    assert mt.psnr(face, copy) == float("inf")
    assert mt.ssim(face, copy) == pytest.approx(1.0, abs=1e-12)
    assert mt.ssim(face, copy, channels="rgb") == pytest.approx(1.0, abs=1e-12)
    assert lp.distance(face, copy) <= 1e-6
    assert mt.psnr(face.astype(np.float64) / 255, copy.astype(np.float64) / 255) == float("inf")


def test_blur_degrades_all_three_monotonically(face: np.ndarray, lp: LPIPS) -> None:
    scores = []
    for sigma in (1.0, 2.0, 4.0):
        blurred = cv2.GaussianBlur(face, (0, 0), sigma)
        scores.append((mt.psnr(face, blurred), mt.ssim(face, blurred), lp.distance(face, blurred)))
    for p, s, d in scores:
        assert np.isfinite(p) and p > 20.0
        assert 0.0 < s < 1.0
        assert 0.0 < d < 1.0
    (p1, s1, d1), (p2, s2, d2), (p3, s3, d3) = scores
    assert p1 > p2 > p3
    assert s1 > s2 > s3
    assert d1 < d2 < d3


def test_lpips_symmetric_and_reusable_features(face: np.ndarray, lp: LPIPS) -> None:
    noisy = np.clip(face + np.random.default_rng(1).normal(0, 8, face.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    d_ab, d_ba = lp.distance(face, noisy), lp.distance(noisy, face)
    assert d_ab == pytest.approx(d_ba, rel=1e-6)
    fa, fb = lp.features(face), lp.features(noisy)
    assert lp.distance_from_features(fa, fb) == pytest.approx(d_ab, rel=1e-9)
    with pytest.raises(ValueError):
        lp.distance(face[:20, :20], noisy[:20, :20])  # below the trunk's minimum size


# --- published reference values -------------------------------------------------------------

#: TID2013 pair -> (official LPIPS-alex v0.1, PSNR RGB, SSIM gray) from pyiqa 0.1.16
_OFFICIAL = {
    "i03": (0.7237, 21.11, 0.6993),
    "i04": (0.2572, 20.99, 0.9978),
    "i06": (0.05079, 27.01, 0.9989),
}


@pytest.mark.parametrize("pair", sorted(_OFFICIAL))
def test_official_reference_values(pair: str, lp: LPIPS) -> None:
    ref = read_image(_asset(f"lpips_calib_{pair}_ref"))
    dist = read_image(_asset(f"lpips_calib_{pair}_dist"))
    want_lpips, want_psnr, want_ssim = _OFFICIAL[pair]
    assert lp.distance(ref, dist) == pytest.approx(want_lpips, abs=1e-3)
    assert mt.psnr(ref, dist) == pytest.approx(want_psnr, abs=0.006)
    assert mt.ssim(ref, dist) == pytest.approx(want_ssim, abs=6e-4)


def test_weight_loader_refuses_code(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"AlexNet_0": Evil()}, protocol=3))
    with pytest.raises(pickle.UnpicklingError):
        load_weights(bad)
    wrong = tmp_path / "wrong.ckpt"
    wrong.write_bytes(pickle.dumps({"AlexNet_0": {"x": np.zeros(3, np.float32)}}, protocol=3))
    with pytest.raises(ValueError):
        load_weights(wrong)


# --- masks ---------------------------------------------------------------------------------


def test_masked_psnr_ssim_measure_background(face: np.ndarray) -> None:
    mask = np.zeros(face.shape[:2], bool)
    mask[64:192, 64:192] = True
    edited = face.copy()
    edited[mask] = 255 - edited[mask]  # change only the "face" region
    assert mt.psnr_outside(face, edited, mask) == float("inf")
    assert np.isfinite(mt.psnr(face, edited, mask))
    diff = face.astype(float)[mask] - edited.astype(float)[mask]
    assert mt.psnr(face, edited, mask) == pytest.approx(
        10 * np.log10(255**2 / np.mean(diff**2)), rel=1e-12
    )
    # Far from the edit the SSIM map is exactly 1; only windows reaching in drop below.
    assert mt.ssim_outside(face, edited, mask) > mt.ssim(face, edited) + 0.3
    far = np.ones_like(mask)
    far[48:208, 48:208] = False
    assert mt.ssim(face, edited, far) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        mt.psnr(face, edited, np.zeros_like(mask))


# --- colour --------------------------------------------------------------------------------

# Sharma, Wu & Dalal 2005, Table 1: (L1, a1, b1, L2, a2, b2, ΔE00)
_SHARMA = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def test_ciede2000_sharma_pairs() -> None:
    data = np.array(_SHARMA)
    for row in data:
        assert mt.ciede2000(row[:3], row[3:6]) == pytest.approx(row[6], abs=5e-5)
        assert mt.ciede2000(row[3:6], row[:3]) == pytest.approx(row[6], abs=5e-5)
    vec = mt.ciede2000(data[:, :3], data[:, 3:6])
    np.testing.assert_allclose(vec, data[:, 6], atol=5e-5)
    assert mt.ciede2000((50, 10, 10), (50, 10, 10)) == 0.0


def test_lab_conversion_and_skin_mean() -> None:
    np.testing.assert_allclose(
        mt.bgr_to_lab(np.array([0, 0, 255], np.uint8)), [53.2408, 80.0925, 67.2032], atol=2e-3
    )
    np.testing.assert_allclose(
        mt.bgr_to_lab(np.array([255, 255, 255], np.uint8)), [100, 0, 0], atol=1e-9
    )
    skin = np.zeros((40, 40, 3), np.uint8)
    skin[:] = (120, 150, 200)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    skin[~mask] = (0, 255, 0)  # background must not leak in
    lab = mt.mean_skin_lab(skin, mask)
    np.testing.assert_allclose(lab, mt.bgr_to_lab(np.array([120, 150, 200], np.uint8)), atol=1e-9)
    assert lab[0] > 60 and lab[1] > 5 and lab[2] > 15  # light, reddish, yellowish
    # Half black / half white averages in linear light: L* of linear 0.5 is ~76, not 50.
    bw = np.zeros((2, 2, 3), np.uint8)
    bw[0] = 255
    assert mt.mean_skin_lab(bw, np.ones((2, 2), bool))[0] == pytest.approx(76.07, abs=0.05)


# --- lighting ------------------------------------------------------------------------------


def _render_sphere(light, size: int = 160, ambient: float = 0.25):
    n = lt.sphere_normals((size, size), ((size - 1) / 2, (size - 1) / 2), size * 0.44)
    mask = np.linalg.norm(n, axis=-1) > 0
    ldir = np.asarray(light, float) / np.linalg.norm(light)
    lin = 0.7 * (ambient + 0.75 * np.clip(n @ ldir, 0, None)) * mask
    srgb = (np.clip(mt.linear_to_srgb(lin), 0, 1) * 255 + 0.5).astype(np.uint8)
    return n, mask, lin, np.repeat(srgb[..., None], 3, axis=2), ldir


_LIGHTS = [(0, 0, 1), (0.5, 0.3, 0.8), (-0.6, 0.2, 0.77), (0.3, -0.7, 0.65), (-0.9, 0, 0.44),
           (0.8, 0.5, 0.33)]


def test_sh_recovers_light_direction_on_sphere() -> None:
    errors = []
    for light in _LIGHTS:
        n, mask, _, img, ldir = _render_sphere(light)
        fit = lt.fit_sh_lighting(img, n, mask)
        assert fit.coeffs.shape == (9,)
        assert np.linalg.norm(fit.direction) == pytest.approx(1.0)
        errors.append(lt.light_angle_deg(fit.direction, ldir))
    assert max(errors) < 10.0  # the acceptance criterion
    assert np.mean(errors) < 5.0
    assert lt.light_angle_deg((1, 0, 0), (0, 2, 0)) == pytest.approx(90.0)


def test_transfer_shading_matches_target_render() -> None:
    n, mask, lin_a, img_a, _ = _render_sphere((0.6, 0.3, 0.74))
    _, _, lin_b, img_b, _ = _render_sphere((-0.5, -0.2, 0.84))
    fa = lt.fit_sh_lighting(img_a, n, mask)
    fb = lt.fit_sh_lighting(img_b, n, mask)
    out = lt.transfer_shading(lin_a, fa.coeffs, fb.coeffs, n, mask, preserve_brightness=False)
    before = np.abs(lin_a - lin_b)[mask].mean()
    after = np.abs(out - lin_b)[mask].mean()
    assert after < 0.1 * before
    assert after / lin_b[mask].mean() < 0.08
    out8 = lt.relight(img_a, fa.coeffs, fb.coeffs, n, mask, preserve_brightness=False)
    assert out8.dtype == np.uint8
    assert np.abs(out8.astype(float) - img_b)[mask].mean() < 0.15 * np.abs(
        img_a.astype(float) - img_b
    )[mask].mean()
    assert np.array_equal(out8[~mask], img_a[~mask])  # outside the region: untouched
    mask255 = mask.astype(np.uint8) * 255  # the form refacex.faces.masks produces
    same = lt.relight(img_a, fa.coeffs, fb.coeffs, n, mask255, preserve_brightness=False)
    assert np.array_equal(same, out8)
    # preserve_brightness: only the shape of the target lighting matters, not its scale.
    shaped = lt.transfer_shading(lin_a, fa.coeffs, fb.coeffs, n, mask)
    np.testing.assert_allclose(
        lt.transfer_shading(lin_a, fa.coeffs, 3.0 * fb.coeffs, n, mask), shaped, atol=1e-12
    )
    # The re-shaded image's own fit points the way the target light does.
    refit = lt.fit_sh_lighting(out8, n, mask)
    assert lt.light_angle_deg(refit.direction, fb.direction) < 10.0


def test_face_normals_ellipsoid() -> None:
    mask = np.zeros((120, 100), bool)
    mask[10:110, 20:80] = True
    n = lt.face_normals(mask.shape, mask=mask)
    norms = np.linalg.norm(n, axis=-1)
    inside = norms > 0
    np.testing.assert_allclose(norms[inside], 1.0, atol=1e-5)
    assert not inside[~mask].any()
    assert n[60, 50, 2] > 0.99  # centre faces the camera
    assert n[60, 22, 0] < -0.5 and n[60, 77, 0] > 0.5  # cheeks turn left / right
    assert n[12, 50, 1] > 0.5 and n[108, 50, 1] < -0.5  # forehead up, chin down (y up)
    # 68 landmarks: jaw on a half-ellipse, brows above; the ellipse spans the jaw width.
    t = np.linspace(np.pi, 0, 17)
    jaw = np.stack([50 + 30 * np.cos(t), 60 + 40 * np.sin(t)], axis=1)
    rest = np.column_stack([np.linspace(30, 70, 51), np.full(51, 40.0)])
    n68 = lt.face_normals((120, 100), landmarks68=np.vstack([jaw, rest]))
    assert (np.linalg.norm(n68, axis=-1) > 0).sum() > 2000
    assert n68[60, 50, 2] > 0.9
    # A Lambertian ellipsoid lit from the upper left: the fit finds that direction.
    ldir = np.array([-0.5, 0.5, 0.707])
    lin = 0.6 * (0.2 + 0.8 * np.clip(n @ ldir, 0, None)) * inside
    fit = lt.fit_sh_lighting(lin, n, inside)
    assert lt.light_angle_deg(fit.direction, ldir) < 10.0
