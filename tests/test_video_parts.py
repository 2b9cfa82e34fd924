"""A video done in parts (``--engine ray --video-part-s``): cut at keyframes, parts
anonymised apart, joined back; one donor per person across the cuts; one vault.

Run here without Ray (``run_split`` does the parts one after another with the same
``Worker.video`` a Ray actor runs); ``tests/test_engines.py`` runs it on a Ray cluster.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from refacex.engines.tasks import Job, KeySpec, Task, Worker
from refacex.engines.videoparts import VideoSplit, link_tracks, run_split, seam_hints
from refacex.errors import BindingError
from refacex.io.images import clean_stale_temp
from refacex.io.video import VideoReader, audio_packets, luma
from refacex.io.videoparts import cut_parts, join_parts, plan_parts
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.video import vault as video_vault
from refacex.video.recover import recover_video
from refacex.video.synth import scene_frames, write_clip

PW = b"video parts test passphrase"
FRAMES, GOP = 72, 24  # 3 s at 24 fps, a keyframe every second


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("parts")
    return write_clip(d / "clip.mp4", scene_frames("one", FRAMES, (320, 240)), gop=GOP)


def _decoded(path: Path) -> list[tuple[int, np.ndarray]]:
    with VideoReader(path) as r:
        return [(f.pts, luma(f.av_frame).copy()) for f in r.frames()]


def test_cut_at_keyframes_and_joined_is_the_same_video_with_its_sound(clip, tmp_path):
    parts = plan_parts(clip, 1.0, 3)
    assert [p.first for p in parts] == [0, 24, 48]
    assert sum(p.frames for p in parts) == FRAMES
    assert plan_parts(clip, 10.0, 3) == plan_parts(clip, 1.0, 1)  # one part: not cut
    paths = cut_parts(clip, parts, tmp_path)
    assert [len(_decoded(p)) for p in paths] == [24, 24, 24]
    tmp = join_parts(clip, list(zip(paths, [p.offset for p in parts], strict=True)),
                     tmp_path / "joined.mp4")
    whole, joined = _decoded(clip), _decoded(tmp)
    assert [pts for pts, _ in joined] == [pts for pts, _ in whole]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(whole, joined, strict=True))
    assert audio_packets(tmp) == audio_packets(clip) != []


@pytest.fixture(scope="module")
def split_run(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("parts-out")
    worker = Worker(Job(KeySpec.of(SealKeys(passphrase=PW)), method="swap"))
    task = Task("video", clip, out / "clip.mp4")
    split = VideoSplit.start(task, 1.0, 3)
    assert split is not None and len(split.parts) == 3
    outcome = run_split(split, worker.video)
    return outcome, worker, split


def test_parts_join_into_one_video_and_vault_that_recover_exactly(clip, split_run,
                                                                  tmp_path):
    outcome, _worker, split = split_run
    assert outcome.ok, outcome.error
    rep = outcome.report
    assert rep["frames"] == FRAMES and rep["parts"] == 3
    out = outcome.task.dest
    assert not split.folder.exists()  # the parts are gone
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.mp4", "clip.mp4.refacex"]
    assert audio_packets(out) == audio_packets(clip)
    assert [pts for pts, _ in _decoded(out)] == [pts for pts, _ in _decoded(clip)]
    assert len(video_vault.read_parts(video_vault.sidecar_path(out))) == 3
    rec = recover_video(out, tmp_path / "rec.mp4", OpenKeys(passphrase=PW))
    assert (rec.frames, rec.tier) == (FRAMES, "vault")
    assert rec.regions == rep["regions"] >= FRAMES - 3
    # Every restored region is the original's pixels again (as decoded from the input).
    tracks = rep["tracks"]
    with VideoReader(clip) as a, VideoReader(rec.output) as b:
        for fa, fb in zip(a.frames(), b.frames(), strict=True):
            t = next((t for t in tracks if t["edited"][0] <= fa.index <= t["edited"][1]),
                     None)
            if t is None:
                continue
            x, y, w, h = (int(v) for v in t["first_box"])
            cx, cy = x + w // 2, y + h // 2
            # The centre of the face: inside the edit region in every frame of this clip.
            assert np.array_equal(fa.image[cy - 5:cy + 5, cx - 5:cx + 5],
                                  fb.image[cy - 5:cy + 5, cx - 5:cx + 5]), fa.index


def test_one_donor_for_the_person_across_the_cuts(split_run):
    outcome, _worker, _split = split_run
    tracks = outcome.report["tracks"]
    assert {t["part"] for t in tracks} == {0, 1, 2}
    assert len({t["person"] for t in tracks}) == 1 == outcome.report["anonymized_tracks"]
    donors = {d for t in tracks for d in t["donors"]}
    assert len(donors) == 1, tracks


def test_a_part_given_its_predecessors_donor_keeps_it(split_run, tmp_path):
    """The re-run of a part whose linked track chose another donor: the hint wins."""
    outcome, worker, _split = split_run
    track = next(t for t in outcome.report["tracks"] if t["part"] == 1)
    from refacex.anonymize import get_method

    ids = list(get_method("swap").bank.ids)  # the bank the worker's swap uses
    other = next(d for d in ids if d not in track["donors"])
    parts = plan_parts(outcome.task.src, 1.0, 3)
    src = cut_parts(outcome.task.src, parts[1:2], tmp_path)[0]
    res = worker.video(str(src), str(tmp_path / "p1.mp4"),
                       [{"box": list(track["first_box"]), "donor": other, "overrides": {}}])
    assert res["error"] is None, res["error"]
    (t,) = res["report"]["tracks"]
    assert t["donors"] == [other]
    assert t["frames"] + t["blurred"] == parts[1].frames  # swapped or blurred, never left


def test_seam_hints_give_a_chain_its_first_donor():
    def tr(first, last, box, donor):
        return {"edited": (first, last), "first_box": box, "last_box": box,
                "donors": [donor] if donor else [], "overrides": {}}

    a, b = [10, 10, 50, 50], [200, 10, 50, 50]
    parts = [[tr(0, 23, a, "d1"), tr(5, 23, b, None)],       # b: only blurred here
             [tr(0, 23, a, "d2"), tr(0, 23, b, "d7")],
             [tr(0, 23, a, "d3"), tr(1, 23, b, "d7"), tr(10, 20, b, "d9")]]
    assert link_tracks(parts[0], 24, parts[1]) == {0: 0, 1: 1}
    assert link_tracks(parts[1], 24, parts[2]) == {0: 0, 1: 1}  # not the late one
    hints = seam_hints(parts, [24, 24, 24])
    assert hints == {1: [{"box": a, "donor": "d1", "overrides": {}}],
                     2: [{"box": a, "donor": "d1", "overrides": {}}]}
    assert seam_hints(parts, [30, 24, 24]) == {2: [{"box": a, "donor": "d2",
                                                    "overrides": {}}]}  # no link at 29


def test_a_joined_vault_refuses_parts_reordered_or_dropped(split_run, tmp_path):
    outcome, _worker, _split = split_run
    out = outcome.task.dest
    side = video_vault.sidecar_path(out)
    parts = video_vault.read_parts(side)

    def write(ps: list[list[bytes]]) -> Path:
        p = tmp_path / "forged.refacex"
        with open(p, "wb") as fh:
            fh.write(video_vault.MAGIC + bytes([video_vault.VERSION_PARTS, 0]))
            for records in ps:
                fh.write(b"".join(video_vault.record(b) for b in records))
                fh.write(b"\0\0\0\0")
        return p

    keys = OpenKeys(passphrase=PW)
    for forged in ([parts[1], parts[0], parts[2]], [parts[0], parts[2]],
                   [parts[0], parts[1], parts[1]]):
        with pytest.raises(BindingError):
            recover_video(out, tmp_path / "r.mp4", keys, sidecar=write(forged))
        assert not (tmp_path / "r.mp4").exists()


def test_a_dead_runs_parts_folder_is_cleaned_and_a_live_ones_kept(tmp_path):
    old = tmp_path / ".clip.mp4.abc.parts.refacex-tmp"
    old.mkdir()
    (old / "in0000.mp4").write_bytes(b"x")
    live = tmp_path / ".clip2.mp4.def.parts.refacex-tmp"
    live.mkdir()
    (live / "in0000.mp4").write_bytes(b"x")
    past = time.time() - 3600
    for p in (old / "in0000.mp4", old, live):
        os.utime(p, (past, past))
    assert clean_stale_temp(tmp_path, older_than_s=60) == 1
    assert not old.exists() and live.exists()  # its part file was written just now
