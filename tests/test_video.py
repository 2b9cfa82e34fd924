"""Video: anonymise -> recover round trip, one donor per track, entering faces, bad input,
the real-time engine, the robust keyframe tier, the video audit, the I/O threads.

The clips are made here from the bundled sample photos (``refacex.video.synth``): a
panning, zooming crop window over ``astronaut`` (camera motion, scale change) and ``tom``
sliding in mid-clip (a face entering), with an AAC tone. 24 frames at 320x240 keep the
module at ~30 s on a shared 2-core CPU, most of it the swap itself; the real-time,
robust-tier and audit tests add ~40 s (marked slow where one test takes over ~10 s).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import cv2
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


# ------------------------------------------------------------------ shared checks
def _unprotected(original: list[np.ndarray], anon: list[np.ndarray]) -> list[tuple]:
    """(frame, box) of every face detectable in the input that is, at the same place in
    the output, still the same person for SFace (re-detected or at the known place)."""
    from refacex.faces.detect import match_detection
    from refacex.faces.recognizers import get_recognizer
    from refacex.pipeline import analyzer

    det, sface = analyzer().detector, get_recognizer("sface")
    out = []
    for i, (o, a) in enumerate(zip(original, anon, strict=True)):
        found = det.detect(a)
        for f in det.detect(o):
            eo = sface.embed(o, f)
            g, _ = match_detection(f, found)
            if sface.same_person(eo, sface.embed(a, f)) or (
                    g is not None and sface.same_person(eo, sface.embed(a, g))):
                out.append((i, [round(float(v)) for v in f.box]))
    return out


def _changed(o: np.ndarray, a: np.ndarray, box) -> float:
    """Mean absolute change (grey levels) inside ``box``: ~1-2 is re-encoding alone."""
    x, y, w, h = (int(round(float(v))) for v in box)
    x, y = max(0, x), max(0, y)
    return float(np.abs(o[y:y + h, x:x + w].astype(np.int16) - a[y:y + h, x:x + w]).mean())


def _entering_boxes(original: list[np.ndarray]) -> list[tuple[int, list]]:
    """(frame, boxes) of the entering face (right half, from ENTER on) wherever the
    detector finds it in the input."""
    from refacex.pipeline import analyzer

    det = analyzer().detector
    out = []
    for i, o in enumerate(original):
        boxes = [f.box for f in det.detect(o)
                 if i >= ENTER and f.box[0] + f.box[2] / 2 > 0.5 * o.shape[1]]
        if boxes:
            out.append((i, boxes))
    return out


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
    original = _frames(clip)
    assert _entering_boxes(original), "the entering face was never detectable in the input"
    assert _unprotected(original, _frames(anonymised.output)) == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", [10, 11])
def test_face_cut_by_the_frame_edge_is_never_left_identifiable(tmp_path, tom, astronaut,
                                                               seed):
    """The clip again with +-1 grey-level noise, as another camera or encoder would
    give it. The astronaut's head is cut by the top edge all through, where SFace swings
    with the alignment points (a swapped frame measured 0.23 at the engine's points and
    0.38 at a re-detection 2 px away). Before the engine checked every frame with the
    full margin and blurred faces with the eyes at the edge, each of these two variants
    left one frame the same person for SFace (frame 18, the face leaving at the top)."""
    from refacex.video.anonymize import anonymize_video

    rng = np.random.default_rng(seed)
    frames = [np.clip(f.astype(np.int16) + rng.integers(-1, 2, f.shape), 0, 255
                      ).astype(np.uint8)
              for f in camera_frames(astronaut, N, intruder=tom, enter_at=ENTER)]
    src = write_clip(tmp_path / "noisy.mp4", frames, fps=24, audio=False)
    with mock.patch.object(crypto, "VAULT_SCRYPT", CHEAP):
        res = anonymize_video(src, tmp_path / "out.mp4", SealKeys(passphrase=PW),
                              method="swap", method_options={"donors": "templates"})
    assert _unprotected(_frames(src), _frames(res.output)) == []


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


def test_entering_face_is_anonymised_from_its_first_detectable_frame(clip, anonymised):
    original, anon = _frames(clip), _frames(anonymised.output)
    seen = _entering_boxes(original)
    assert seen, "the entering face was never detectable in the input"
    for i, boxes in seen:
        for b in boxes:
            assert _changed(original[i], anon[i], b) > 4.0, (i, b)


# ------------------------------------------------------------------ real time
@pytest.fixture(scope="module")
def realtime(clip, tmp_path_factory):
    from refacex.video.anonymize import anonymize_video
    from refacex.video.realtime import RealtimeAnonymizer

    out = tmp_path_factory.mktemp("rt") / "clip.mp4"
    with mock.patch.object(crypto, "VAULT_SCRYPT", CHEAP):
        return anonymize_video(clip, out, SealKeys(passphrase=PW), method="swap",
                               method_options={"donors": "templates"},
                               engine_class=RealtimeAnonymizer)


def test_realtime_leaves_no_face_unprotected_and_recovers(clip, realtime, tmp_path):
    from refacex.video.recover import recover_video

    original, anon = _frames(clip), _frames(realtime.output)
    assert len(anon) == N and realtime.frames == N
    assert _unprotected(original, anon) == []
    for i, boxes in _entering_boxes(original):  # from its first detectable frame on
        for b in boxes:
            assert _changed(original[i], anon[i], b) > 4.0, (i, b)
    for t in realtime.tracks:
        assert len(t.donors) <= 1, t  # one donor per track here too
    rec = recover_video(realtime.output, tmp_path / "rec.mp4", OpenKeys(passphrase=PW))
    assert rec.frames == N and rec.tier == "vault"
    assert audio_packets(rec.output) == audio_packets(clip)


@pytest.mark.slow
def test_realtime_swaps_a_whole_face_with_one_checked_donor(tmp_path):
    """With the astronaut whole in view the real-time path swaps (not only blurs) her
    track, with one donor, and stays private. The worker is waited for, so that the
    result does not depend on how busy the machine is."""
    from refacex.video.anonymize import anonymize_video
    from refacex.video.realtime import RealtimeAnonymizer
    from refacex.video.synth import scene_frames

    frames = scene_frames("one", 48, (320, 240))
    src = write_clip(tmp_path / "one.mp4", frames, fps=24, audio=False)
    with mock.patch.object(crypto, "VAULT_SCRYPT", CHEAP):
        res = anonymize_video(src, tmp_path / "out.mp4", SealKeys(passphrase=PW),
                              method="swap", method_options={"donors": "templates"},
                              engine_class=RealtimeAnonymizer, vault_tier=False,
                              wait_for_keyframes=True)
    main = max(res.tracks, key=lambda t: t.frames + t.blurred)
    assert main.frames > 0 and len(main.donors) == 1, main
    assert _unprotected(_frames(src), _frames(res.output)) == []


# ------------------------------------------------------------------ robust tier, audit
def test_robust_keyframes_restore_without_the_sidecar(tmp_path):
    """The robust tier alone (sidecar lost): same frames and audio, the faces closer to
    the original than the anonymised ones; a wrong key is still a wrong key."""
    from refacex.audit.metrics import psnr
    from refacex.pipeline import analyzer
    from refacex.video.anonymize import anonymize_video
    from refacex.video.recover import recover_video
    from refacex.video.synth import scene_frames

    src = write_clip(tmp_path / "one.mp4", scene_frames("one", 24, (640, 480)), fps=24)
    out = tmp_path / "anon" / "one.mp4"
    with mock.patch.object(crypto, "VAULT_SCRYPT", CHEAP):
        res = anonymize_video(src, out, SealKeys(passphrase=PW), method="blur",
                              robust_tier=True)
    assert res.robust_frames == 2 and res.robust_bytes > 0  # frames 0 and 12 at 24 fps
    video_vault.sidecar_path(out).unlink()  # the sidecar is lost: only the pixels are left
    rec = recover_video(out, tmp_path / "rec.mp4", OpenKeys(passphrase=PW))
    assert rec.tier == "robust" and rec.frames == N and rec.keyframes == [0, 12]
    assert audio_packets(rec.output) == audio_packets(src) != []
    original, anon, restored = _frames(src), _frames(out), _frames(rec.output)
    det = analyzer().detector
    gains = []
    for i in (0, 6, 12, 18):  # keyframes and frames a code was carried to
        f = max(det.detect(original[i]), key=lambda f: f.box[2])
        x, y, w, h = (int(v) for v in f.box)
        sl = (slice(max(0, y), y + h), slice(max(0, x), x + w))
        gains.append(psnr(original[i][sl], restored[i][sl]) - psnr(original[i][sl], anon[i][sl]))
    assert min(gains) > 2.0, gains  # measured 3.6-5.0 dB
    with pytest.raises(WrongKeyError):
        recover_video(out, tmp_path / "bad.mp4", OpenKeys(passphrase=b"not the key"))


@pytest.mark.slow
def test_audit_of_a_video_pair_writes_json_and_html(clip, anonymised, tmp_path):
    import json

    out = tmp_path / "audit"
    p = subprocess.run([sys.executable, "-m", "refacex", "audit", str(clip),
                        str(anonymised.output), "-o", str(out), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    doc = json.loads((out / "video_audit.json").read_text())
    assert doc["schema"] == "refacex-video-audit/1" and doc["counts"]["frames"] == N
    assert doc["unprotected_frames"]["redetect"] == 0
    assert doc["unprotected_frames"]["known_location"] == 0
    assert 0 < doc["flicker_ratio"] < 3
    ic = doc["identity_consistency"]
    assert ic["anonymised"] is not None and ic["original"] > ic["anonymised"] - 0.2
    assert set(doc["privacy"]) >= {"sface", "dlib"} and doc["utility"]["bg_psnr"]["n"] > 0
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert json.loads(p.stdout)["counts"]["frames"] == N


# ------------------------------------------------------------------ threads
def test_prefetch_and_sink_hand_errors_to_the_caller():
    from refacex.video.threads import Prefetch, PriorityWorker, Sink

    def boom():
        yield 1
        raise ValueError("decoder broke")

    got = []
    with pytest.raises(ValueError, match="decoder broke"), Prefetch(boom(), depth=1) as pre:
        got.extend(pre)
    assert got == [1]
    seen: list[int] = []

    def consume(x: int) -> None:
        if x == 3:
            raise OSError("disk full")
        seen.append(x)

    sink = Sink(consume, depth=2)
    with pytest.raises(OSError, match="disk full"):
        for i in range(50):
            sink.put(i)
        sink.finish()
    sink.abort()
    assert seen == [0, 1, 2]
    worker = PriorityWorker()
    gate = worker.submit(0, time.sleep, 0.2)  # occupies the thread
    order: list[str] = []
    late = worker.submit(5, order.append, "refresh")
    first = worker.submit(0, order.append, "first face")
    gate.result(), late.result(), first.result()
    worker.close()
    assert order == ["first face", "refresh"]


def test_sideways_phone_video_is_anonymised_upright_and_keeps_its_rotation(tmp_path,
                                                                           astronaut):
    """A clip stored sideways with a display rotation (a phone held upright): the faces
    are found and anonymised in the upright picture, the output keeps the rotation tag
    and its stored orientation, and recovery restores the regions exactly."""
    from refacex.pipeline import analyzer
    from refacex.video.anonymize import anonymize_video
    from refacex.video.recover import recover_video

    det = analyzer().detector
    frames = camera_frames(astronaut, 6)
    # With sound: audio packets reach the writer before the first frame, and the first
    # mux writes the header, so the tag must be set before any of them goes out.
    src = write_clip(tmp_path / "phone.mp4", frames, rotation=90)
    # What the stored pixels look like: the face lies on its side.
    import av

    with av.open(str(src)) as c:
        stored = next(c.decode(video=0)).to_ndarray(format="bgr24")
    assert stored.shape[:2] == frames[0].shape[1::-1]
    # The decoded, upright picture agrees with OpenCV's own auto-rotation (an independent
    # reading of the display matrix's sign).
    cap = cv2.VideoCapture(str(src))
    ok, cv_first = cap.read()
    cap.release()
    upright0 = _frames(src)[0]
    assert ok and cv_first.shape == upright0.shape
    assert np.abs(cv_first.astype(int) - upright0).mean() < 2.0

    out = tmp_path / "anon" / "phone.mp4"
    with mock.patch.object(crypto, "VAULT_SCRYPT", CHEAP):
        anonymize_video(src, out, SealKeys(passphrase=PW), method="blur")
    assert probe(out).rotation == 90
    assert audio_packets(out) == audio_packets(src) != []
    with av.open(str(out)) as c:
        assert next(c.decode(video=0)).to_ndarray(format="bgr24").shape == stored.shape
    original, anon = _frames(src), _frames(out)
    assert _unprotected(original, anon) == []
    boxes = [det.detect(o) for o in original]
    assert sum(map(len, boxes)) >= 4  # the face is in most frames (the camera pans)
    rec = recover_video(out, tmp_path / "rec.mp4", OpenKeys(passphrase=PW))
    assert probe(rec.output).rotation == 90
    for o, r, faces in zip(original, _frames(rec.output), boxes, strict=True):
        for f in faces:
            x, y, w, h = (max(0, int(v)) for v in f.box)
            assert np.array_equal(r[y:y + h, x:x + w], o[y:y + h, x:x + w])
