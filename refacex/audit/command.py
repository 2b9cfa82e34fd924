"""``refacex audit``: the command-line face of :mod:`refacex.audit.run`.

Kept in its own module (imported by ``refacex.cli``) with every heavy import inside the
function body, so that ``refacex --help`` does not pay for numpy/OpenCV/matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def audit(
    videos: Annotated[list[Path] | None, typer.Argument(
        help="A video pair: ORIGINAL.mp4 ANONYMISED.mp4 [RECOVERED.mp4] (instead of the "
             "folder options).", show_default=False)] = None,
    original: Annotated[Path | None, typer.Option(
        help="Folder of original images (or an original video, with --anonymized "
             "VIDEO).")] = None,
    anonymized: Annotated[Path | None, typer.Option(
        help="Folder of anonymised images (paired by relative path, any suffix).")] = None,
    recovered: Annotated[Path | None, typer.Option(
        help="Folder of recovered images (paired like --anonymized).")] = None,
    gallery: Annotated[Path | None, typer.Option(
        help="Gallery folder, identity = parent folder (default: one other photo per "
             "person found next to each original).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("audit-out"),
    run: Annotated[str | None, typer.Option(
        "--run", help="Anonymise the originals with this method (blur, pixelate, mask, "
                      "swap) into OUT, with a fresh key pair, and recover them.")] = None,
    robustness: Annotated[bool, typer.Option(
        "--robustness", help="Distortion suite on the first --robust-limit images "
                             "(needs --run or --key).")] = False,
    robust_limit: Annotated[int, typer.Option(min=1, help="Images for --robustness.")] = 20,
    distortions: Annotated[str | None, typer.Option(
        help="Comma-separated subset of the distortion suite (default: all; see "
             "refacex/audit/distortions.py).")] = None,
    key: Annotated[Path | None, typer.Option(
        help="Private key (refacex.key) for recovery/robustness; a protected key reads "
             "its passphrase from $REFACEX_KEY_PASSPHRASE.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Audit only the first N images.")]
        = None,
    feature_cache: Annotated[Path | None, typer.Option(
        help="Share the original/gallery analysis cache between audits.")] = None,
    max_seconds: Annotated[float | None, typer.Option(
        help="Stop starting new images after this many seconds (partial report; "
             "a rerun continues from the cache).")] = None,
    realism: Annotated[bool, typer.Option(
        "--realism", help="FID/KID of the anonymised face crops against the originals "
                          "(Inception features, ~0.2-1 s per face; its 87 MB weights are "
                          "fetched on first use).")] = False,
    realism_limit: Annotated[int | None, typer.Option(
        min=2, help="--realism on the first N audited images only.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print audit.json's aggregates.")]
        = False,
) -> None:
    """Audit privacy, utility, recovery, robustness, realism and speed (OUT/audit.json,
    report.html); for a video pair: unprotected frames, flicker, identity consistency
    and the per-face measures on sampled frames (OUT/video_audit.json, report.html).

    Privacy is measured with every registered recogniser and two attackers (re-detecting,
    and knowing the face location); the HTML report is self-contained (opens offline).
    """
    from refacex.audit.run import AuditConfig, dumps, run_audit, summary_table
    from refacex.io.video import looks_like_video

    if videos:
        if original is not None or anonymized is not None or len(videos) not in (2, 3):
            raise typer.BadParameter("give ORIGINAL.mp4 ANONYMISED.mp4 [RECOVERED.mp4], "
                                     "or the folder options, not both")
        original, anonymized = videos[0], videos[1]
        recovered = videos[2] if len(videos) == 3 else recovered
    if original is None:
        raise typer.BadParameter("give --original FOLDER (images) or a video pair")
    if looks_like_video(original):
        _audit_video(original, anonymized, recovered, out, as_json)
        return

    if run is not None:
        from refacex.anonymize import METHODS

        if run not in METHODS:
            raise typer.BadParameter(f"unknown method {run!r}; choose from {', '.join(METHODS)}")
    cfg = AuditConfig(original=original, out=out, anonymized=anonymized, recovered=recovered,
                      gallery=gallery, run=run, key=key, robustness=robustness,
                      robust_limit=robust_limit, limit=limit,
                      distortions=distortions.split(",") if distortions else None,
                      feature_cache=feature_cache,
                      max_seconds=max_seconds, progress=not as_json,
                      realism=realism, realism_limit=realism_limit)
    result = run_audit(cfg)
    if as_json:
        slim = {k: v for k, v in result.items() if k not in ("images", "robustness_images")}
        typer.echo(dumps(slim))
    else:
        typer.echo(summary_table(result))
        typer.echo(f"wrote {out / 'audit.json'} and {out / 'report.html'}")
    if result["errors"]:
        # Like every other command: each unreadable file is one line on stderr and the
        # exit code says the audit is incomplete (its numbers exclude those files). Written
        # here, not through refacex.cli, which imports this module (no import circle).
        for msg in result["errors"].values():
            typer.echo(f"refacex: error: {msg}", err=True)
        raise typer.Exit(2)


def _audit_video(original: Path, anonymized: Path | None, recovered: Path | None, out: Path,
                 as_json: bool) -> None:
    """``refacex audit ORIGINAL.mp4 ANONYMISED.mp4``: ``audit/video.py``."""
    from refacex.audit.run import dumps
    from refacex.audit.video import audit_video
    from refacex.errors import RefacexError

    if anonymized is None:
        raise typer.BadParameter("a video audit needs the anonymised video too")
    try:
        result = audit_video(original, anonymized, out, recovered, progress=not as_json)
    except RefacexError as exc:
        typer.echo(f"refacex: error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(dumps(result))
        return
    un, ic = result["unprotected_frames"], result["identity_consistency"]
    typer.echo(f"{result['counts']['frames']} frames, {result['counts']['faces']} faces in "
               f"{result['counts']['tracks']} tracks; unprotected frames: {un['redetect']} "
               f"(re-detecting attacker), {un['known_location']} (known location), "
               f"{sum(result['unprotected_plausible_frames'].values())} more with a merely "
               f"plausible face; flicker "
               f"{_num(result['flicker_ratio'])}; identity consistency "
               f"{_num(ic['anonymised'])} (original {_num(ic['original'])})")
    typer.echo(f"wrote {out / 'video_audit.json'} and {out / 'report.html'}")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
