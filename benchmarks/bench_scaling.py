"""Scaling of ``refacex anonymize`` over workers: local engine, Ray 1 -> 2 workers on a
private local cluster, and Ray 1 -> 2 workers joining a cluster started here with
``ray start --head`` (``--address``), on the same folder of photos.

Each configuration is one CLI run as a user would start it (a fresh OUT, default
settings: verified swap, vault + robust tiers, public-key mode). Reported per run: the
wall time of the command (cluster start and model loading included), files/s over that,
and the steady rate after each worker's first file (from the manifest's finish times:
(N - workers) files over the time from the workers-th to the last finish), plus the mean
per-file time inside the workers (it grows when workers share cores).

    .venv/bin/python benchmarks/bench_scaling.py [--files 16] [--photos samples|lfw]
        [--no-cluster] [--json OUT.json]

``samples``: the three bundled sample photos (1280x886 six faces, 512x512 one face,
112x112 one face) copied round-robin; ``lfw``: the first N LFW photos (250x250, one face)
from ../shared/data (not in the repository).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def photos(kind: str, n: int, dest: Path) -> list[Path]:
    from refacex.models import resolve

    if kind == "samples":
        src = [resolve(name) for name in ("t1", "astronaut", "tom_hanks")]
    else:
        lfw = SHARED / "lfw-deepfunneled"
        if not lfw.is_dir():
            sys.exit(f"{lfw} absent: use --photos samples")
        src = sorted(lfw.rglob("*.jpg"))[:n]
    dest.mkdir(parents=True)
    out = []
    for i in range(n):
        s = src[i % len(src)]
        p = dest / f"{i:03d}_{s.name}"
        shutil.copy(s, p)
        out.append(p)
    return out


def refacex(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refacex", *args], capture_output=True,
                          text=True)


def one_run(label: str, folder: Path, out: Path, keys: Path, extra: list[str],
            workers: int) -> dict:
    t0 = time.perf_counter()
    r = refacex("anonymize", str(folder), "-o", str(out), "--recipient",
                str(keys / "refacex.pub"), *extra)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{label}: exit {r.returncode}\n{r.stderr}")
    db = sqlite3.connect(out / ".refacex-manifest.sqlite")
    rows = db.execute("SELECT finished, seconds, worker FROM tasks WHERE status='done' "
                      "ORDER BY finished").fetchall()
    db.close()
    n = len(rows)
    k = min(workers, n - 1)
    steady = (n - k) / (rows[-1][0] - rows[k - 1][0]) if k >= 1 else float("nan")
    return {"config": label, "files": n, "wall_s": round(wall, 1),
            "files_per_s": round(n / wall, 3), "steady_files_per_s": round(steady, 3),
            "mean_file_s": round(sum(r[1] for r in rows) / n, 2),
            "workers_seen": len({r[2] for r in rows})}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(cpus: int, tmp: Path) -> tuple[subprocess.Popen, str]:
    """``ray start --head --block`` as our child: stopping it stops only its cluster (not
    ``ray stop``, which would stop every Ray on the machine)."""
    port = free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen([str(ray_bin), "start", "--head", f"--port={port}",
                             f"--num-cpus={cpus}", "--include-dashboard=false",
                             "--disable-usage-stats", "--block"],
                            stdout=subprocess.DEVNULL, stderr=(tmp / "head.log").open("w"),
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    for _ in range(120):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(3)  # the GCS listens before the raylet has registered
            return proc, address
        except OSError:
            time.sleep(1)
    proc.terminate()
    sys.exit("ray start --head did not come up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--photos", choices=("samples", "lfw"), default="samples")
    ap.add_argument("--no-cluster", action="store_true",
                    help="skip the runs against a `ray start --head` cluster")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp_:
        tmp = Path(tmp_)
        folder = tmp / "in"
        photos(args.photos, args.files, folder)
        keys = tmp / "keys"
        r = refacex("keygen", "--out", str(keys), "--no-passphrase")
        assert r.returncode == 0, r.stderr
        configs: list[tuple[str, list[str], int]] = [
            ("local engine (1 process)", [], 1),
            ("ray, private local cluster, 1 worker", ["--engine", "ray", "--workers", "1"], 1),
            ("ray, private local cluster, 2 workers", ["--engine", "ray", "--workers", "2"], 2),
        ]
        results = []
        for i, (label, extra, w) in enumerate(configs):
            results.append(one_run(label, folder, tmp / f"out{i}", keys, extra, w))
            print(json.dumps(results[-1]), flush=True)
        if not args.no_cluster:
            head, address = start_head(2, tmp)
            try:
                for w in (1, 2):
                    label = f"ray, `ray start --head --num-cpus 2` cluster, {w} worker(s)"
                    results.append(one_run(label, folder, tmp / f"outc{w}", keys,
                                           ["--engine", "ray", "--address", address,
                                            "--workers", str(w)], w))
                    print(json.dumps(results[-1]), flush=True)
            finally:
                os.killpg(head.pid, signal.SIGTERM)  # Ray takes up to a minute to drain
                try:
                    head.wait(timeout=180)
                except subprocess.TimeoutExpired:
                    os.killpg(head.pid, signal.SIGKILL)
                    head.wait()
                # `ray start` recorded the head here for later `ray.init()` calls, and a
                # stopped --block head leaves it behind, pointing at nothing.
                current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
                with contextlib.suppress(OSError):
                    if current.read_text().strip().endswith(f":{address.rpartition(':')[2]}"):
                        current.unlink()
    load = os.getloadavg()
    print(f"\n{args.files} files ({args.photos}), {os.cpu_count()} CPUs, "
          f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print("| configuration | wall s | files/s | steady files/s | mean s/file in worker |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['config']} | {r['wall_s']} | {r['files_per_s']} | "
              f"{r['steady_files_per_s']} | {r['mean_file_s']} |")
    if args.json:
        args.json.write_text(json.dumps({"files": args.files, "photos": args.photos,
                                         "cpus": os.cpu_count(), "loadavg": load,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
