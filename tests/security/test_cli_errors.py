"""Errors and warnings are one line each: usage errors without typer's box, a secret
file open to other users, and what C decoders print about a damaged file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from refacex.io.images import decode_image, take_decoder_warnings


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refacex", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,line", [
    (["anonymize", "x.jpg", "-o", "out"],
     "refacex: error: anonymize: give --recipient PUB (one or more) or --passphrase-file"),
    (["anonymize", "x.jpg", "-o", "out", "--bogus"],
     "refacex: error: anonymize: No such option: --bogus"),
    (["anonymize", "x.jpg"], "refacex: error: anonymize: Missing option '--out' / '-o'."),
    (["anonymize", "x.jpg", "-o", "out", "--strength", "3"],
     "refacex: error: anonymize: Invalid value for '--strength'"),
    (["models", "fetch", "--bogus"], "refacex: error: models fetch: No such option: --bogus"),
    (["frobnicate"], "refacex: error: No such command 'frobnicate'."),
])
def test_usage_error_is_one_line(tmp_path, args, line):
    r = subprocess.run([sys.executable, "-m", "refacex", *args], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), r.stderr
    assert r.stdout == "" and not (tmp_path / "out").exists()


def test_help_is_still_full_help():
    r = run("anonymize", "--help")
    assert r.returncode == 0 and r.stderr == ""
    assert "Usage" in r.stdout and "--rename" in r.stdout and "--resume" in r.stdout
    r = run()  # no arguments: the help, as before
    assert r.returncode == 2 and "Usage" in r.stdout + r.stderr


def test_private_key_open_to_others_is_warned_about(tmp_path):
    keys = tmp_path / "keys"
    assert run("keygen", "--out", keys, "--no-passphrase").returncode == 0
    key = keys / "refacex.key"
    img = tmp_path / "plain.png"
    Image.new("RGB", (32, 32), (90, 90, 90)).save(img)  # no payload: recover fails later
    warning = (f"refacex: warning: {key} is readable by others (mode 0644); "
               f"run chmod 600 {key}")
    key.chmod(0o644)
    r = run("recover", img, "-o", tmp_path / "rec", "--key", key)
    assert r.stderr.splitlines().count(warning) == 1, r.stderr
    key.chmod(0o600)
    r = run("recover", img, "-o", tmp_path / "rec", "--key", key)
    assert "warning" not in r.stderr, r.stderr


def _jpeg_with_junk_before_eoi(src: bytes) -> bytes:
    """libjpeg says "Corrupt JPEG data: N extraneous bytes before marker 0xd9" (from C, on
    fd 2) and decodes the image anyway. Bytes *after* EOI are never read, so say nothing."""
    assert src.endswith(b"\xff\xd9")
    return src[:-2] + b"\x00" * 100 + src[-2:]


def test_decoder_output_is_captured_not_leaked(capfd, sample_paths):
    data = _jpeg_with_junk_before_eoi(sample_paths["t1"].read_bytes())
    take_decoder_warnings()
    img = decode_image(data, name="junk.jpg")
    assert img.shape[2] == 3
    said = take_decoder_warnings()
    assert len(said) == 1 and "extraneous bytes before marker 0xd9" in said[0]
    assert take_decoder_warnings() == []
    os.write(2, b"after\n")  # fd 2 is back where it was
    assert capfd.readouterr().err == "after\n"


def test_decoder_warning_is_one_summary_line(tmp_path, sample_paths):
    bad = tmp_path / "junk.jpg"
    bad.write_bytes(_jpeg_with_junk_before_eoi(sample_paths["t1"].read_bytes()))
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    pw.chmod(0o600)
    r = run("anonymize", bad, "-o", tmp_path / "out", "--passphrase-file", pw,
            "--method", "blur", "--tiers", "vault")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"refacex: warning: {bad}: decoder said: Corrupt JPEG data: ")
    assert "extraneous bytes before marker 0xd9" in lines[0]
