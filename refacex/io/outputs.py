"""Where a run's outputs go, decided for all files before any is written.

Deciding per file as the run goes cannot see that ``photo.jpg`` converted to PNG lands
on the input ``photo.png``, or that ``a/x.jpg`` and ``b/x.jpg`` both become ``OUT/x.jpg``:
the second write would silently destroy an input or an earlier output. ``plan_outputs``
computes every destination first and refuses the whole run, naming the files involved,
if any two meet. Paths are compared resolved and case-folded, because on macOS and
Windows ``x.jpg`` and ``x.JPG`` are one file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from refacex.errors import OutputError


def _key(path: Path) -> str:
    """Identity used for collisions: the resolved path, case-folded (see the module doc)."""
    return str(path.resolve()).casefold()


def _same_file_id(path: Path) -> tuple[int, int] | str:
    """Identity used to drop an input given twice (also via a symlink or another spelling)."""
    try:
        st = path.stat()
    except OSError:
        return _key(path)
    return (st.st_dev, st.st_ino)


def plan_outputs(
    files: Iterable[tuple[Path, Path]],
    outdir: Path,
    suffix_for: Callable[[Path], str],
    extras: Callable[[Path], Iterable[Path]] = lambda dest: (),
    protected: Callable[[Path], Iterable[Path]] = lambda src: (),
    also: Sequence[Path] = (),
) -> list[tuple[Path, Path]]:
    """Return ``(input, destination)`` pairs, or raise ``OutputError`` before anything is written.

    ``files`` are ``(input, relative path)`` pairs (``iter_images``); the destination is
    ``outdir / relative`` with the suffix ``suffix_for(relative)``. ``extras(dest)`` are
    further files written with a destination (a ``.refacex`` sidecar); ``protected(src)``
    are files that belong to an input (its sidecar); ``also`` are single files the run
    writes (a rename map). None of these may be an input or be written twice. An input
    given twice is processed once.
    """
    plan: list[tuple[Path, Path]] = []
    seen: set[tuple[int, int] | str] = set()
    for src, rel in files:
        ident = _same_file_id(src)
        if ident not in seen:
            seen.add(ident)
            plan.append((src, (outdir / rel).with_suffix(suffix_for(rel))))
    inputs: dict[str, Path] = {}
    for src, _dest in plan:
        inputs[_key(src)] = src
        for p in protected(src):
            if p.exists():
                inputs.setdefault(_key(p), p)
    writers: dict[str, Path] = {}  # output key -> the input whose output it is

    def claim(path: Path, src: Path | None) -> None:
        k = _key(path)
        if k in inputs:
            owner = f" (output of {src})" if src is not None else ""
            raise OutputError(f"{path}: would overwrite the input {inputs[k]}{owner}; "
                              "choose another --out folder")
        if k in writers:
            other = writers[k]
            raise OutputError(f"{path}: both {other} and {src} would be written here; "
                              "rename one or process them in separate runs")
        writers[k] = src if src is not None else path

    for src, dest in plan:
        claim(dest, src)
        for extra in extras(dest):
            claim(extra, src)
    for path in also:
        claim(path, None)
    return plan


def hashed_names(files: Iterable[tuple[Path, Path]], key: bytes) -> list[tuple[Path, Path]]:
    """Replace each relative path by ``<16 hex><suffix>`` in one flat folder (``--rename``).

    File and folder names often identify the person (``Jane_Doe_birthday.jpg``), which
    defeats anonymising the pixels. The name is HMAC-SHA256 of the input's resolved path
    under ``key``: without the key it reveals nothing and cannot be reversed; with a
    random per-run key, names of the same photo differ between runs (not linkable).
    """
    out = []
    for src, rel in files:
        digest = hmac.new(key, os.fsencode(src.resolve()), hashlib.sha256).hexdigest()
        out.append((src, Path(digest[:16] + rel.suffix.lower())))
    return out
