"""Data safety of a run's outputs: no input is ever overwritten, no output is written
twice, names can be hidden, runs resume, partial files are cleaned, recovered files are
private. Real subprocesses, so exit codes and stderr are what a user sees."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from refacex.io.images import clean_stale_temp, decode_image
from refacex.io.outputs import hashed_names, plan_outputs
from refacex.stego import vault

FAST = ["--method", "blur", "--tiers", "vault"]


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refacex", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture
def pw(tmp_path: Path) -> Path:
    p = tmp_path / "pw"
    p.write_text("correct horse\n")
    p.chmod(0o600)
    return p


@pytest.fixture
def face_png(sample_paths) -> bytes:
    return sample_paths["astronaut"].read_bytes()


@pytest.fixture
def face_jpg(tmp_path: Path, sample_paths) -> bytes:
    p = tmp_path / "astronaut.jpg"
    Image.open(sample_paths["astronaut"]).convert("RGB").save(p, quality=90)
    return p.read_bytes()


def refused(r: subprocess.CompletedProcess, *needles: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("refacex: error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_output_that_would_overwrite_an_input_is_refused(tmp_path, pw, face_jpg, face_png):
    d = tmp_path / "d"
    d.mkdir()
    (d / "photo.jpg").write_bytes(face_jpg)
    (d / "photo.png").write_bytes(face_png)
    before = snapshot(d)
    r = run("anonymize", d, "-o", d, "--format", "png", "--passphrase-file", pw, *FAST)
    refused(r, "would overwrite the input", str(d / "photo.png"))
    assert snapshot(d) == before  # nothing written, inputs byte-identical


def test_same_name_from_two_folders_is_refused(tmp_path, pw, face_jpg):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.jpg").write_bytes(face_jpg)
    out = tmp_path / "out"
    r = run("anonymize", tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", "-o", out,
            "--passphrase-file", pw, *FAST)
    refused(r, str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg"))
    assert not out.exists()


def test_names_differing_only_in_case_are_refused(tmp_path, pw, face_jpg):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.jpg").write_bytes(face_jpg)
    if (d / "x.JPG").exists():
        pytest.skip("case-insensitive file system: x.JPG is x.jpg")
    (d / "x.JPG").write_bytes(face_jpg)
    out = tmp_path / "out"
    r = run("anonymize", d, "-o", out, "--passphrase-file", pw, *FAST)
    refused(r, "x.JPG", "x.jpg", "both")
    assert not out.exists()


def test_recover_of_jpg_and_png_with_one_name_is_refused(tmp_path, pw, face_jpg, face_png):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.jpg").write_bytes(face_jpg)
    (d / "x.png").write_bytes(face_png)
    out = tmp_path / "rec"
    r = run("recover", d / "x.jpg", d / "x.png", "-o", out, "--passphrase-file", pw)
    refused(r, str(out / "x.png"), str(d / "x.jpg"), str(d / "x.png"))
    assert not out.exists()


def test_sidecar_that_would_overwrite_an_input_is_refused(tmp_path, pw, face_jpg):
    """BMP has no vault slot: the payload goes to x.bmp.refacex, here an input (a shell
    glob such as ``d/*`` passes every file)."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.jpg").write_bytes(face_jpg)
    (d / "x.bmp.refacex").write_bytes(b"someone's payload")
    before = snapshot(d)
    r = run("anonymize", d / "x.jpg", d / "x.bmp.refacex", "-o", d, "--format", "bmp",
            "--passphrase-file", pw, *FAST)
    refused(r, "would overwrite the input", str(d / "x.bmp.refacex"))
    assert snapshot(d) == before


def test_plan_protects_an_inputs_sidecar_and_drops_repeated_inputs(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.jpg").write_bytes(b"x")
    (d / "x.bmp.refacex").write_bytes(b"payload of an input")
    (tmp_path / "e").mkdir()
    twice = [(d / "x.jpg", Path("x.jpg")), (tmp_path / "e" / ".." / "d" / "x.jpg",
                                             Path("x.jpg"))]
    assert plan_outputs(twice, tmp_path / "out", lambda rel: ".png") == [
        (d / "x.jpg", tmp_path / "out" / "x.png")]
    from refacex.errors import OutputError

    with pytest.raises(OutputError, match="would overwrite the input"):
        plan_outputs([(d / "x.bmp", Path("x.bmp"))], tmp_path / "out", lambda rel: ".bmp",
                     extras=lambda dest: [d / "x.bmp.refacex"],
                     protected=lambda src: [vault.sidecar_path(d / "x.bmp")])


def test_rename_hides_names_and_the_map_is_private(tmp_path, pw, face_png):
    src = tmp_path / "Jane_Doe"
    src.mkdir()
    (src / "Jane_Doe_birthday_2026-11-30.png").write_bytes(face_png)
    out, mapping = tmp_path / "out", tmp_path / "map.json"
    r = run("anonymize", src, "-o", out, "--rename", "--rename-map", mapping,
            "--passphrase-file", pw, *FAST)
    assert r.returncode == 0, r.stderr
    from refacex.engines.manifest import FILENAME

    names = [str(p.relative_to(out)) for p in out.rglob("*") if p.name != FILENAME]
    assert len(names) == 1 and re.fullmatch(r"[0-9a-f]{16}\.png", names[0]), names
    assert "Jane" not in names[0] and "birthday" not in names[0]
    # The run's manifest (resume) beside the outputs must not name the inputs either.
    manifest = (out / FILENAME).read_bytes()
    assert b"Jane" not in manifest and b"birthday" not in manifest
    assert mapping.stat().st_mode & 0o777 == 0o600
    assert json.loads(mapping.read_text()) == {
        str(src / "Jane_Doe_birthday_2026-11-30.png"): str(out / names[0])}


def test_rename_names_depend_on_the_key(tmp_path):
    files = [(tmp_path / "a.jpg", Path("a.jpg")), (tmp_path / "b.JPG", Path("b.JPG"))]
    one, again, other = (hashed_names(files, k) for k in (b"k1", b"k1", b"k2"))
    assert one == again and [d for _, d in one] != [d for _, d in other]
    assert all(re.fullmatch(r"[0-9a-f]{16}\.jpg", str(d)) for _, d in one + other)


def test_resume_skips_verified_outputs_and_redoes_a_broken_one(tmp_path, pw, face_png,
                                                                face_jpg):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "good.png").write_bytes(face_png)
    (src / "broken.jpg").write_bytes(face_jpg)
    r = run("anonymize", src, "-o", out, "--passphrase-file", pw, *FAST)
    assert r.returncode == 0, r.stderr
    good = out / "good.png"
    good_bytes, good_mtime = good.read_bytes(), good.stat().st_mtime_ns
    data = (out / "broken.jpg").read_bytes()
    (out / "broken.jpg").write_bytes(data[: len(data) // 3])  # as if cut off mid-copy
    r = run("anonymize", src, "-o", out, "--passphrase-file", pw, "--resume", *FAST)
    assert r.returncode == 0, r.stderr
    assert "1 image(s)" in r.stdout and "1 skipped" in r.stdout
    assert good.read_bytes() == good_bytes and good.stat().st_mtime_ns == good_mtime
    redone = (out / "broken.jpg").read_bytes()
    assert decode_image(redone).shape[:2] == (512, 512) and vault.extract(redone)


def test_stale_temp_files_are_removed_and_fresh_ones_kept(tmp_path, pw, face_png):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale, fresh = out / "sub" / ".a.jpg.abc.refacex-tmp", out / ".b.jpg.def.refacex-tmp"
    other = out / ".notes.refacex-tmp.txt"  # not our naming: left alone
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    (tmp_path / "x.png").write_bytes(face_png)
    r = run("anonymize", tmp_path / "x.png", "-o", out, "--passphrase-file", pw, *FAST)
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and fresh.exists() and other.exists()
    assert r.stderr.strip() == (f"refacex: warning: {out}: removed 1 partial file(s) left "
                                "by an interrupted run")
    assert clean_stale_temp(out) == 1 and not fresh.exists()


def test_recovered_file_is_private_under_umask_022(tmp_path, pw, face_png):
    (tmp_path / "x.png").write_bytes(face_png)
    old = os.umask(0o022)
    try:
        r = run("anonymize", tmp_path / "x.png", "-o", tmp_path / "anon", "--passphrase-file",
                pw, *FAST)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "anon" / "x.png").stat().st_mode & 0o777 == 0o644
        r = run("recover", tmp_path / "anon" / "x.png", "-o", tmp_path / "rec",
                "--passphrase-file", pw)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rec" / "x.png").stat().st_mode & 0o777 == 0o600
    assert "summary: 1 recovered, 0 failed" in r.stdout
