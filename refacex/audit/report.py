"""The self-contained HTML audit report.

Why self-contained: an audit is evidence that gets mailed around and archived; it must
open from disk years later, offline, without a web server or a CDN. So every plot is a
matplotlib (Agg) PNG and every image a small JPEG thumbnail, both inlined as base64
``data:`` URIs, the CSS is inline, and there are no scripts or external URLs.
matplotlib is imported here, inside functions, so ``refacex --help`` stays fast.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from refacex.audit.privacy import MODES

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;
max-width:1200px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px}.cell{text-align:center;font-size:.8em}
.cell img{display:block;margin:2px}.row{display:flex;gap:2px}
.note{color:#555;font-size:.9em}.bad{color:#a00}.good{color:#070}
"""


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if x == "inf" or (isinstance(x, float) and np.isinf(x)):
        return "∞"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int | np.integer):
        return str(int(x))
    if isinstance(x, int | float | np.floating):
        return f"{float(x):.{nd}f}"
    return html.escape(str(x))


def _table(header: list[str], rows: list[list[Any]], nd: int = 3) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    def cell(c: Any) -> str:
        return html.escape(c) if isinstance(c, str) else _fmt(c, nd)

    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _png_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _jpeg_uri(img: np.ndarray, side: int = 128) -> str:
    h, w = img.shape[:2]
    s = side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _score_plot(result: dict[str, Any]) -> str | None:
    """Histogram per recogniser of the native score anonymised-vs-original, both attacker
    modes, with the recogniser's threshold: mass on the "same" side is a privacy leak."""
    plt = _plt()
    names = list(result["recognizers"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.2), squeeze=False)
    drawn = False
    for ax, name in zip(axes[0], names, strict=True):
        info = result["recognizers"][name]
        for mode in MODES:
            vals = [f["scores"].get(mode, {}).get(name) for r in result["images"]
                    for f in r.get("faces", []) if "scores" in f]
            vals = [v for v in vals if v is not None]
            if vals:
                ax.hist(vals, bins=30, alpha=0.55, label=f"{mode} (n={len(vals)})")
                drawn = True
        ax.axvline(info["threshold"], color="k", ls="--", label=f"threshold {info['threshold']}")
        ax.set_title(f"{name}: anonymised vs original ({info['metric']})")
        ax.set_xlabel("cosine similarity" if info["metric"] == "cosine" else "L2 distance")
        ax.legend(fontsize=7)
    return _png_uri(fig) if drawn else None


def _robust_plot(result: dict[str, Any]) -> str | None:
    """Payload survival and recovery PSNR per distortion family, against its level."""
    rob = result.get("robustness") or {}
    if not rob:
        return None
    plt = _plt()
    fams: dict[str, list[tuple[float, dict]]] = {}
    for _name, r in rob.items():
        fams.setdefault(r["family"], []).append((r["level"], r))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for fam, pts in fams.items():
        pts.sort(key=lambda t: t[0])
        xs = list(range(len(pts))) if fam == "metadata" else [p[0] for p in pts]
        axes[0].plot(xs, [p[1]["survival"] or 0 for p in pts], "o-", label=fam)
        axes[1].plot(xs, [p[1]["psnr"]["mean"] or np.nan for p in pts], "o-", label=fam)
    axes[0].set_title("robust payload survival")
    axes[0].set_xlabel("level (quality / factor / % / σ)")
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].set_title("recovery PSNR of the 128 px crop (dB)")
    axes[1].set_xlabel("level")
    for ax in axes:
        ax.set_xscale("symlog")
        ax.legend(fontsize=7)
    return _png_uri(fig)


def _thumbs(result: dict[str, Any], cfg: Any, k: int) -> str:
    from refacex.audit.run import _find
    from refacex.io.images import read_image

    cells = []
    for r in [r for r in result["images"] if "error" not in r][:k]:
        rel = r["rel"]
        sets = [("original", cfg.original / rel)]
        anon_dir = cfg.out / "anonymized" if cfg.run else cfg.anonymized
        sets.append(("anonymised", _find(anon_dir, rel)))
        if cfg.run:
            sets.append(("recovered (vault)", _find(cfg.out / "recovered" / "vault", rel)))
            sets.append(("recovered (robust)", _find(cfg.out / "recovered" / "robust", rel)))
        elif cfg.recovered:
            sets.append(("recovered", _find(cfg.recovered, rel)))
        imgs = []
        for label, p in sets:
            if p is None or not Path(p).is_file():
                continue
            try:
                uri = _jpeg_uri(read_image(p))
            except Exception:  # noqa: BLE001 - a broken thumbnail must not kill the report
                continue
            imgs.append(f'<div><img src="{uri}" alt="{html.escape(label)}" '
                        f'title="{html.escape(label)}">{html.escape(label)}</div>')
        cells.append(f'<div class="cell"><div class="row">{"".join(imgs)}</div>'
                     f"{html.escape(rel)}</div>")
    return f'<div class="grid">{"".join(cells)}</div>'


def render_html(result: dict[str, Any], cfg: Any, n_ok: int | None = None) -> str:
    """The whole report as one HTML string (no external references)."""
    s = result["settings"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>refacex audit</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>refacex audit</h1>",
             f"<p class='note'>created {html.escape(result['created'])}; method "
             f"<b>{html.escape(str(s.get('run') or 'given folder'))}</b>; originals "
             f"{html.escape(str(s.get('original')))}; {result['counts']['ok']} of "
             f"{result['counts']['images']} images audited, {result['counts']['faces']} faces"
             + ("; <b class='bad'>PARTIAL run</b>" if result.get("partial") else "") + "</p>"]
    # privacy
    p = result["privacy"]
    parts.append("<h2>Privacy</h2><p class='note'>Native score of each anonymised face to its "
                 "original; verification = the recogniser's own decision at its threshold, "
                 "against the original and against <i>another</i> photo of the same person "
                 f"(gallery of {p['gallery_size']}, chance rank-1 {_fmt(p['chance_rank1'])}, "
                 f"rank-5 {_fmt(p['chance_rank5'])}). <i>redetect</i>: the attacker detects "
                 "faces anew; <i>known_location</i>: embeds at the original landmarks.</p>")
    rows = []
    for name, r in p["recognizers"].items():
        for mode in MODES:
            m = r[mode]
            rows.append([name, mode, m["score_vs_original"]["mean"],
                         m["score_vs_original"]["median"], m["verified_vs_original"]["rate"],
                         m["verified_vs_gallery"]["rate"], m["rank1"], m["rank5"],
                         m["donor_score"]["mean"], m["verified_as_donor"]["rate"]])
        ref = r["original_reference"]
        rows.append([name, "originals (reference)", None, None, 1.0,
                     ref["verified_vs_gallery"]["rate"], ref["rank1"], ref["rank5"], None, None])
    parts.append(_table(["recogniser", "attacker", "score mean", "score median",
                         "verified vs original", "verified vs gallery", "rank-1", "rank-5",
                         "score vs donor", "verified as donor"], rows))
    drows = [[n, r["diversity"]["pairs"], r["diversity"]["original"],
              r["diversity"]["anonymized"], r["diversity"].get("false_match_rate_original"),
              r["diversity"].get("false_match_rate_anonymized")]
             for n, r in p["recognizers"].items()]
    parts.append("<p class='note'>Diversity: mean native score between faces of different "
                 "people (identity collapse shows as anonymised faces matching each other).</p>")
    parts.append(_table(["recogniser", "pairs", "originals", "anonymised",
                         "false-match rate originals", "false-match rate anonymised"], drows))
    uri = _score_plot(result)
    if uri:
        parts.append(f"<img src='{uri}' alt='score histograms'>")
    # utility
    u = result["utility"]
    rows = [["detection retained (IoU>0.3)", u["detection_retained"]["rate"], None, None,
             u["detection_retained"]["n"]]]
    labels = {"detection_confidence": "detector confidence (anonymised)",
              "nme_pct": "landmark NME (% IOD)", "pose_err_mean_deg": "pose error (mean axis, °)",
              "pose_err_yaw_deg": "|Δyaw| °", "pose_err_pitch_deg": "|Δpitch| °",
              "pose_err_roll_deg": "|Δroll| °", "d_eye_openness": "|Δ eye openness|",
              "d_mouth_openness": "|Δ mouth openness|",
              "expression_shape_dist": "expression shape (Procrustes, /IOD)",
              "light_angle_deg": "lighting direction angle °", "skin_delta_e": "skin ΔE2000",
              "bg_psnr": "background PSNR dB (∞ capped at 100)", "bg_ssim": "background SSIM"}
    for k, label in labels.items():
        st = u.get(k, {})
        rows.append([label, st.get("mean"), st.get("median"), st.get("p95"), st.get("n")])
    parts.append("<h2>Utility</h2><p class='note'>Undetected faces are counted as not "
                 "detected; their landmark, pose and expression numbers come from the "
                 "landmark predictor run at the original face's location.</p>")
    parts.append(_table(["measure", "mean", "median", "p95", "n"], rows))
    # recovery
    rec = result["recovery"]
    if rec:
        rows = []
        for tier, t in rec.items():
            if tier == "robust_status":
                continue
            for where in ("crop128", "image"):
                rows.append([f"{tier} / {where}", t[where]["psnr"]["mean"],
                             t[where]["ssim"]["mean"], t[where]["lpips"]["mean"],
                             t[where]["psnr"]["n"]])
        parts.append("<h2>Recovery</h2>")
        parts.append(_table(["tier / region", "PSNR dB", "SSIM", "LPIPS", "n"], rows))
        if "robust_status" in rec:
            parts.append(f"<p class='note'>robust tier: {html.escape(str(rec['robust_status']))}"
                         "</p>")
    # robustness
    if result.get("robustness"):
        rows = [[n, r["n"], r["survival"], r["decrypt"], r["psnr"]["mean"], r["ssim"]["mean"],
                 r.get("crashes", 0)] for n, r in result["robustness"].items()]
        parts.append("<h2>Robustness</h2><p class='note'>Each distortion of "
                     "<code>refacex/audit/distortions.py</code> applied to the anonymised file; "
                     "survival = the robust payload is found, decrypt = it opens with the key; "
                     "PSNR/SSIM of the recovered 128 px face crop.</p>")
        parts.append(_table(["distortion", "n", "payload survival", "decrypt", "PSNR dB",
                             "SSIM", "extractor crashes"], rows))
        uri = _robust_plot(result)
        if uri:
            parts.append(f"<img src='{uri}' alt='robustness curves'>")
    # realism
    rl = result.get("realism")
    if rl:
        parts.append("<h2>Realism</h2><p class='note'>FID and KID of the anonymised faces "
                     "against the original faces: InceptionV3 <code>pool3</code> features "
                     "(the StyleGAN FID tool's network) of the aligned "
                     f"{rl['crop'][0]} px crop (padding {rl['crop'][1]}) at the original "
                     "landmarks in both images. 0 = indistinguishable to the network; "
                     "higher = less realistic. FID is biased upwards for small n (compare "
                     "methods at the same n only); KID is unbiased ("
                     + ("paired form, " if rl.get("kid_paired") else "")
                     + f"mean over {rl.get('kid_subsets') or '–'} subsets of "
                     f"{rl.get('kid_subset_size') or '–'}; std = spread over subsets of "
                     f"{rl.get('kid_std_subset_size') or '–'}).</p>")
        parts.append(_table(["faces (anonymised / original)", "FID", "KID", "KID std",
                             "ms per crop"],
                            [[f"{rl['n_fake']} / {rl['n_real']}", _fmt(rl["fid"], 2),
                              _fmt(rl["kid"], 4), _fmt(rl["kid_std"], 4),
                              _fmt(rl.get("ms_per_crop"), 0)]]))
    # speed
    sp = result["speed_ms"]
    rows = [[k, v["mean"], v["median"], v["p95"], v["n"]] for k, v in sp.items()]
    run = result["run"]
    parts.append("<h2>Speed</h2>")
    parts.append(_table(["stage (ms)", "mean", "median", "p95", "n"], rows, nd=1))
    parts.append(f"<p class='note'>{_fmt(run['images_per_s'])} images/s (audit incl. "
                 f"anonymise + recover), peak RSS {run['peak_rss_mb']:.0f} MB, "
                 f"{html.escape(run['cpu'])}, {run['cores']} cores; {run['computed']} computed, "
                 f"{run['cache_hits']} from cache.</p>")
    # images
    k = getattr(cfg, "thumbnails", 8)
    if k:
        parts.append("<h2>Examples</h2>")
        parts.append(_thumbs(result, cfg, k))
    if result.get("errors"):
        rows = [[k, v] for k, v in list(result["errors"].items())[:50]]
        parts.append("<h2>Errors</h2>" + _table(["image", "error"], rows))
    parts.append("</body></html>")
    return "\n".join(parts)
