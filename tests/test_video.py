"""Video: anonymise -> recover round trip, one donor per track, entering faces, bad input.

The clips are made here from the bundled sample photos (``refacex.video.synth``): a
panning, zooming crop window over ``astronaut`` (camera motion, scale change) and ``tom``
sliding in mid-clip (a face entering), with an AAC tone. 24 frames at 320x240 keep the
module at ~30 s on a shared 2-core CPU, most of it the swap itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from refacex.errors import NoPayloadError, TamperedPayloadError, WrongKeyError
from refacex.io.video import VideoError, VideoReader, audio_packets, probe
from refacex.payload import crypto
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.video import vault as video_vault
from refacex.video.synth import camera_frames, write_clip

PW = b"video test passphrase"
N, ENTER = 24, 10
CHEAP = crypto.ScryptParams(log2_n=10)  # tests only: the real cost is in the header


@pytest.fixture(scope="module")
def clip(tmp_path_factory, tom, astronaut) -> Path:
    d = tmp_path_factory.mktemp("video")
    return write_clip(d / "clip.mp4", camera_frames(astronaut, N, intruder=tom,
                                                    enter_at=ENTER), fps=24)


@pytest.fixture(scope="module")
def anonymised(clip, tmp_path_factory):
    from refacex.video.anonymize import anonymize_video

    out = tmp_path_factory.mktemp("anon") / "clip.mp4"
    with mock.patch.object(crypto, "VAULT_SCRYPT", CHEAP):
        res = anonymize_video(clip, out, SealKeys(passphrase=PW), method="swap",
                              method_options={"donors": "templates"})
    return res


def _frames(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as r:
        return [f.image for f in r.frames()]


def test_round_trip_keeps_frames_rate_audio_and_restores_regions(clip, anonymised,
                                                                 tmp_path):
    from refacex.video.recover import recover_video

    out = anonymised.output
    assert out.is_file() and video_vault.sidecar_path(out).is_file()
    src_info, out_info = probe(clip), probe(out)
    assert out_info.rate == src_info.rate and anonymised.frames == N
    assert audio_packets(out) == audio_packets(clip) != []
    rec = recover_video(out, tmp_path / "rec.mp4", OpenKeys(passphrase=PW))
    assert rec.frames == N and rec.regions == anonymised.edited_regions > 0
    assert audio_packets(rec.output) == audio_packets(clip)
    assert probe(rec.output).rate == src_info.rate
    original, anon, restored = _frames(clip), _frames(out), _frames(rec.output)
    assert len(original) == len(anon) == len(restored) == N
    from refacex.pipeline import analyzer

    det = analyzer().detector
    checked = 0
    for o, a, r in zip(original, anon, restored, strict=True):
        for f in det.detect(o):
            x, y, w, h = (int(v) for v in f.box)
            x, y = max(0, x), max(0, y)
            # The vault holds the decoded input's pixels: exact, not merely close.
            assert np.array_equal(r[y:y + h, x:x + w], o[y:y + h, x:x + w])
            assert not np.array_equal(a[y:y + h, x:x + w], o[y:y + h, x:x + w])
            checked += 1
    assert checked >= N


def test_one_donor_per_track(anonymised):
    swapped = [t for t in anonymised.tracks if t.frames]
    assert len(swapped) >= 2  # the astronaut from frame 0, tom once he is in
    for t in swapped:
        assert len(t.donors) == 1, t
        assert t.keyframes and t.keyframes[0] >= t.first_frame


def test_entering_face_is_never_left_identifiable(clip, anonymised):
    """Every detectable face of every output frame, matched to the same place in the
    input, must not be the same person for SFace (0 unprotected frames)."""
    from refacex.faces.detect import match_detection
    from refacex.faces.recognizers import get_recognizer
    from refacex.pipeline import analyzer

    det, sface = analyzer().detector, get_recognizer("sface")
    unprotected, entering_seen = [], 0
    for i, (o, a) in enumerate(zip(_frames(clip), _frames(anonymised.output), strict=True)):
        found = det.detect(a)
        for f in det.detect(o):
            if i >= ENTER and f.box[0] > 0.5 * o.shape[1]:
                entering_seen += 1
            g, _ = match_detection(f, found)
            if g is not None and sface.same_person(sface.embed(o, f), sface.embed(a, g)):
                unprotected.append((i, [round(float(v)) for v in f.box]))
    assert entering_seen > 0, "the entering face was never detectable in the input"
    assert unprotected == []


def test_wrong_key_tampered_and_missing_vault_fail_without_output(anonymised, tmp_path):
    from refacex.video.recover import recover_video

    dest = tmp_path / "rec.mp4"
    with pytest.raises(WrongKeyError):
        recover_video(anonymised.output, dest, OpenKeys(passphrase=b"not the key"))
    side = video_vault.sidecar_path(anonymised.output)
    bad = bytearray(side.read_bytes())
    bad[len(bad) // 2] ^= 0x40
    forged = tmp_path / "forged.refacex"
    forged.write_bytes(bytes(bad))
    with pytest.raises(TamperedPayloadError):
        recover_video(anonymised.output, dest, OpenKeys(passphrase=PW), sidecar=forged)
    with pytest.raises(NoPayloadError):
        recover_video(anonymised.output, dest, OpenKeys(passphrase=PW),
                      sidecar=tmp_path / "absent.refacex")
    assert list(tmp_path.iterdir()) == [forged]  # no output, no temp file left


def test_bad_inputs(tmp_path, clip):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(VideoError):
        probe(fake)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:2000])
    with pytest.raises(VideoError), VideoReader(cut) as r:
        list(r.frames())


def test_cli_bad_video_is_one_line_and_writes_nothing(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00" * 4096)
    pw = tmp_path / "pw"
    pw.write_bytes(PW)
    pw.chmod(0o600)
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "refacex", "anonymize", str(fake), "-o", str(out),
                        "--passphrase-file", str(pw), "--method", "blur"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "fake.mp4" in lines[0], p.stderr
    assert not out.exists() or list(out.iterdir()) == []
