"""CLI behaviour on good and bad input (real subprocesses: real exit codes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refacex.models import MODELS, resolve


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refacex", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("refacex ")


def test_detect_json_counts(sample_paths):
    r = run("detect", str(sample_paths["t1"]), str(sample_paths["astronaut"]), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out[str(sample_paths["t1"])]["faces"]) == 6
    face = out[str(sample_paths["astronaut"])]["faces"][0]
    assert face["landmarks"] == 68 and set(face["pose"]) == {"yaw", "pitch", "roll"}
    assert set(face["fingerprint"]) == {"sface", "dlib"}


@pytest.fixture
def bad_files(tmp_path: Path, sample_paths) -> dict[str, Path]:
    files = {}
    files["text"] = tmp_path / "notes.jpg"
    files["text"].write_text("this is not an image\n")
    files["empty"] = tmp_path / "empty.png"
    files["empty"].write_bytes(b"")
    data = sample_paths["t1"].read_bytes()
    files["truncated"] = tmp_path / "truncated.jpg"
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["huge"] = tmp_path / "huge.png"
    Image.new("L", (12000, 12000)).save(files["huge"])  # 144 MP > the 100 MP limit
    return files


@pytest.mark.parametrize("kind,needle", [("text", "not an image"), ("empty", "empty file"),
                                         ("truncated", "truncated"), ("huge", "too large")])
def test_detect_bad_input(bad_files, kind, needle):
    before = bad_files[kind].read_bytes()
    r = run("detect", str(bad_files[kind]))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert bad_files[kind].read_bytes() == before


def test_detect_no_face_is_empty_not_error(tmp_path):
    p = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(p)
    r = run("detect", str(p), "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)[str(p)]["faces"] == []


def test_missing_and_corrupt_models_give_one_line(tmp_path, sample_paths):
    home = tmp_path / "home"
    r = run("detect", str(sample_paths["astronaut"]), env={"REFACEX_HOME": str(home)})
    assert r.returncode == 2 and "refacex models fetch" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (home / "models").mkdir(parents=True)
    for name, asset in MODELS.items():
        if not asset.on_demand:  # on-demand weights are not installed by `make test`
            shutil.copy(resolve(name), home / "models" / asset.filename)
    yunet = home / "models" / MODELS["yunet"].filename
    blob = bytearray(yunet.read_bytes())
    blob[1000] ^= 0xFF
    yunet.write_bytes(bytes(blob))
    r = run("detect", str(sample_paths["astronaut"]), env={"REFACEX_HOME": str(home)})
    assert r.returncode == 2 and "corrupted" in r.stderr and "refacex models fetch" in r.stderr
    r = run("models", "list", env={"REFACEX_HOME": str(home)})
    assert r.returncode == 1 and "CORRUPT" in r.stdout


def test_models_list_ok():
    r = run("models", "list")
    assert r.returncode == 0
    assert "yunet" in r.stdout and "missing" not in r.stdout


def test_demo_writes_outputs(tmp_path):
    r = run("demo", "--out", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "demo" / "faces.json").read_text())
    assert len(report["t1.jpg"]) == 6 and len(report["astronaut.png"]) == 1
    assert (tmp_path / "demo" / "t1_faces.png").stat().st_size > 10_000
