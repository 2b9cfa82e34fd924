"""A long video on Ray, whole vs cut into parts: 1 -> 2 workers (``--video-part-s``).

One clip from the bundled photos (``refacex.video.synth``, a keyframe every second as
cameras write them), anonymised by the CLI as a user starts it, into a fresh OUT each:

* local engine (one process, OpenCV on every core);
* Ray, 1 worker, the video as one task (``--video-part-s 0``);
* Ray, 2 workers, one task (the second worker has nothing to do);
* Ray, 2 workers, cut into parts of ``--part-s`` seconds.

Reported per run: wall time of the command (cluster start and model loading included),
frames per second over it, the parts and parts re-run for a seam, the distinct donors per
person, and for the parts run that ``refacex recover`` restores every frame from the
joined vault.

    .venv/bin/python benchmarks/bench_video_parts.py [--seconds 20] [--scene one]
        [--size 640x480] [--part-s 5] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FPS = 24


def refacex(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refacex", *args], capture_output=True,
                          text=True)


def run(label: str, clip_dir: Path, out: Path, pw: Path, extra: list[str]) -> dict:
    t0 = time.perf_counter()
    r = refacex("anonymize", str(clip_dir), "-o", str(out), "--passphrase-file", str(pw),
                "--json", *extra)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{label}: exit {r.returncode}\n{r.stderr}")
    (rep,) = json.loads(r.stdout[r.stdout.index("{"):])["videos"].values()
    people: dict[object, set[str]] = {}
    for i, t in enumerate(rep["tracks"]):
        if t["frames"]:
            people.setdefault(t.get("person", i), set()).update(t["donors"])
    return {"config": label, "frames": rep["frames"], "wall_s": round(wall, 1),
            "fps_wall": round(rep["frames"] / wall, 2), "parts": rep.get("parts", 1),
            "parts_redone": rep.get("parts_redone", []),
            "donors_per_person": sorted(len(d) for d in people.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--scene", default="one", choices=("one", "three"))
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--part-s", type=float, default=5.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from refacex.video.synth import scene_frames, write_clip

    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-video-parts-"))
    clip_dir = tmp / "in"
    clip_dir.mkdir()
    n = int(args.seconds * FPS)
    write_clip(clip_dir / "clip.mp4", scene_frames(args.scene, n, (w, h)), fps=FPS,
               gop=FPS)
    pw = tmp / "pw"
    pw.write_bytes(b"bench video parts")
    pw.chmod(0o600)
    rows = [
        run("local engine", clip_dir, tmp / "local", pw, []),
        run("Ray, 1 worker, whole video", clip_dir, tmp / "ray1", pw,
            ["--engine", "ray", "--workers", "1", "--video-part-s", "0"]),
        run("Ray, 2 workers, whole video", clip_dir, tmp / "ray2", pw,
            ["--engine", "ray", "--workers", "2", "--video-part-s", "0"]),
        run(f"Ray, 2 workers, parts of {args.part_s:g} s", clip_dir, tmp / "ray2p", pw,
            ["--engine", "ray", "--workers", "2", "--video-part-s", str(args.part_s)]),
    ]
    r = refacex("recover", str(tmp / "ray2p"), "-o", str(tmp / "rec"), "--passphrase-file",
                str(pw))
    rows[-1]["recovered"] = r.stdout.strip() if r.returncode == 0 else f"FAILED: {r.stderr}"
    doc = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
                      f"CPUs, load {os.getloadavg()[0]:.2f} at the end",
           "clip": f"{args.scene}, {w}x{h}, {n} frames at {FPS} fps, a keyframe each second",
           "rows": rows}
    print(json.dumps(doc, indent=2))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
