"""The LFW audit benchmark: every shipped method, one table (docs/results.md + .json).

Protocol (why): LFW's evaluation people (``splits/lfw_eval_people.txt``: 1,680 people
with 2+ photos, never used for building donors) give a probe photo and a *different*
photo of the same person, which is what a real re-identification attacker would hold.
People are drawn with a seeded shuffle (so the sample is not alphabetical), then
processed in sorted order; the probe is each person's first photo, the gallery their
second. Probe and gallery folders are symlink trees under the work folder (the images
are never copied into the repository).

Each method runs ``refacex.audit.run`` with ``run=METHOD`` (anonymise + recover +
measure), resumable through the audit cache: rerunning the same command continues where
it stopped. ``--max-seconds`` bounds each method's wall time; what finished is reported,
with the number of probes, and ``partial: true`` in the JSON.

    nice -n 10 .venv/bin/python benchmarks/run_audit_lfw.py --work ../audit-lfw \\
        --n 1000 --methods blur,pixelate,mask
    .venv/bin/python benchmarks/run_audit_lfw.py --work ../audit-lfw --docs-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
METHODS = ("blur", "pixelate", "mask", "swap")
#: Published ReFaceX recovery figures (reference row; different data and crop protocol).
REFACEX_PAPER = {"ssim": 0.938, "psnr": 23.97}


def build_sets(work: Path, n: int, seed: int) -> tuple[Path, Path, list[str]]:
    """Symlink trees work/probes/NAME/NAME_0001.jpg and work/gallery/NAME/NAME_0002.jpg."""
    people = [ln.strip() for ln in (DATA / "splits" / "lfw_eval_people.txt").read_text()
              .splitlines() if ln.strip()]
    rng = np.random.default_rng(seed)
    chosen = sorted(people[i] for i in rng.permutation(len(people))[:n])
    probes, gallery = work / "probes", work / "gallery"
    rels = []
    for name in chosen:
        photos = sorted((DATA / "lfw-deepfunneled" / name).glob("*.jpg"))
        if len(photos) < 2:
            continue
        for folder, src in ((probes, photos[0]), (gallery, photos[1])):
            dst = folder / name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.is_symlink():
                dst.symlink_to(src)
        rels.append(f"{name}/{photos[0].name}")
    return probes, gallery, rels


def run_method(method: str, work: Path, probes: Path, gallery: Path, rels: list[str],
               max_seconds: float | None, robust: bool, realism: bool = True
               ) -> dict[str, Any]:
    from refacex.audit.run import AuditConfig, run_audit, summary_table

    cfg = AuditConfig(original=probes, out=work / method, gallery=gallery, run=method,
                      files=rels, feature_cache=work / "features", max_seconds=max_seconds,
                      robustness=robust, robust_limit=10, realism=realism)
    t0 = time.time()
    res = run_audit(cfg)
    print(f"== {method}: {time.time() - t0:.0f} s", flush=True)
    print(summary_table(res), flush=True)
    return res


def refresh_lighting(work: Path, method: str, probes: Path) -> int:
    """Recompute the lighting angle of cached records written before ``light_v`` 2 (the
    robust light direction, see ``refacex.audit.utility.light_direction``) from the saved
    anonymised image, the original and its cached landmarks. Returns records updated."""
    from refacex.audit.privacy import FeatureCache, face_from_json, recognizer_names
    from refacex.audit.utility import lighting_angles, skin_region
    from refacex.io.images import read_image, write_bytes_atomic

    fc = FeatureCache(work / "features")
    names = recognizer_names()

    def not_cached() -> dict[str, Any]:
        raise LookupError("original not analysed yet")

    done = 0
    for p in sorted((work / method / "cache" / "records").glob("*.json")):
        rec = json.loads(p.read_text())
        if "faces" not in rec or "error" in rec or "rel" not in rec or "distortions" in rec:
            continue
        if all(f.get("utility", {}).get("light_v") == 2 for f in rec["faces"]):
            continue
        opath = probes / rec["rel"]
        apath = (work / method / "anonymized" / rec["rel"]).with_suffix(".png")
        if not apath.is_file():
            continue
        orig, anon = read_image(opath), read_image(apath)
        try:
            feats = fc.get(opath, names, not_cached)
        except LookupError:
            continue
        ofaces = [face_from_json(f) for f in feats["faces"]]
        for f in rec["faces"]:
            u = f.get("utility")
            of = ofaces[f["index"]] if f["index"] < len(ofaces) else None
            if u is None or of is None or of.landmarks is None:
                continue
            u.pop("light_angle_deg", None)
            skin = skin_region(orig.shape[:2], of.landmarks)
            if skin.sum() >= 50:
                u.update(lighting_angles(orig, anon, of.landmarks, skin))
            u["light_v"] = 2
        write_bytes_atomic(p, json.dumps(rec).encode())
        done += 1
    return done


def _g(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _f(x: Any, nd: int = 2, pct: bool = False) -> str:
    if x is None:
        return "–"
    if x == "inf":
        return "∞"
    x = float(x)
    return f"{100 * x:.{max(0, nd - 2)}f} %" if pct else f"{x:.{nd}f}"


def row(method: str, r: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one method that go into the table and results.json."""
    p = r["privacy"]["recognizers"]
    u, rec = r["utility"], r["recovery"]
    out: dict[str, Any] = {"method": method, "probes": r["counts"]["ok"],
                           "faces": r["counts"]["faces"], "partial": r.get("partial", False),
                           "gallery_size": r["privacy"]["gallery_size"]}
    for name in p:
        for mode in ("redetect", "known_location"):
            m = p[name][mode]
            out[f"{name}_{mode}_ver_gallery"] = _g(m, "verified_vs_gallery", "rate")
            out[f"{name}_{mode}_ver_original"] = _g(m, "verified_vs_original", "rate")
            out[f"{name}_{mode}_rank1"] = m["rank1"]
            out[f"{name}_{mode}_rank5"] = m["rank5"]
            out[f"{name}_{mode}_score_mean"] = _g(m, "score_vs_original", "mean")
        out[f"{name}_original_ver_gallery"] = _g(p[name], "original_reference",
                                                 "verified_vs_gallery", "rate")
        out[f"{name}_original_rank1"] = _g(p[name], "original_reference", "rank1")
        out[f"{name}_diversity_anon"] = _g(p[name], "diversity", "anonymized")
        out[f"{name}_diversity_orig"] = _g(p[name], "diversity", "original")
        out[f"{name}_donor_score"] = _g(p[name], "known_location", "donor_score", "mean")
        out[f"{name}_verified_as_donor"] = _g(p[name], "known_location", "verified_as_donor",
                                              "rate")
        out[f"{name}_fmr_anon"] = _g(p[name], "diversity", "false_match_rate_anonymized")
        out[f"{name}_fmr_orig"] = _g(p[name], "diversity", "false_match_rate_original")
    out["detection"] = _g(u, "detection_retained", "rate")
    for k in ("nme_pct", "pose_err_mean_deg", "skin_delta_e", "light_angle_deg",
              "expression_shape_dist", "d_eye_openness", "d_mouth_openness"):
        out[k] = _g(u, k, "mean")
    out["light_angle_median"] = _g(u, "light_angle_deg", "median")
    out["nme_median"] = _g(u, "nme_pct", "median")
    out["bg_psnr_median"] = _g(u, "bg_psnr", "median")
    out["bg_psnr_mean_capped"] = _g(u, "bg_psnr", "mean")
    for tier in ("vault", "robust"):
        for m in ("psnr", "ssim", "lpips"):
            out[f"{tier}_{m}"] = _g(rec, tier, "crop128", m, "mean")
    out["robust_status"] = rec.get("robust_status")
    rl = r.get("realism") or {}
    out["realism_faces"] = rl.get("n_fake")
    out["realism_fid"] = rl.get("fid")
    out["realism_kid"] = rl.get("kid")
    out["realism_kid_std"] = rl.get("kid_std")
    sp = r["speed_ms"]
    out["ms_per_image"] = _g(sp, "audit_total", "mean")
    out["ms_anonymize_total"] = sum(_g(sp, k, "mean") or 0 for k in
                                    ("detect", "align", "anonymize", "vault", "robust"))
    out["ms_recover_vault"] = _g(sp, "recover_vault", "mean")
    out["compute_s"] = (_g(sp, "audit_total", "mean") or 0) * r["counts"]["ok"] / 1e3
    out["peak_rss_mb"] = r["run"]["peak_rss_mb"]
    out["run_wall_s"] = r["run"]["wall_s"]
    out["run_images_per_s"] = r["run"]["images_per_s"]
    return out


def _robust_section(path: Path) -> tuple[list[str], dict[str, Any] | None]:
    """Robust tier and distortion suite, from an audit with ``--robustness`` on the
    bundled sample photos (the LFW audit above measures the robust tier undistorted)."""
    if not path.is_file():
        return [], None
    r = json.loads(path.read_text())
    rec = r["recovery"].get("robust", {})
    L = ["", "## Robust tier and distortions (sample photos, not LFW)", "",
         "The LFW table above measures the robust tier on undistorted 250×250 photos; "
         f"this section is `refacex audit --run {r['settings'].get('run')} --robustness` on "
         f"the {r['counts']['ok']} bundled sample photos ({r['counts']['faces']} faces; t1 "
         "group photo, astronaut, Tom Hanks); recovery numbers are means over faces of the "
         "128 px aligned crop.", "",
         f"After JPEG-75 + metadata strip: robust PSNR {_f(_g(rec, 'crop128', 'psnr', 'mean'))} "
         f"dB, SSIM {_f(_g(rec, 'crop128', 'ssim', 'mean'), 3)}, LPIPS "
         f"{_f(_g(rec, 'crop128', 'lpips', 'mean'), 3)} (n = {_g(rec, 'crop128', 'psnr', 'n')}"
         f" faces; {r['recovery'].get('robust_status')}).", "",
         "| distortion | images | payload survives | decrypts | PSNR (dB) | SSIM | "
         "extractor crashes |",
         "|---|---|---|---|---|---|---|"]
    for name, d in r.get("robustness", {}).items():
        L.append(f"| {name} | {d['n']} | {_f(d['survival'], 3, True)} | "
                 f"{_f(d['decrypt'], 3, True)} | {_f(d['psnr']['mean'])} | "
                 f"{_f(d['ssim']['mean'], 3)} | {d.get('crashes', 0)} |")
    return L, {"recovery_robust": rec, "robustness": r.get("robustness"),
               "counts": r["counts"], "robust_status": r["recovery"].get("robust_status")}


def write_docs(work: Path, command: str, started: str | None,
               robust_audit: Path | None = None) -> None:
    rows, runs = [], {}
    for m in METHODS:
        p = work / m / "audit.json"
        if p.is_file():
            r = json.loads(p.read_text())
            pr = work / m / "audit-run.json"
            if pr.is_file():  # speed/memory of the run that computed the images
                r["run"] = json.loads(pr.read_text())["run"]
            rows.append(row(m, r))
            runs[m] = r["run"]
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "started": started,
            "machine": f"{cpu}, {os.cpu_count()} cores (shared)", "command": command,
            "data": "LFW deep-funneled, eval people (splits/lfw_eval_people.txt)",
            "reference_refacex_paper": REFACEX_PAPER}
    (ROOT / "docs" / "results.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                          indent=1, default=str))
    L = ["# Audit results on LFW", "",
         f"Generated by `benchmarks/run_audit_lfw.py` on {meta['date']}; machine: "
         f"{meta['machine']}.", "", "Command:", "", "```", command, "```", "",
         "Probes: each sampled LFW evaluation person's first photo; gallery: their second "
         "photo (one per person; chance rank-1 = 1/gallery). Attacker *redetect* runs YuNet "
         "on the anonymised image; *known location* embeds the anonymised pixels at the "
         "original face's landmarks. Verification uses each recogniser's own threshold "
         "(SFace cosine ≥ 0.363, dlib L2 < 0.6). Recovery numbers are on the aligned "
         "128 px crop (padding 0.25) and average over faces.", ""]
    if rows:
        done = ", ".join(f"{r['method']} {r['probes']}" + (" (partial)" if r["partial"] else "")
                         for r in rows)
        L += [f"Probes audited per method: {done}. *Partial* means the per-method time budget "
              "(`--max-seconds`) ran out first; rerunning the same command continues from the "
              "audit cache. The run's wall time per method is in the speed table.", ""]
    if not rows:
        L.append("_No finished audit yet._")
    else:
        def cell(r: dict, k: str, nd: int = 2, pct: bool = False) -> str:
            return _f(r.get(k), nd, pct)

        L += ["## Privacy (lower is better)", "",
              "| method | probes | SFace ver. vs gallery (redetect / known loc.) | "
              "dlib ver. vs gallery (redetect / known loc.) | SFace rank-1 (redetect / known) | "
              "dlib rank-1 (redetect / known) | SFace ver. vs original (known) | "
              "dlib ver. vs original (known) |",
              "|---|---|---|---|---|---|---|---|"]
        ref = rows[0]
        L.append(f"| *originals (no anonymisation)* | {ref['probes']} | "
                 f"{cell(ref, 'sface_original_ver_gallery', 3, True)} | "
                 f"{cell(ref, 'dlib_original_ver_gallery', 3, True)} | "
                 f"{cell(ref, 'sface_original_rank1', 3, True)} | "
                 f"{cell(ref, 'dlib_original_rank1', 3, True)} | 100 % | 100 % |")
        for r in rows:
            L.append(
                f"| {r['method']}{' (partial)' if r['partial'] else ''} | {r['probes']} | "
                f"{cell(r, 'sface_redetect_ver_gallery', 3, True)} / "
                f"{cell(r, 'sface_known_location_ver_gallery', 3, True)} | "
                f"{cell(r, 'dlib_redetect_ver_gallery', 3, True)} / "
                f"{cell(r, 'dlib_known_location_ver_gallery', 3, True)} | "
                f"{cell(r, 'sface_redetect_rank1', 3, True)} / "
                f"{cell(r, 'sface_known_location_rank1', 3, True)} | "
                f"{cell(r, 'dlib_redetect_rank1', 3, True)} / "
                f"{cell(r, 'dlib_known_location_rank1', 3, True)} | "
                f"{cell(r, 'sface_known_location_ver_original', 3, True)} | "
                f"{cell(r, 'dlib_known_location_ver_original', 3, True)} |")
        g = rows[0]["gallery_size"]
        L += ["", f"Gallery size {g}: chance rank-1 = {_f(1 / g if g else None, 3, True)}.", "",
              "## Utility", "",
              "| method | detected | landmark NME (% IOD) | pose error (° mean axis) | "
              "expression shape (/IOD) | skin ΔE2000 | lighting angle (°, median) | "
              "background PSNR (dB, median) |",
              "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            L.append(f"| {r['method']} | {cell(r, 'detection', 3, True)} | "
                     f"{cell(r, 'nme_pct')} | {cell(r, 'pose_err_mean_deg')} | "
                     f"{cell(r, 'expression_shape_dist', 3)} | {cell(r, 'skin_delta_e')} | "
                     f"{cell(r, 'light_angle_median', 1)} | {cell(r, 'bg_psnr_median', 1)} |")
        L += ["", "NME and pose error are computed at the original face's location when the "
              "anonymised face is not re-detected. Lighting: 2nd-order SH lighting is fitted "
              "to the skin of the original and of the anonymised face on the same normals "
              "(from the original landmarks); the direction compared is the mean of the "
              "observed normals in the top 10 % of fitted irradiance (the SH argmax flips by "
              ">90° on near-ambient faces; it is kept in the JSON as "
              "`light_angle_sh_argmax_deg`). Medians, because single faces with flat lighting "
              "still produce outliers.", "",
              "## Donor leakage and identity diversity (known location)", "",
              "| method | SFace score vs donor template | verified as donor (SFace / dlib) | "
              "SFace cross-person mean cosine (orig → anon) | dlib cross-person mean L2 "
              "(orig → anon) | dlib false-match rate between people (orig → anon) |",
              "|---|---|---|---|---|---|"]
        for r in rows:
            L.append(f"| {r['method']} | {cell(r, 'sface_donor_score', 3)} | "
                     f"{cell(r, 'sface_verified_as_donor', 3, True)} / "
                     f"{cell(r, 'dlib_verified_as_donor', 3, True)} | "
                     f"{cell(r, 'sface_diversity_orig', 3)} → {cell(r, 'sface_diversity_anon', 3)}"
                     f" | {cell(r, 'dlib_diversity_orig', 3)} → "
                     f"{cell(r, 'dlib_diversity_anon', 3)} | "
                     f"{cell(r, 'dlib_fmr_orig', 3, True)} → {cell(r, 'dlib_fmr_anon', 3, True)} |")
        L += ["", "## Recovery (128 px aligned crop)", "",
              "| method | vault PSNR (dB) | vault SSIM | vault LPIPS | robust PSNR (dB) | "
              "robust SSIM | robust LPIPS | robust tier |",
              "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            st = r.get("robust_status") or {}
            L.append(f"| {r['method']} | {cell(r, 'vault_psnr')} | {cell(r, 'vault_ssim', 4)} | "
                     f"{cell(r, 'vault_lpips', 4)} | {cell(r, 'robust_psnr')} | "
                     f"{cell(r, 'robust_ssim', 3)} | {cell(r, 'robust_lpips', 3)} | "
                     f"{'; '.join(f'{k}: {v}' for k, v in st.items())} |")
        L.append(f"| *ReFaceX (published)* | {REFACEX_PAPER['psnr']} | "
                 f"{REFACEX_PAPER['ssim']} | – | – | – | – | reference |")
        L += ["", "PSNR of identical crops is ∞ and is capped at 100 dB in means."]
        if any(r.get("realism_fid") is not None for r in rows):
            L += ["", "## Realism (lower is better)", "",
                  "FID and KID of each method's anonymised faces against the original faces "
                  "(InceptionV3 pool3 features of the 128 px aligned crop, padding 0.25, at "
                  "the original landmarks; `refacex.audit.realism`). FID is biased upwards "
                  "at small n, so compare methods at the same n; KID is unbiased (mean ± "
                  "std over 100 subsets).", "",
                  "| method | faces | FID | KID (×10³) |", "|---|---|---|---|"]
            for r in rows:
                k, ks = r.get("realism_kid"), r.get("realism_kid_std")
                L.append(f"| {r['method']} | {r.get('realism_faces') or '–'} | "
                         f"{cell(r, 'realism_fid', 1)} | "
                         f"{_f(k * 1e3 if k is not None else None, 2)} ± "
                         f"{_f(ks * 1e3 if ks is not None else None, 2)} |")
        L += ["",
              "## Speed", "",
              "| method | probes | anonymise (ms/img) | vault recover (ms) | "
              "audit total (ms/img) | run wall (s) | images/s | peak RSS (MB) |",
              "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            L.append(f"| {r['method']} | {r['probes']} | {cell(r, 'ms_anonymize_total', 0)} | "
                     f"{cell(r, 'ms_recover_vault', 0)} | {cell(r, 'ms_per_image', 0)} | "
                     f"{cell(r, 'run_wall_s', 0)} | {cell(r, 'run_images_per_s', 2)} | "
                     f"{cell(r, 'peak_rss_mb', 0)} |")
        L += ["", "Timings are wall-clock per stage on a 2-core machine shared with other "
              "jobs (the four methods ran as four parallel, niced processes next to other "
              "benchmarks), so they are upper bounds; `anonymise` is detect + align + "
              "anonymise + vault + robust from `AnonymizeResult.timings_ms`."]
    rob = _robust_section(robust_audit) if robust_audit else ([], None)
    L += rob[0]
    if rob[1] is not None:
        doc = json.loads((ROOT / "docs" / "results.json").read_text())
        doc["robustness_samples"] = rob[1]
        (ROOT / "docs" / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    (ROOT / "docs" / "results.md").write_text("\n".join(L) + "\n")
    print(f"wrote {ROOT / 'docs' / 'results.md'} ({len(rows)} method(s))")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT.parent / "audit-lfw",
                    help="work folder (symlink trees, anonymised images, caches)")
    ap.add_argument("--n", type=int, default=1000, help="number of people (probes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="per method: stop starting new images after this (resumable)")
    ap.add_argument("--robustness", action="store_true")
    ap.add_argument("--no-realism", action="store_true",
                    help="skip FID/KID (Inception features, ~2 crops per probe)")
    ap.add_argument("--docs-only", action="store_true",
                    help="only (re)write docs/results.md from finished audits")
    ap.add_argument("--refresh-lighting", action="store_true",
                    help="recompute lighting angles of records cached by an older version")
    ap.add_argument("--aggregate-only", action="store_true",
                    help="rewrite each method's audit.json/report from cached records only")
    ap.add_argument("--reverse", action="store_true",
                    help="walk the probes backwards: a second worker on the same --work "
                         "shares the cache with the first and they meet in the middle")
    ap.add_argument("--robust-audit", type=Path, default=None,
                    help="audit.json of a --robustness audit to add as a section")
    ap.add_argument("--command", default=None, help="command line recorded in the docs")
    ap.add_argument("--threads", type=int, default=1,
                    help="OpenCV threads per process (1: several audits share 2 cores "
                         "without oversubscription)")
    a = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(a.threads)
    command = a.command or "nice -n 10 .venv/bin/python " + " ".join(
        ["benchmarks/run_audit_lfw.py", *(argv if argv is not None else sys.argv[1:])])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if a.refresh_lighting or a.aggregate_only:
        probes, gallery, rels = build_sets(a.work, a.n, a.seed)
        for m in a.methods.split(","):
            if a.refresh_lighting:
                print(f"{m}: lighting refreshed on {refresh_lighting(a.work, m, probes)} "
                      "records", flush=True)
            main_json = a.work / m / "audit.json"
            if (main_json.is_file() and not (a.work / m / "audit-run.json").is_file()
                    and json.loads(main_json.read_text())["run"]["computed"] > 0):
                # keep the real run's wall time, throughput and peak memory
                (a.work / m / "audit-run.json").write_bytes(main_json.read_bytes())
            if a.aggregate_only and (a.work / m / "cache" / "records").is_dir():
                # every image not cached is skipped (max_seconds=0): re-aggregates only
                run_method(m, a.work, probes, gallery, rels, 0.0, False, not a.no_realism)
    elif not a.docs_only:
        if not DATA.is_dir():
            print(f"{DATA} absent: the LFW data is only on project machines", file=sys.stderr)
            return 2
        probes, gallery, rels = build_sets(a.work, a.n, a.seed)
        print(f"{len(rels)} probes, gallery {gallery}", flush=True)
        order = rels[::-1] if a.reverse else rels
        for m in a.methods.split(","):
            run_method(m, a.work, probes, gallery, order, a.max_seconds, a.robustness,
                       not a.no_realism)
    write_docs(a.work, command, started, a.robust_audit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
