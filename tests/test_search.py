"""Key-holder re-identification (``refacex search``): with the key the person's images are
found, from the vault and from the robust tier alone; without it nothing opens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from refacex.audit.distortions import jpeg
from refacex.io.images import encode_image
from refacex.payload import crypto
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.pipeline import anonymize, encode_output
from refacex.recover.search import search

PASS = b"search test passphrase"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, astronaut, t1):
    """Anonymised astronaut (vault), the same as a metadata-free JPEG 75 (robust tier
    only) and anonymised t1 (six other people), sealed with one passphrase (fixed: the
    donor, and so the exact scores, follow from it)."""
    mp = pytest.MonkeyPatch()
    for name in ("VAULT_SCRYPT", "COMPACT_SCRYPT"):  # stored in the payload: opens alike
        mp.setattr(crypto, name, crypto.ScryptParams(log2_n=12, r=8, p=1))
    keys = SealKeys(passphrase=PASS)
    d = tmp_path_factory.mktemp("gallery")
    astro = anonymize(astronaut, keys, method="swap")
    (d / "astronaut.png").write_bytes(encode_output(astro, ".png"))
    (d / "astronaut_jpeg75.jpg").write_bytes(encode_image(jpeg(astro.image, 75), ".jpg"))
    (d / "t1.png").write_bytes(encode_output(anonymize(t1, keys, method="swap"), ".png"))
    pass_file = d.parent / "pass.txt"
    pass_file.write_bytes(PASS)
    yield d, OpenKeys(passphrase=PASS), pass_file
    mp.undo()


def _probe(astronaut: np.ndarray) -> np.ndarray:
    """Not the anonymised file's own original pixels: mirrored and at 80 %."""
    return cv2.resize(astronaut[:, ::-1], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)


def test_key_holder_finds_the_person_in_both_tiers(gallery, astronaut):
    d, keys, _ = gallery
    matches, errors = search(sorted(d.iterdir()), _probe(astronaut), keys)
    assert errors == {}
    assert len(matches) == 1 + 1 + 6  # every face of every image was read
    # Ranked first and second: the person's two images, restored from each tier.
    found = {Path(m.path).name: m for m in matches[:2]}
    assert set(found) == {"astronaut.png", "astronaut_jpeg75.jpg"}
    assert found["astronaut.png"].tier == "vault" and found["astronaut.png"].same_person
    assert found["astronaut_jpeg75.jpg"].tier == "robust"
    # The robust tier's short code restores the person only to SFace's threshold: 0.36-0.38
    # over six encodings of this photo (the encryption's fresh nonce changes the marked
    # pixels, so the received face), against 0.363 — at, not past it (docs/benchmarks.md,
    # "Key-holder search": robust-only rank-1 37 % on LFW). So its verdict is not asserted.
    assert found["astronaut_jpeg75.jpg"].score > 0.33
    # The six people of t1 are all below the threshold, and below both astronaut faces.
    others = [m.score for m in matches if Path(m.path).name == "t1.png"]
    assert max(others) < min(m.score for m in found.values())


def test_anonymised_face_itself_does_not_match(gallery, astronaut):
    """What anyone without the key sees: the swapped face is not the probe's person."""
    from refacex.faces.recognizers import get_recognizer
    from refacex.io.images import read_image
    from refacex.pipeline import analyzer
    from refacex.recover.search import probe_embedding

    d, _, _ = gallery
    rec = get_recognizer("sface")
    anon = read_image(d / "astronaut.png")
    face = analyzer().detector.detect(anon)[0]
    assert not rec.same_person(probe_embedding(_probe(astronaut), rec), rec.embed(anon, face))


def test_wrong_key_links_nothing(gallery, astronaut):
    d, _, _ = gallery
    matches, errors = search(sorted(d.iterdir()), _probe(astronaut),
                             OpenKeys(passphrase=b"not the passphrase"))
    assert matches == [] and len(errors) == 3
    assert all("WrongKeyError" in e for e in errors.values())


def test_cli_search(gallery, astronaut, tmp_path):
    d, _, pass_file = gallery
    probe = tmp_path / "probe.png"
    cv2.imwrite(str(probe), _probe(astronaut))

    def run(probe_path: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "refacex", "search", "--passphrase-file", str(pass_file),
               "--probe", str(probe_path), "--json", *extra, str(d)]
        return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ),
                              timeout=300)

    out = run(probe)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # Listed: the vault's match for sure, the robust tier's when it clears the threshold
    # (it sits at it, see above); never one of t1's six people.
    listed = {Path(m["path"]).name for m in report["matches"]}
    assert "astronaut.png" in listed and listed <= {"astronaut.png", "astronaut_jpeg75.jpg"}
    everyone = json.loads(run(probe, "--all").stdout)["matches"]
    assert len(everyone) == 8
    assert {Path(m["path"]).name for m in everyone[:2]} == {"astronaut.png",
                                                           "astronaut_jpeg75.jpg"}
    # A probe with no face is a clear error, not an empty result.
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    bad = run(blank)
    assert bad.returncode != 0 and "no face" in bad.stderr
