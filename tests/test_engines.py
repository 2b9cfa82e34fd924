"""Engines: the manifest, resuming a killed run, per-file errors, and Ray vs local.

The CLI runs as a real subprocess where a run is killed or Ray is started: SIGKILL and
Ray's worker processes are about processes, not functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from refacex.engines.manifest import FILENAME, Manifest, entry
from refacex.engines.recorder import Recorder
from refacex.engines.tasks import Job, KeySpec, Outcome, Task
from refacex.errors import OutputError
from refacex.io.images import TEMP_SUFFIX, read_image
from refacex.payload.keyring import SealKeys


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refacex", *args], capture_output=True,
                          text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    r = cli("keygen", "--out", str(d), "--no-passphrase")
    assert r.returncode == 0, r.stderr
    return d


def _rows(out: Path) -> dict[str, dict]:
    db = sqlite3.connect(out / FILENAME)
    db.row_factory = sqlite3.Row
    try:
        return {Path(r["id"]).name: dict(r) for r in db.execute("SELECT * FROM tasks")}
    finally:
        db.close()


# -- the manifest on its own -------------------------------------------------------------

def test_manifest_done_means_this_input_these_settings_this_output(tmp_path):
    src, dest = tmp_path / "a.jpg", tmp_path / "out" / "a.jpg"
    src.write_bytes(b"one")
    dest.parent.mkdir()
    with Manifest.beside(dest.parent, "anonymize") as m:
        m.start_run("local")
        e = entry("image", src, dest)
        m.mark_pending([e], "S1")
        m.mark_running(e, "w")
        assert not m.is_done(e, "S1")
        dest.write_bytes(b"output")
        m.mark_done(e, "S1", {"faces": 1}, 0.5, "w")
        assert m.is_done(e, "S1")
        assert not m.is_done(e, "S2"), "other settings (method, keys) must redo the file"
    assert (dest.parent / FILENAME).stat().st_mode & 0o077 == 0, "rows name the inputs"
    with Manifest.beside(dest.parent, "anonymize") as m:  # reopened by a later run
        assert m.is_done(entry("image", src, dest), "S1")
        assert m.rows("done")[0]["result"] == json.dumps({"faces": 1})
        assert m.others_running(), "the run above never finished and its process lives"
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        m.db.execute("UPDATE runs SET pid=?", (dead.pid,))
        assert not m.others_running(), "a run whose process is gone was killed"
        time.sleep(0.01)
        src.write_bytes(b"changed input")
        assert not m.is_done(entry("image", src, dest), "S1"), "an edited input is redone"
        src.write_bytes(b"one")
        os.utime(src, ns=(e.mtime_ns, e.mtime_ns))
        assert m.is_done(entry("image", src, dest), "S1")
        dest.unlink()
        assert not m.is_done(entry("image", src, dest), "S1"), "a deleted output is redone"
        assert m.counts()["done"] == 1


def test_manifest_refuses_a_damaged_file(tmp_path):
    (tmp_path / FILENAME).write_bytes(b"not a database at all, " * 100)
    with pytest.raises(OutputError, match="not a usable refacex manifest"):
        Manifest.beside(tmp_path, "anonymize")


def test_failed_task_leaves_no_sidecar_and_rename_hides_names(tmp_path):
    """A task that fails after writing its sidecar (killed between the two renames, then
    failing on the rerun) must not leave the sidecar; with --rename the manifest must
    not name the input."""
    src = tmp_path / "Jane_Doe.tif"
    src.write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "0123456789abcdef.tif"
    side = out / "0123456789abcdef.tif.refacex"
    side.write_bytes(b"orphan")
    task = Task("image", src, dest, extras=(side,), private_name=dest.name)
    seen: list[Outcome] = []
    with Manifest.beside(out, "anonymize") as m:
        m.start_run("local")
        rec = Recorder(m, "S", seen.append)
        m.mark_pending([rec.entry(task)], "S")
        rec.started(task, "w")
        rec.finished(Outcome(task, error=f"{src}: not an image (format not recognised)"))
        row = m.rows("failed")[0]
    assert not side.exists() and not dest.exists()
    assert seen and rec.failed == 1
    assert row["input"] is None and "Jane_Doe" not in json.dumps(row)
    assert row["error"] == f"{dest.name}: not an image (format not recognised)"


def test_job_digest_tells_settings_and_keys_apart(tmp_path):
    a = KeySpec.of(SealKeys(passphrase=b"one"))
    b = KeySpec.of(SealKeys(passphrase=b"two"))
    assert Job(a).digest() == Job(a).digest()
    assert Job(a).digest() != Job(b).digest()
    assert Job(a).digest() != Job(a, method="blur").digest()
    assert Job(a).digest() != Job(a, tiers=("vault",)).digest()
    assert "one" not in repr(a) and "two" not in repr(b), "secrets stay out of repr"
    import pickle

    spec = pickle.loads(pickle.dumps(a))  # travels to Ray workers
    assert spec.seal_keys().donor_key == SealKeys(passphrase=b"one").donor_key


def test_ray_missing_is_one_line(tmp_path, keys, sample_paths):
    code = ("import sys; sys.modules['ray'] = None; from refacex.cli import main; "
            "sys.argv[0] = 'refacex'; main()")
    r = subprocess.run([sys.executable, "-c", code, "anonymize", str(sample_paths["t1"]),
                        "-o", str(tmp_path / "out"), "--recipient",
                        str(keys / "refacex.pub"), "--engine", "ray"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("refacex: error: --engine ray needs the [ray] extra: "
                                "pip install 'refacex[ray]'")
    assert not (tmp_path / "out").exists(), "nothing is written before the check"


# -- a killed run ------------------------------------------------------------------------

@pytest.mark.slow
def test_killed_run_resumes_without_redoing_and_leaves_no_partial_files(tmp_path, keys,
                                                                        sample_paths):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    n = 10
    for i in range(n):
        shutil.copy(sample_paths["astronaut"], inp / f"a{i:02d}.png")
    (inp / "broken.jpg").write_text("not an image\n")
    args = ["anonymize", str(inp), "-o", str(out), "--recipient", str(keys / "refacex.pub"),
            "--method", "blur"]
    proc = subprocess.Popen([sys.executable, "-m", "refacex", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        done: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / FILENAME).exists():
                with contextlib.suppress(sqlite3.OperationalError):  # a write under way
                    done = [k for k, r in _rows(out).items() if r["status"] == "done"]
            if len(done) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed mid-folder"
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up code runs
    finally:
        proc.kill()
        proc.wait()
    rows = _rows(out)
    done = sorted(k for k, r in rows.items() if r["status"] == "done")
    assert 3 <= len(done) < n, rows
    for p in out.glob("*.png"):  # whatever has its final name is complete
        assert read_image(p).shape == (512, 512, 3)
    before = {k: (out / k).stat().st_ino for k in done}
    # What a kill during a write leaves (whether or not this kill did): a temp file. It is
    # removed once over a minute old (a fresh one may belong to a writer without a
    # manifest, tests/security/test_outputs.py), so age it as a kill a while ago would.
    stray = out / f".a{n - 1:02d}.png.k1ll3d{TEMP_SUFFIX}"
    stray.write_bytes(b"half a png")
    then = time.time() - 120
    os.utime(stray, (then, then))

    r = cli(*args, "--resume", "--json")
    assert r.returncode == 2, r.stderr  # broken.jpg
    report = json.loads(r.stdout)
    assert report["summary"]["skipped"] == len(done)
    assert report["summary"]["images"] == n - len(done)
    assert report["summary"]["failed"] == 1
    assert "broken.jpg: not an image" in r.stderr
    rows = _rows(out)
    for k in done:  # not redone: same file, one attempt
        assert (out / k).stat().st_ino == before[k] and rows[k]["attempts"] == 1
        assert report["files"][str(inp / k)] == {"output": [str(out / k)],
                                                 "skipped": "resume"}
    assert rows["broken.jpg"]["status"] == "failed"
    assert "not an image" in rows["broken.jpg"]["error"]
    assert sorted(k for k, r in rows.items() if r["status"] == "done") == sorted(
        f"a{i:02d}.png" for i in range(n))
    assert not list(out.rglob(f"*{TEMP_SUFFIX}")), "a partial file was left behind"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        f"a{i:02d}.png" for i in range(n)), "only complete outputs, nothing for broken.jpg"
    from refacex.stego import vault

    for i in range(n):
        data = (out / f"a{i:02d}.png").read_bytes()
        assert vault.extract(data) is not None
    r2 = cli(*args, "--resume")  # and once more: everything is done but broken.jpg
    assert "0 image(s)" in r2.stdout and f"{n} skipped (done)" in r2.stdout


# -- Ray on a local cluster against the local engine ---------------------------------------

DECISION_KEYS = ("box", "score", "status", "donor", "robust_code_bytes", "privacy_risk",
                 "decision")


@pytest.mark.slow
def test_ray_makes_the_local_engines_decisions_and_its_outputs_recover(tmp_path, keys,
                                                                       sample_paths):
    pytest.importorskip("ray")
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("t1", "astronaut", "tom_hanks"):
        shutil.copy(sample_paths[name], inp / sample_paths[name].name)
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        extra = ["--engine", "ray", "--workers", "2"] if engine == "ray" else []
        r = cli("anonymize", str(inp), "-o", str(out), "--recipient",
                str(keys / "refacex.pub"), "--json", *extra)
        assert r.returncode == 0, r.stderr
        runs[engine] = json.loads(r.stdout)["files"]
        rows = _rows(out)
        assert {r["status"] for r in rows.values()} == {"done"} and len(rows) == 3
        if engine == "ray":  # two actors, each in its own process
            assert len({r["worker"] for r in rows.values()}) == 2
    local, ray = runs["local"], runs["ray"]
    assert local.keys() == ray.keys()
    for path in local:
        a, b = local[path], ray[path]
        assert (a["robust_bytes"], a["robust_faces"]) == (b["robust_bytes"], b["robust_faces"])
        assert len(a["faces_detail"]) == len(b["faces_detail"]) > 0
        for fa, fb in zip(a["faces_detail"], b["faces_detail"], strict=True):
            for k in DECISION_KEYS:
                assert fa[k] == fb[k], (path, k)
    assert sum(f["donor"] is not None for v in local.values() for f in v["faces_detail"]) >= 8

    for engine in ("local", "ray"):
        r = cli("recover", str(tmp_path / engine), "-o", str(tmp_path / f"rec-{engine}"),
                "--key", str(keys / "refacex.key"))
        assert r.returncode == 0, r.stderr
    for path, rep in local.items():
        stem = Path(path).stem
        original = read_image(path)
        anon = {e: read_image(tmp_path / e / Path(rep["output"][0]).name)
                for e in ("local", "ray")}
        rec = {e: read_image(tmp_path / f"rec-{e}" / f"{stem}.png") for e in ("local", "ray")}
        # The outputs differ only by the robust tier's in-pixel code, whose ciphertext is
        # fresh randomness each run: a faint pattern (measured ~41 dB apart), not a face ...
        same = (anon["local"] == anon["ray"]).all(axis=2)
        assert cv2.PSNR(anon["local"], anon["ray"]) > 32
        # ... and recovery adds no difference of its own, and restores every face exactly.
        assert (rec["local"][same] == rec["ray"][same]).all()
        for f in rep["faces_detail"]:
            x, y, w, h = (int(round(v)) for v in f["box"])
            x, y = max(0, x), max(0, y)
            for e in ("local", "ray"):
                assert (rec[e][y:y + h, x:x + w] == original[y:y + h, x:x + w]).all(), (path, e)


def _video_folder(tmp_path: Path, frames: int, gop: int | None = None
                  ) -> tuple[Path, Path, Path]:
    """IN with one synthetic clip, OUT (not made) and a passphrase file."""
    from refacex.video.synth import scene_frames, write_clip

    inp = tmp_path / "in"
    inp.mkdir()
    write_clip(inp / "clip.mp4", scene_frames("one", frames, (320, 240)), gop=gop)
    pw = tmp_path / "pw"
    pw.write_bytes(b"engines test passphrase")
    pw.chmod(0o600)
    return inp, tmp_path / "out", pw


@pytest.mark.slow
def test_ray_runs_a_video_as_one_recorded_task_that_recovers(tmp_path):
    pytest.importorskip("ray")
    inp, out, pw = _video_folder(tmp_path, 12)
    r = cli("anonymize", str(inp), "-o", str(out), "--passphrase-file", str(pw),
            "--method", "blur", "--engine", "ray", "--workers", "1")
    assert r.returncode == 0, r.stderr
    row = _rows(out)["clip.mp4"]
    assert (row["kind"], row["status"]) == ("video", "done")
    assert json.loads(row["result"])["frames"] == 12
    assert (out / "clip.mp4").is_file() and (out / "clip.mp4.refacex").is_file()
    r = cli("recover", str(out), "-o", str(tmp_path / "rec"), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    assert "12 frame(s)" in r.stdout


@pytest.mark.slow
def test_ray_cuts_a_long_video_into_parts_joined_with_one_donor_that_recover(tmp_path):
    """``--video-part-s``: the parts run on two actors; the driver joins them (one video,
    one vault of two parts) and the manifest records one done video."""
    pytest.importorskip("ray")
    from refacex.video.vault import read_parts, sidecar_path

    inp, out, pw = _video_folder(tmp_path, 72, gop=24)
    r = cli("anonymize", str(inp), "-o", str(out), "--passphrase-file", str(pw),
            "--engine", "ray", "--workers", "2", "--video-part-s", "1")
    assert r.returncode == 0, r.stderr
    assert "2 parts" in r.stdout
    row = _rows(out)["clip.mp4"]
    assert (row["kind"], row["status"]) == ("video", "done")
    rep = json.loads(row["result"])
    assert (rep["frames"], rep["parts"]) == (72, 2)
    assert len({d for t in rep["tracks"] for d in t["donors"]}) == 1
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "clip.mp4", "clip.mp4.refacex"]
    assert not [p for p in out.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    assert len(read_parts(sidecar_path(out / "clip.mp4"))) == 2
    r = cli("recover", str(out), "-o", str(tmp_path / "rec"), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    assert "72 frame(s)" in r.stdout
