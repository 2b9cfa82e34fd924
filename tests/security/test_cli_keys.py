"""Site keys through the command line: who may make payloads that `recover` restores.

The key holder runs `keygen` (recovery pair + its own site key); a second site runs
`keygen --site-only`. Payloads of a site the key holder does not trust are refused in one
line until its `site.pub` is trusted; one refused file never stops the batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from refacex.io.images import decode_image


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refacex", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def world(tmp_path_factory, sample_paths):
    d = tmp_path_factory.mktemp("world")
    assert run("keygen", "--out", d / "keys", "--no-passphrase").returncode == 0
    r = run("keygen", "--site-only", "--out", d / "camera2")
    assert r.returncode == 0 and "site.pub" in r.stdout, r.stderr
    assert sorted(p.name for p in (d / "keys").iterdir()) == [
        "refacex.key", "refacex.pub", "site.key", "site.pub"]
    assert sorted(p.name for p in (d / "camera2").iterdir()) == ["site.key", "site.pub"]
    src = d / "in"
    src.mkdir()
    (src / "astronaut.png").write_bytes(sample_paths["astronaut"].read_bytes())
    common = ["--recipient", d / "keys" / "refacex.pub", "--method", "blur",
              "--tiers", "vault"]
    assert run("anonymize", src, "-o", d / "own", *common).returncode == 0
    r = run("anonymize", src, "-o", d / "cam2", *common, "--site-key",
            d / "camera2" / "site.key")
    assert r.returncode == 0, r.stderr
    return d


def test_own_site_is_trusted_by_default(world):
    r = run("recover", world / "own" / "astronaut.png", "-o", world / "rec-own",
            "--key", world / "keys" / "refacex.key")
    assert r.returncode == 0 and "from vault" in r.stdout, r.stderr


def test_untrusted_site_is_refused_until_trusted(world):
    key = world / "keys" / "refacex.key"
    r = run("recover", world / "cam2" / "astronaut.png", "-o", world / "rec-1", "--key", key)
    assert r.returncode == 2
    (line,) = r.stderr.splitlines()
    assert "which you do not trust" in line and "--trust SITE.pub" in line
    assert not list((world / "rec-1").glob("*.png"))
    r = run("recover", world / "cam2" / "astronaut.png", "-o", world / "rec-2", "--key", key,
            "--trust", world / "camera2" / "site.pub")
    assert r.returncode == 0 and "from vault" in r.stdout, r.stderr


def test_refused_file_does_not_stop_the_batch(world, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    for name, d in (("a_cam2.png", "cam2"), ("b_own.png", "own")):
        (batch / name).write_bytes((world / d / "astronaut.png").read_bytes())
    r = run("recover", batch, "-o", tmp_path / "rec", "--key",
            world / "keys" / "refacex.key", "--json")
    assert r.returncode == 2
    report = json.loads(r.stdout)
    bad, good = report[str(batch / "a_cam2.png")], report[str(batch / "b_own.png")]
    assert bad["kind"] == "UntrustedPayloadError" and good["tier"] == "vault"
    assert decode_image(Path(good["output"]).read_bytes()).shape == (512, 512, 3)
    assert not (tmp_path / "rec" / "a_cam2.png").exists()


def test_public_key_mode_without_a_site_key_is_one_line(world, tmp_path):
    pub = tmp_path / "refacex.pub"
    pub.write_bytes((world / "keys" / "refacex.pub").read_bytes())  # no site.key beside it
    r = run("anonymize", world / "in", "-o", tmp_path / "out", "--recipient", pub)
    assert r.returncode == 2
    (line,) = r.stderr.splitlines()
    assert "needs the site's signing key" in line and not (tmp_path / "out").exists()


def test_inspect_shows_no_face_count(world):
    r = run("inspect", world / "own" / "astronaut.png", "--json")
    info = json.loads(r.stdout)[str(world / "own" / "astronaut.png")]["tiers"]["vault"]
    assert r.returncode == 0 and "faces" not in info and info["version"] == "1.2"
