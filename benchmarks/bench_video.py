"""Video benchmark: speed, flicker, identity consistency, unprotected frames, recovery.

A 640x480 one-face clip made from the bundled ``astronaut`` photo (panning, zooming crop
window, AAC tone; ``refacex.video.synth``) is anonymised with ``swap`` (verified on
keyframes, cheap SFace guard on the other frames) and with ``blur``, then recovered.

* fps — frames per second of ``anonymize_video`` (decode + detect + track + edit +
  encode + vault + binding), on this machine;
* flicker — mean absolute frame-to-frame change inside the original's face box, output
  divided by original (1.0 = no flicker added; the camera motion itself is in both);
* identity consistency — mean SFace similarity of each anonymised frame's face to the
  track's first anonymised frame (one donor -> high; a donor per frame -> low), next to
  the same number for the original;
* unprotected — frames where a face detected in the output, matched to the original's
  place, is the same person for SFace at its threshold (target 0);
* recovery — PSNR of recovered face regions and whole frames vs the decoded input.

Run: ``.venv/bin/python benchmarks/bench_video.py [--frames 48] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from refacex.faces.detect import match_detection
from refacex.faces.recognizers import get_recognizer
from refacex.io.images import read_image
from refacex.io.video import VideoReader
from refacex.models import resolve
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.pipeline import analyzer
from refacex.video.anonymize import anonymize_video
from refacex.video.recover import recover_video
from refacex.video.synth import camera_frames, write_clip

PW = b"bench video passphrase"


def frames_of(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as r:
        return [f.image for f in r.frames()]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def measure(original: list[np.ndarray], anon: list[np.ndarray]) -> dict:
    det, sface = analyzer().detector, get_recognizer("sface")
    boxes = []
    unprotected, ref, cons, cons_o, ref_o = 0, None, [], [], None
    for o, a in zip(original, anon, strict=True):
        found = det.detect(o)
        f = max(found, key=lambda f: f.box[2]) if found else None
        boxes.append(None if f is None else [int(v) for v in f.box])
        if f is None:
            continue
        eo = sface.embed(o, f)
        ref_o = eo if ref_o is None else ref_o
        cons_o.append(sface.similarity(ref_o, eo))
        g, _ = match_detection(f, det.detect(a))
        if g is None:
            continue
        ea = sface.embed(a, g)
        if sface.same_person(eo, ea):
            unprotected += 1
        ref = ea if ref is None else ref
        cons.append(sface.similarity(ref, ea))
    diffs_o, diffs_a = [], []
    for t in range(1, len(original)):
        b = boxes[t]
        if b is None:
            continue
        x, y, w, h = max(0, b[0]), max(0, b[1]), b[2], b[3]
        sl = (slice(y, y + h), slice(x, x + w))
        diffs_o.append(np.abs(original[t][sl].astype(int) - original[t - 1][sl]).mean())
        diffs_a.append(np.abs(anon[t][sl].astype(int) - anon[t - 1][sl]).mean())
    return {"flicker_ratio": round(float(np.mean(diffs_a) / max(np.mean(diffs_o), 1e-9)), 3),
            "identity_consistency": round(float(np.mean(cons[1:])), 3) if len(cons) > 1
            else None,
            "identity_consistency_original": round(float(np.mean(cons_o[1:])), 3),
            "faces_redetected": len(cons), "unprotected_frames": unprotected,
            "boxes": boxes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    photo = read_image(resolve("astronaut"))
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, "
                            f"{platform.python_version()}", "frames": args.frames,
                 "size": "640x480", "methods": {}}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        clip = write_clip(d / "clip.mp4", camera_frames(photo, args.frames, size=(640, 480)),
                          fps=24)
        original = frames_of(clip)
        for method, opts in (("swap", {"donors": "templates"}), ("blur", None)):
            dest = d / f"{method}.mp4"
            t0 = time.perf_counter()
            res = anonymize_video(clip, dest, SealKeys(passphrase=PW), method=method,
                                  method_options=opts)
            wall = time.perf_counter() - t0
            anon = frames_of(dest)
            m = measure(original, anon)
            t0 = time.perf_counter()
            rec = recover_video(dest, d / f"{method}.rec.mp4", OpenKeys(passphrase=PW))
            rec_s = time.perf_counter() - t0
            restored = frames_of(rec.output)
            region_psnr = [psnr(r[max(0, b[1]):b[1] + b[3], max(0, b[0]):b[0] + b[2]],
                                o[max(0, b[1]):b[1] + b[3], max(0, b[0]):b[0] + b[2]])
                           for o, r, b in zip(original, restored, m["boxes"], strict=True)
                           if b is not None]
            m.pop("boxes")
            out["methods"][method] = {
                "fps": round(args.frames / wall, 2), "timings_s": res.timings_s,
                "tracks": [vars(t) for t in res.tracks], **m,
                "recover_fps": round(args.frames / rec_s, 2),
                "recovered_face_psnr_db": min(region_psnr) if region_psnr else None,
                "recovered_frame_psnr_db": round(float(np.mean(
                    [psnr(o, r) for o, r in zip(original, restored, strict=True)])), 2),
                "anonymised_bytes": dest.stat().st_size,
                "vault_bytes": res.sidecar.stat().st_size if res.sidecar else 0}
            print(method, json.dumps(out["methods"][method], default=str))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
