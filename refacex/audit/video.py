"""``refacex audit ORIGINAL.mp4 ANONYMISED.mp4``: what an anonymised video protects and keeps.

The video counterpart of the photo audit (``audit/run.py``), on a pair of videos with the
same frames (an anonymised video keeps every frame and timestamp of its original).

Every frame (the headline figures, cheap: detection and SFace):

* **unprotected frames** — frames in which a face the detector finds in the original
  (the pipeline's floor, 0.3: stricter than the photo audit's 0.6) and the second
  opinion (``faces/confirm.py``) confirms as a face is still the same person for SFace
  at its threshold in the output, for each attacker: one who re-detects the face in the
  output (``redetect``), one who knows where it was (``known_location``). Target: 0.
  Detections it calls only *plausible* (a bow tie, a collar at 0.3-0.4) are counted
  apart (``unprotected_plausible_frames``: an untouched bow tie is "the same person" as
  itself), clear non-faces not at all;
* **flicker** — mean absolute frame-to-frame change inside each original face's box,
  output over original (the camera's own motion is in both; 1.0 adds nothing, much
  more than 1 is a face that shimmers or jumps);
* **identity consistency** — per person track (faces associated frame to frame by the
  video engine's tracker), the mean SFace similarity of each anonymised frame's face to
  the track's mean anonymised face; next to the same number for the original. A new
  person per frame scores low, one donor per track high; a track that is partly
  swapped and partly blurred scores low too (it does change identity).

Every ``sample_s`` seconds (the photo audit's per-face measures, ``audit/utility.py``):
native scores of every registered recogniser for both attackers and how often they say
"same person", landmark, pose, expression, lighting and skin-colour fidelity, and the
background's PSNR/SSIM. With a recovered video also its PSNR against the original, per
face region and per frame.

Writes ``OUT/video_audit.json`` (schema ``refacex-video-audit/1``) and ``OUT/report.html``
(self-contained, like the photo report).
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import numpy as np

from refacex.audit import privacy, utility
from refacex.audit.metrics import psnr
from refacex.audit.report import _CSS, _jpeg_uri, _table
from refacex.audit.run import dumps, stats
from refacex.errors import RefacexError
from refacex.faces.confirm import FACE, NOT_FACE, confirmer
from refacex.faces.recognizers import get_recognizer
from refacex.io.images import write_bytes_atomic
from refacex.io.video import VideoReader
from refacex.pipeline import analyzer
from refacex.video.track import Tracker

SCHEMA = "refacex-video-audit/1"
MODES = privacy.MODES  # ("redetect", "known_location"): the photo audit's two attackers
#: Frames shown in the report (original above anonymised).
THUMBS = 6


def _pairs(*paths: Path | None):
    """Frames of the videos in step (None for a missing path); an error if the counts
    differ (the pair is not an original and its anonymisation)."""
    readers = [VideoReader(p) if p is not None else None for p in paths]
    try:
        its = [r.frames() if r is not None else None for r in readers]
        while True:
            got = [next(it, None) if it is not None else None for it in its]
            live = [g for g, it in zip(got, its, strict=True) if it is not None]
            if all(g is None for g in live):
                return
            if any(g is None for g in live):
                raise RefacexError("the videos have different frame counts (not an original "
                                   "and its anonymisation?)")
            yield [g.image if g is not None else None for g in got], readers[0].info
    finally:
        for r in readers:
            if r is not None:
                r.close()


class _Track:
    """Identity-consistency state of one person track: its SFace embeddings."""

    def __init__(self) -> None:
        self.anon: list[np.ndarray] = []
        self.orig: list[np.ndarray] = []

    @staticmethod
    def consistency(embs: list[np.ndarray]) -> float | None:
        """Mean cosine of each embedding to the (normalised) mean of all."""
        if len(embs) < 2:
            return None
        e = np.stack(embs)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        m = e.mean(0)
        return float((e @ (m / np.linalg.norm(m))).mean())


def audit_video(original: Path, anonymized: Path, out: Path | None,
                recovered: Path | None = None, sample_s: float | None = 1.0,
                progress: bool = False) -> dict[str, Any]:
    """Audit one video pair; writes OUT/video_audit.json and OUT/report.html (``out``
    None: only returns the dict). ``sample_s`` None: the every-frame figures only."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    fa = analyzer()
    det, sface = fa.detector, get_recognizer("sface")
    names = privacy.recognizer_names()
    tracker: Tracker | None = None
    tracks: dict[int, _Track] = {}
    frames = faces = with_faces = not_faces = 0
    judge = confirmer()
    unprotected = {m: 0 for m in MODES}
    unprotected_plausible = {m: 0 for m in MODES}
    unprotected_at: list[int] = []
    flicker_o = flicker_a = 0.0
    prev: tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]] | None = None
    samples: list[dict[str, Any]] = []
    thumbs: list[tuple[int, np.ndarray, np.ndarray]] = []
    rec_face: list[float] = []
    rec_frame: list[float] = []
    sample_every = 1
    bar = tqdm(desc="audit video", unit="frame", disable=not progress, mininterval=2.0)
    for (o, a, r), info in _pairs(original, anonymized, recovered):
        if tracker is None:
            fps = float(info.rate) if info.rate else 25.0
            tracker = Tracker(fps=fps)
            sample_every = max(1, int(round(sample_s * fps))) if sample_s else 0
        if a.shape != o.shape or (r is not None and r.shape != o.shape):
            raise RefacexError(f"frame {frames}: the videos' frame sizes differ")
        i = frames
        dets = det.detect(o)
        judged = [judge.confirm(o, f, dets).verdict for f in dets]
        not_faces += judged.count(NOT_FACE)
        keep = [j for j, v in enumerate(judged) if v != NOT_FACE]
        dets, judged = [dets[j] for j in keep], [judged[j] for j in keep]
        found = det.detect(a)
        matched, _ = tracker.associate(dets)
        boxes: dict[int, np.ndarray] = {}
        bad = {m: False for m in MODES}
        bad_plausible = {m: False for m in MODES}
        for di, f in enumerate(dets):
            hit = bad if judged[di] == FACE else bad_plausible
            tr = matched.get(di) or tracker.new_track(f, i, i / fps, FACE)
            tracker.observe(tr, f, i, i / fps, FACE)
            boxes[tr.id] = f.box
            st = tracks.setdefault(tr.id, _Track())
            eo = sface.embed(o, f)
            st.orig.append(eo)
            hit["known_location"] |= sface.same_person(eo, sface.embed(a, f))
            g, _ = utility.match_detection(f, found)
            if g is not None:
                ea = sface.embed(a, g)
                hit["redetect"] |= sface.same_person(eo, ea)
                st.anon.append(ea)
            if r is not None:
                x, y, w, h = (int(round(v)) for v in f.box)
                x, y = max(0, x), max(0, y)
                rec_face.append(psnr(o[y:y + h, x:x + w], r[y:y + h, x:x + w]))
        tracker.end_frame(i, set(boxes))
        faces += len(dets)
        with_faces += bool(dets)
        for m in MODES:
            unprotected[m] += bad[m]
            unprotected_plausible[m] += bad_plausible[m]
        if any(bad.values()):
            unprotected_at.append(i)
        if prev is not None:
            po, pa, pboxes = prev
            for tid, b in boxes.items():
                if tid in pboxes:
                    x, y, w, h = (int(round(v)) for v in b)
                    sl = (slice(max(0, y), y + h), slice(max(0, x), x + w))
                    flicker_o += float(np.abs(o[sl].astype(np.int16) - po[sl]).mean())
                    flicker_a += float(np.abs(a[sl].astype(np.int16) - pa[sl]).mean())
        prev = (o, a, boxes)
        if r is not None:
            rec_frame.append(psnr(o, r))
        if sample_every and i % sample_every == 0 and dets:
            samples.append(_sample(o, a, dets, found, names, fa))
            if len(thumbs) < THUMBS:
                thumbs.append((i, o, a))
        frames += 1
        bar.update(1)
    bar.close()
    if not frames:
        raise RefacexError(f"{original}: no frames")
    result = _aggregate(frames, faces, with_faces, unprotected, unprotected_at,
                        flicker_o, flicker_a, tracks, samples, names, rec_face, rec_frame)
    result["counts"]["not_face_detections"] = not_faces
    result["unprotected_plausible_frames"] = unprotected_plausible
    result.update({
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {"original": str(original), "anonymized": str(anonymized),
                     "recovered": str(recovered) if recovered else None,
                     "sample_every_frames": sample_every, "recognizers": names},
        "recognizers": privacy.recognizer_info(),
        "run": {"wall_s": time.perf_counter() - t_start}})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out / "video_audit.json", dumps(result).encode())
        write_bytes_atomic(out / "report.html", render_html(result, thumbs).encode())
    return result


def _sample(o: np.ndarray, a: np.ndarray, dets: list, found: list, names: list[str],
            fa) -> dict[str, Any]:
    """The photo audit's per-face measures on one frame."""
    rec: dict[str, Any] = {"faces": []}
    for f in dets:
        fa.describe(o, f, landmarks=True, pose=True, recognizers=names)
        g, _ = utility.match_detection(f, found)
        scores: dict[str, dict[str, tuple[float, bool]]] = {m: {} for m in MODES}
        anon_lm = None
        anon: dict[str, dict[str, np.ndarray]] = {
            "known_location": privacy.embed_all(a, privacy.copy_face(f, landmarks=True),
                                                names)}
        if g is not None:
            fa.describe(a, g, landmarks=True, pose=False, recognizers=names)
            anon_lm = g.landmarks
            anon["redetect"] = g.embeddings
        for m, embs in anon.items():
            for n, e in embs.items():
                model = privacy.get_recognizer(n)
                scores[m][n] = (model.score(e, f.embeddings[n]),
                                bool(model.same_person(e, f.embeddings[n])))
        rec["faces"].append({"detected": g is not None, "scores": scores,
                             "utility": utility.face_utility(o, a, f, anon_lm)})
    rec["background"] = utility.background_fidelity(o, a, dets)
    return rec


def _aggregate(frames: int, faces: int, with_faces: int, unprotected: dict[str, int],
               unprotected_at: list[int], flicker_o: float, flicker_a: float,
               tracks: dict[int, _Track], samples: list[dict[str, Any]], names: list[str],
               rec_face: list[float], rec_frame: list[float]) -> dict[str, Any]:
    sampled = [f for s in samples for f in s["faces"]]
    privacy_out: dict[str, Any] = {}
    for n in names:
        privacy_out[n] = {}
        for m in MODES:
            got = [f["scores"][m].get(n) for f in sampled]
            vals = [g[0] for g in got if g is not None]
            # An undetected face leaves the re-detecting attacker nothing to match.
            verified = [g is not None and g[1] for g in got]
            privacy_out[n][m] = {"score_vs_original": stats(vals),
                                 "verified_vs_original": {
                                     "n": len(verified),
                                     "rate": float(np.mean(verified)) if verified else None}}
    util_keys = ("nme_pct", "pose_err_mean_deg", "d_eye_openness", "d_mouth_openness",
                 "expression_shape_dist", "light_angle_deg", "skin_delta_e")
    utility_out: dict[str, Any] = {
        k: stats(f["utility"].get(k) for f in sampled) for k in util_keys}
    utility_out["detection_retained"] = {
        "n": len(sampled),
        "rate": float(np.mean([f["detected"] for f in sampled])) if sampled else None}
    for k in ("bg_psnr", "bg_ssim"):
        utility_out[k] = stats(s["background"].get(k) for s in samples)
    per_track = [{"id": tid, "frames": len(t.orig), "redetected": len(t.anon),
                  "anonymised": _Track.consistency(t.anon),
                  "original": _Track.consistency(t.orig)}
                 for tid, t in sorted(tracks.items())]
    weighted = [(t["anonymised"], t["frames"]) for t in per_track if t["anonymised"] is not None]
    weighted_o = [(t["original"], t["frames"]) for t in per_track if t["original"] is not None]
    return {
        "counts": {"frames": frames, "frames_with_faces": with_faces, "faces": faces,
                   "tracks": len(tracks), "sampled_frames": len(samples),
                   "sampled_faces": len(sampled)},
        "unprotected_frames": {**unprotected, "frames": unprotected_at[:100]},
        "flicker_ratio": flicker_a / flicker_o if flicker_o > 0 else None,
        "identity_consistency": {
            "anonymised": _weighted(weighted), "original": _weighted(weighted_o),
            "tracks": per_track},
        "privacy": privacy_out,
        "utility": utility_out,
        "recovery": {"face_psnr": stats(rec_face), "frame_psnr": stats(rec_frame)}
        if rec_frame else None,
    }


def _weighted(pairs: list[tuple[float, int]]) -> float | None:
    """Mean weighted by track length (a long track counts for its frames)."""
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def render_html(result: dict[str, Any], thumbs: list[tuple[int, np.ndarray, np.ndarray]]
                ) -> str:
    """The report: headline figures, privacy and utility tables, sampled frames."""
    c, s = result["counts"], result["settings"]
    un = result["unprotected_frames"]
    ic = result["identity_consistency"]
    cls = "good" if un["redetect"] == 0 and un["known_location"] == 0 else "bad"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>refacex video "
             f"audit</title><style>{_CSS}</style></head><body><h1>refacex video audit</h1>",
             f"<p class='note'>created {html.escape(result['created'])}; original "
             f"{html.escape(s['original'])}; anonymised {html.escape(s['anonymized'])}; "
             f"{c['frames']} frames, {c['frames_with_faces']} with faces, {c['faces']} faces "
             f"in {c['tracks']} tracks</p>",
             "<h2>Video</h2>",
             f"<p>Unprotected frames (a face still the same person for SFace): <b "
             f"class='{cls}'>{un['redetect']}</b> for an attacker who re-detects faces, "
             f"<b class='{cls}'>{un['known_location']}</b> for one who knows where they "
             "were; frames with a merely plausible face (the second opinion's verdict) "
             f"left the same person: {result['unprotected_plausible_frames']}.</p>",
             _table(["measure", "value"], [
                 ["flicker (output / original)", result["flicker_ratio"]],
                 ["identity consistency, anonymised", ic["anonymised"]],
                 ["identity consistency, original", ic["original"]]]),
             "<h2>Privacy on sampled frames</h2>"]
    rows = []
    for n, modes in result["privacy"].items():
        for m, v in modes.items():
            rows.append([n, m, v["score_vs_original"]["mean"],
                         v["verified_vs_original"]["rate"], v["verified_vs_original"]["n"]])
    parts.append(_table(["recogniser", "attacker", "mean score vs original",
                         "verified as same person", "faces"], rows))
    parts.append("<h2>Utility on sampled frames</h2>")
    parts.append(_table(["measure", "mean", "median", "n"],
                        [[k, v.get("mean"), v.get("median"), v.get("n")]
                         for k, v in result["utility"].items() if "mean" in v]))
    if result.get("recovery"):
        rc = result["recovery"]
        parts.append("<h2>Recovery</h2>")
        parts.append(_table(["measure", "mean", "min"],
                            [["face regions PSNR (dB)", rc["face_psnr"]["mean"],
                              rc["face_psnr"].get("min")],
                             ["frames PSNR (dB)", rc["frame_psnr"]["mean"],
                              rc["frame_psnr"].get("min")]]))
    if thumbs:
        parts.append("<h2>Sampled frames (original above, anonymised below)</h2>"
                     "<div class='grid'>")
        for i, o, a in thumbs:
            parts.append(f"<div class='cell'><img src='{_jpeg_uri(o, 240)}'>"
                         f"<img src='{_jpeg_uri(a, 240)}'>frame {i}</div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)
