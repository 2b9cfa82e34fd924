"""The audit: metric sanity, privacy bookkeeping, undetectable faces, CLI, cache, report.

Uses the real sample photos (t1: a 6-person group, astronaut: one face); each audit run
here covers 1–2 images so the module stays well under a minute and a half.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from refacex.audit.privacy import MODES, recognizer_names
from refacex.audit.run import AuditConfig, Auditor, compare_images, run_audit, stats
from refacex.faces import get_recognizer

CHROMIUM = Path("/usr/bin/chromium")


def _folder(tmp: Path, paths: dict[str, Path], names: tuple[str, ...]) -> Path:
    """A folder of symlinks to some sample photos (never copies)."""
    d = tmp / "orig"
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / paths[n].name).symlink_to(paths[n])
    return d


# ------------------------------------------------------------------- metric sanity
def test_identical_is_perfect_and_blur_in_between(astronaut, analyzer):
    face = analyzer.analyze(astronaut, pose=False)[0]
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 2.0)
    sface, dlib_r = get_recognizer("sface"), get_recognizer("dlib")
    e0 = {r.name: r.embed(astronaut, face) for r in (sface, dlib_r)}
    e1 = {r.name: r.embed(blurred, face) for r in (sface, dlib_r)}
    assert sface.score(e0["sface"], e0["sface"]) == pytest.approx(1.0, abs=1e-5)
    assert dlib_r.score(e0["dlib"], e0["dlib"]) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < sface.score(e0["sface"], e1["sface"]) < 1.0
    assert 0.0 < dlib_r.score(e0["dlib"], e1["dlib"]) < dlib_r.threshold * 3

    same = compare_images(astronaut, astronaut.copy())
    assert same["psnr"] == float("inf") and same["ssim"] == 1.0 and same["lpips"] == 0.0
    crop = astronaut[:128, :128]
    diff = compare_images(crop, cv2.GaussianBlur(crop, (0, 0), 2.0))
    assert 10.0 < diff["psnr"] < 100.0
    assert 0.0 < diff["ssim"] < 1.0
    assert 0.0 < diff["lpips"] < 1.0
    # aggregates: inf is capped (finite means), None skipped, timing-scale values untouched
    st = stats([float("inf"), 30.0, None, 250.0])
    assert st["n"] == 3 and st["max"] == 250.0 and st["min"] == 30.0


# ------------------------------------------------------------------- un-anonymised
def test_originals_against_themselves_verify_at_rate_one(tmp_path, sample_paths):
    orig = _folder(tmp_path, sample_paths, ("astronaut",))
    cfg = AuditConfig(original=orig, anonymized=orig, out=tmp_path / "out", progress=False,
                      thumbnails=0)
    res = run_audit(cfg)
    assert res["counts"]["ok"] == 1
    assert res["utility"]["detection_retained"]["rate"] == 1.0
    assert res["utility"]["nme_pct"]["mean"] == pytest.approx(0.0, abs=1e-6)
    for name in recognizer_names():
        for mode in MODES:
            m = res["privacy"]["recognizers"][name][mode]
            assert m["verified_vs_original"]["rate"] == 1.0, (name, mode)
    assert res["privacy"]["recognizers"]["sface"]["known_location"]["score_vs_original"][
        "mean"] == pytest.approx(1.0, abs=1e-4)
    assert res["utility"]["bg_psnr"]["median"] == 100.0  # untouched (inf, capped)
    assert res["utility"]["light_angle_deg"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert res["utility"]["skin_delta_e"]["mean"] == pytest.approx(0.0, abs=1e-9)


def test_lighting_angle_is_stable_under_blur(astronaut, analyzer):
    from refacex.audit.utility import lighting_angles, skin_region

    face = analyzer.analyze(astronaut, pose=False)[0]
    skin = skin_region(astronaut.shape[:2], face.landmarks)
    same = lighting_angles(astronaut, astronaut, face.landmarks, skin)
    assert same["light_angle_deg"] == pytest.approx(0.0, abs=1e-6)
    soft = lighting_angles(astronaut, cv2.GaussianBlur(astronaut, (0, 0), 3.0), face.landmarks,
                           skin)
    assert soft["light_angle_deg"] < 15.0  # shading survives a blur
    flipped = lighting_angles(astronaut, astronaut[:, ::-1].copy(), face.landmarks, skin)
    assert flipped["light_angle_deg"] > soft["light_angle_deg"]


# ------------------------------------------------------------------- undetectable
def test_solid_mask_is_undetected_but_still_scored(tmp_path, sample_paths):
    orig = _folder(tmp_path, sample_paths, ("astronaut",))
    cfg = AuditConfig(original=orig, out=tmp_path / "out", run="mask", progress=False,
                      thumbnails=0)
    aud = Auditor(cfg)
    rec = aud.image(sample_paths["astronaut"].name)
    assert "error" not in rec
    face = rec["faces"][0]
    assert face["detected"] is False and face["det_score"] is None
    assert "redetect" not in face["anon_embeddings"]
    known = face["anon_embeddings"]["known_location"]
    assert set(known) == set(recognizer_names())
    assert face["scores"]["known_location"]["sface"] < get_recognizer("sface").threshold
    assert "nme_pct" in face["utility"]  # geometry computed at the original location
    assert face["recovery"]["vault"]["exact"] is True


# ------------------------------------------------------------------- CLI + cache + report
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, sample_paths):
    from typer.testing import CliRunner

    from refacex.cli import app

    tmp = tmp_path_factory.mktemp("audit")
    orig = _folder(tmp, sample_paths, ("astronaut", "tom_hanks"))
    out = tmp / "out"
    args = ["audit", "--original", str(orig), "--out", str(out), "--run", "blur"]
    first = CliRunner().invoke(app, args)
    second = CliRunner().invoke(app, [*args, "--json"])
    return out, first, second


def test_cli_writes_audit_json_with_documented_keys(cli_run):
    out, first, _ = cli_run
    assert first.exit_code == 0, first.output
    doc = json.loads((out / "audit.json").read_text())
    for key in ("schema", "created", "settings", "recognizers", "partial", "counts", "privacy",
                "utility", "recovery", "robustness", "speed_ms", "run", "images", "errors"):
        assert key in doc, key
    assert doc["schema"] == "refacex-audit/1"
    assert doc["counts"]["ok"] == 2
    assert doc["recognizers"]["sface"] == {**doc["recognizers"]["sface"], "metric": "cosine",
                                           "threshold": 0.363}
    assert doc["recognizers"]["dlib"]["metric"] == "euclidean"
    assert doc["recovery"]["vault"]["exact_crop"]["rate"] == 1.0  # faces restored exactly
    assert doc["recovery"]["vault"]["crop128"]["psnr"]["min"] == 100.0  # inf, capped
    assert doc["speed_ms"]["anonymize"]["n"] == 2
    assert doc["run"]["peak_rss_mb"] > 0
    assert (out / "keys" / "refacex.key").is_file()
    # embeddings (biometric data) stay out of the report
    assert "orig_embeddings" not in json.dumps(doc["images"])


def test_cli_report_is_self_contained(cli_run):
    out = cli_run[0]
    html = (out / "report.html").read_text()
    assert "data:image/jpeg;base64," in html
    assert "data:image/png;base64," in html  # a matplotlib plot
    assert not re.search(r"(src|href)=['\"]https?://", html)
    first = re.search(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", html).group(1)
    img = cv2.imdecode(np.frombuffer(base64.b64decode(first), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and max(img.shape[:2]) == 128


def test_second_run_hits_the_cache(cli_run):
    _, _, second = cli_run
    assert second.exit_code == 0, second.output
    doc = json.loads(second.output)
    assert doc["run"]["cache_hits"] == 2 and doc["run"]["computed"] == 0


def test_report_renders_in_headless_chromium(cli_run, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed: cannot render the report headless here")
    out = cli_run[0]
    shot = tmp_path / "shot.png"
    proc = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                           f"--screenshot={shot}", "--window-size=1200,1600",
                           (out / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=60)
    assert shot.is_file(), proc.stderr
    img = cv2.imread(str(shot))
    assert img is not None and float(img.std()) > 5.0  # not blank


def test_robustness_needs_a_key(tmp_path, sample_paths):
    from refacex.errors import RefacexError

    orig = _folder(tmp_path, sample_paths, ("astronaut",))
    with pytest.raises(RefacexError, match="needs the key"):
        run_audit(AuditConfig(original=orig, anonymized=orig, out=tmp_path / "o",
                              robustness=True, progress=False))


# ------------------------------------------------------------------- robustness
def test_distortions_are_decodable_and_geometry_is_tracked(astronaut):
    from refacex.audit.distortions import DISTORTIONS, apply
    from refacex.io.images import decode_image, encode_image

    data = encode_image(astronaut, ".png")
    names = {d.name for d in DISTORTIONS}
    assert {"jpeg95", "jpeg30", "webp75", "resize0.5", "resize2.0", "crop10", "brightness+20",
            "contrast-20", "noise5", "strip"} <= names
    h, w = astronaut.shape[:2]
    for d in DISTORTIONS:
        blob, m = d.fn(astronaut, data)
        img = decode_image(blob)
        corner = m[:, :2] @ np.array([w, h], float) + m[:, 2]
        if d.family == "resize":
            assert corner == pytest.approx([img.shape[1], img.shape[0]], abs=1)
        if d.family == "crop":
            assert img.shape[1] < w and corner[0] > img.shape[1]
    with pytest.raises(KeyError):
        apply("nope", astronaut, data)


def test_robustness_survival_per_distortion(tmp_path, sample_paths):
    orig = _folder(tmp_path, sample_paths, ("astronaut",))
    res = run_audit(AuditConfig(original=orig, out=tmp_path / "out", run="blur",
                                robustness=True, robust_limit=1, thumbnails=1,
                                distortions=["jpeg95", "strip"], progress=False))
    rob = res["robustness"]
    # the astronaut (512 px) carries a robust code; a q95 re-encode and a metadata strip
    # must leave it readable and decryptable with the run's own key
    for name in ("jpeg95", "strip"):
        assert rob[name]["n"] == 1
        assert rob[name]["survival"] == 1.0 and rob[name]["decrypt"] == 1.0, (name, rob)
    assert rob["strip"]["psnr"]["mean"] > 10
    assert "robustness curves" in (tmp_path / "out" / "report.html").read_text()


def test_default_gallery_is_another_photo_of_the_same_person(tmp_path, sample_paths):
    from refacex.audit.run import default_gallery, identity_of, list_originals

    root = tmp_path / "people"
    for rel, src in (("Ann/Ann_0001.png", "astronaut"), ("Ann/Ann_0002.png", "tom_hanks"),
                     ("Bob/Bob_0001.png", "tom_hanks")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(sample_paths[src])
    cfg = AuditConfig(original=root, out=tmp_path / "o", limit=None)
    rels = list_originals(cfg)
    assert rels == ["Ann/Ann_0001.png", "Ann/Ann_0002.png", "Bob/Bob_0001.png"]
    assert identity_of(rels[0]) == "Ann" and identity_of("x.png") is None
    gal = default_gallery(cfg, rels)
    assert set(gal) == {"Ann"} and gal["Ann"].name == "Ann_0002.png"  # Bob has one photo


def test_audit_reports_unreadable_files_and_exits_nonzero(tmp_path):
    for sub in ("orig", "anon"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.jpg").write_text("not an image")
    r = subprocess.run([sys.executable, "-m", "refacex", "audit", "--original",
                        str(tmp_path / "orig"), "--anonymized", str(tmp_path / "anon"),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "refacex: error:" in r.stderr and "not an image" in r.stderr
    assert json.loads((tmp_path / "out" / "audit.json").read_text())["counts"]["errors"] == 1
