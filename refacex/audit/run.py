"""The audit engine: stream image pairs, measure, cache, aggregate.

Design (why it looks like this):

* **Streaming.** Images are read one at a time; only small per-image records (numbers
  plus a few 128-d embeddings) stay in memory, so a folder of 10,000 images needs about
  what a folder of 100 does. Set-level numbers (re-identification against a gallery,
  diversity) are computed from those records at the end.
* **Resumable.** Each image's record is written to ``OUT/cache/records/`` under a key
  made of its relative path, the sizes and mtimes of the files involved and the audit
  settings; a rerun loads it instead of recomputing. Original and gallery analyses are
  cached per file under ``OUT/cache/features/`` (or a shared ``feature_cache``) because
  they do not depend on the method.
* **Self-producing.** With ``run=METHOD`` the engine anonymises the originals itself
  (fresh key pair in ``OUT/keys``, reused on reruns), writes ``OUT/anonymized`` (PNG:
  lossless, carries the vault), recovers from the vault and, after a JPEG-75 re-encode
  that strips the vault, from the robust tier — so recovery is measured per tier and
  donor ids are known for the donor-leakage check.

``audit.json`` (schema ``refacex-audit/1``), top-level keys:

* ``schema``, ``created``, ``settings`` (the config + recognisers + crop), ``partial``
  (true when ``max_seconds`` stopped the run early: aggregates cover ``counts.ok``);
* ``recognizers``: per recogniser its ``metric``, ``threshold`` and native score unit;
* ``counts``: images, ok, errors, faces, primary_faces, with_gallery_identity;
* ``privacy``: ``gallery_size``, ``chance_rank1/5``, and per recogniser, per attacker mode
  (``redetect``, ``known_location``): ``score_vs_original`` (stats), ``verified_vs_original``
  / ``verified_vs_gallery`` ({n, rate}), ``rank1``, ``rank5``, ``n_probes``,
  ``donor_score``, ``verified_as_donor``; plus ``original_reference`` and ``diversity``;
* ``utility``: ``detection_retained`` ({n, rate}), ``detection_confidence``, ``nme_pct``,
  ``pose_err_{mean,yaw,pitch,roll}_deg``, ``d_eye_openness``, ``d_mouth_openness``,
  ``expression_shape_dist``, ``light_angle_deg``, ``skin_delta_e``, ``bg_psnr``,
  ``bg_ssim`` (each {n, mean, median, p95, min, max});
* ``recovery``: per tier (``vault``, ``robust``, or ``given``) ``crop128`` and ``image``
  PSNR/SSIM/LPIPS stats, ``exact`` / ``exact_crop`` rates; ``robust_status`` counts;
* ``robustness``: per distortion ``family``, ``level``, ``n``, ``survival``, ``decrypt``,
  ``psnr``, ``ssim``; ``robustness_images``: the per-image distortion results;
* ``realism`` (with ``realism=True``, else null): FID and KID of the anonymised faces'
  aligned crops against the original faces' crops (``refacex.audit.realism``):
  ``n_real``, ``n_fake``, ``fid``, ``kid``, ``kid_std``, ``kid_subsets``,
  ``kid_subset_size``, ``crop``, ``images``, ``ms_per_crop`` (features of the crops
  computed in this run: alignment, resize, network);
* ``speed_ms``: per stage stats (detect, align, anonymize, vault, robust, recover_vault,
  recover_robust, audit_total); ``run``: wall_s, images_per_s, peak_rss_mb, computed,
  cache_hits, cpu, cores;
* ``images``: the per-image records (every number; embeddings removed); ``errors``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refacex.audit import privacy, utility
from refacex.errors import RefacexError
from refacex.faces import Face
from refacex.io.images import IMAGE_SUFFIXES, read_image, write_bytes_atomic

SCHEMA = "refacex-audit/1"
#: PSNR of identical images is inf; aggregates clip to this so means stay finite.
PSNR_CAP_DB = 100.0
RECOVERY_CROP = 128
RECOVERY_PADDING = 0.25


@dataclass
class AuditConfig:
    """Everything that decides what an audit computes (part of the cache key)."""

    original: Path
    out: Path
    anonymized: Path | None = None
    recovered: Path | None = None
    gallery: Path | None = None
    run: str | None = None
    key: Path | None = None
    robustness: bool = False
    robust_limit: int = 20
    distortions: list[str] | None = None  # subset of audit.distortions (default: all)
    limit: int | None = None
    files: list[str] | None = None  # explicit relative paths (overrides the folder walk)
    feature_cache: Path | None = None
    max_seconds: float | None = None  # stop starting new images after this (partial)
    thumbnails: int = 8
    progress: bool = True
    # FID/KID of the face crops (Inception features: ~0.2-1 s per face on a CPU, weights
    # fetched on first use), on the first ``realism_limit`` audited images (None: all)
    realism: bool = False
    realism_limit: int | None = None

    def settings(self) -> dict[str, Any]:
        """The parts of the config that change per-image numbers."""
        return {"schema": SCHEMA, "run": self.run,
                "recognizers": privacy.recognizer_names(),
                "crop": [RECOVERY_CROP, RECOVERY_PADDING]}


# ----------------------------------------------------------------------- small helpers
def stats(values: Iterable[float | None]) -> dict[str, Any]:
    """n / mean / median / p95 / min / max of the finite-or-capped values (None skipped;
    +inf, i.e. PSNR of identical images, is clipped to ``PSNR_CAP_DB``)."""
    v = np.array([PSNR_CAP_DB if np.isposinf(_num(x)) else _num(x) for x in values
                  if x is not None and not np.isnan(_num(x))], np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "median": None, "p95": None}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "p95": float(np.percentile(v, 95)), "min": float(v.min()), "max": float(v.max())}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _clean(o: Any) -> Any:
    """inf/nan -> strings/None so audit.json is strict JSON (browsers parse it)."""
    if isinstance(o, float):
        if o == float("inf"):
            return "inf"
        if o != o:
            return None
        return o
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o


def dumps(o: Any) -> str:
    return json.dumps(_clean(o), default=_json_default, indent=1)


def _find(folder: Path | None, rel: str) -> Path | None:
    """The file for ``rel`` in ``folder``, allowing another suffix (anonymised JPEG ->
    PNG, recovered as PNG): pairing is by relative path without suffix."""
    if folder is None:
        return None
    p = folder / rel
    if p.is_file():
        return p
    stem = p.with_suffix("")
    for suf in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
        q = stem.with_suffix(suf)
        if q.is_file():
            return q
    return None


def _fstamp(p: Path | None) -> str:
    if p is None or not p.exists():
        return "-"
    st = p.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def list_originals(cfg: AuditConfig) -> list[str]:
    """Relative paths (POSIX) of the original images to audit, sorted, limited."""
    if cfg.files is not None:
        rels = list(cfg.files)
    else:
        rels = sorted(p.relative_to(cfg.original).as_posix() for p in cfg.original.rglob("*")
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return rels[: cfg.limit] if cfg.limit else rels


def identity_of(rel: str) -> str | None:
    """LFW convention: the identity is the parent folder (NAME/NAME_000N.jpg)."""
    parent = Path(rel).parent.as_posix()
    return None if parent in ("", ".") else parent


def default_gallery(cfg: AuditConfig, rels: list[str]) -> dict[str, Path]:
    """One *other* photo per person of the evaluated set: for each identity, the last
    image (sorted) in the same folder of ``--original`` that is not that identity's
    first probe. Identities with a single photo get no gallery entry; a probe that *is*
    its identity's gallery photo is left out of the gallery metrics (``gallery_is_self``)."""
    out: dict[str, Path] = {}
    for rel in rels:
        ident = identity_of(rel)
        if ident is None or ident in out:
            continue
        others = sorted(p for p in (cfg.original / ident).iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                        and p.name != Path(rel).name)
        if others:
            out[ident] = others[-1]
    return out


def folder_gallery(folder: Path) -> dict[str, Path]:
    """``--gallery DIR``: identity = parent folder; the first photo per identity."""
    out: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            ident = p.relative_to(folder).parent.as_posix()
            if ident not in ("", ".") and ident not in out:
                out[ident] = p
    return out


# ----------------------------------------------------------------------- per image
def compare_images(a: np.ndarray, b: np.ndarray, lpips: Any = None) -> dict[str, Any]:
    """PSNR / SSIM / LPIPS of two same-size images; identical inputs short-cut to
    (inf, 1, 0) — exact vault recovery is the common case and LPIPS is the slow part."""
    from refacex.audit.metrics import psnr, ssim

    if a.shape != b.shape:
        return {"error": "size differs"}
    if np.array_equal(a, b):
        return {"psnr": float("inf"), "ssim": 1.0, "lpips": 0.0, "exact": True}
    if lpips is None:
        from refacex.audit.lpips import default_lpips

        lpips = default_lpips()
    return {"psnr": psnr(a, b), "ssim": ssim(a, b), "lpips": lpips.distance(a, b),
            "exact": False}


class Auditor:
    """Holds the models, keys and caches for one audit run; ``image(rel)`` -> record."""

    def __init__(self, cfg: AuditConfig) -> None:
        from refacex.faces import FaceAnalyzer

        self.cfg = cfg
        self.names = privacy.recognizer_names()
        self.analyzer = FaceAnalyzer()  # the standard 0.6 operating point
        self.features = privacy.FeatureCache(cfg.feature_cache or cfg.out / "cache" / "features")
        self.records_dir = cfg.out / "cache" / "records"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.seal = self.open = None
        if cfg.run or cfg.key:
            self.seal, self.open = self._keys()
        self._lpips = None

    def _keys(self) -> tuple[Any, Any]:
        from refacex.payload.keyring import OpenKeys, SealKeys
        from refacex.payload.keys import generate_keypair, load_private_key
        from refacex.payload.sitekeys import SiteKey, generate_site_key, load_site_key

        if self.cfg.key is not None:
            # The audit anonymises itself: it signs with a throwaway site key it trusts.
            pw = os.environ.get("REFACEX_KEY_PASSPHRASE")
            priv = load_private_key(self.cfg.key, pw.encode() if pw else None)
            site = SiteKey.generate()
            return (SealKeys(recipients=[priv.public_key()], site=site),
                    OpenKeys(private_key=priv, trusted=[site.public]))
        kdir = self.cfg.out / "keys"
        if not (kdir / "refacex.key").is_file():
            generate_keypair(kdir, None)
        if not (kdir / "site.key").is_file():
            generate_site_key(kdir)
        priv = load_private_key(kdir / "refacex.key", None)
        site = load_site_key(kdir / "site.key")
        return (SealKeys(recipients=[priv.public_key()], site=site),
                OpenKeys(private_key=priv, trusted=[site.public]))

    @property
    def lpips(self):
        if self._lpips is None:
            from refacex.audit.lpips import default_lpips

            self._lpips = default_lpips()
        return self._lpips

    # -- original / gallery analysis (method-independent, cached per file) --------
    def analyze_original(self, path: Path, img: np.ndarray | None = None) -> list[Face]:
        def compute() -> dict[str, Any]:
            im = read_image(path) if img is None else img
            faces = self.analyzer.analyze(im, landmarks=True, pose=True, recognizers=self.names)
            return {"shape": list(im.shape[:2]), "faces": [privacy.face_to_json(f) for f in faces]}

        d = self.features.get(path, self.names, compute)
        return [privacy.face_from_json(f) for f in d["faces"]]

    def gallery_embedding(self, path: Path) -> dict[str, list[float]] | None:
        def compute() -> dict[str, Any]:
            im = read_image(path)
            faces = self.analyzer.analyze(im, landmarks=True, pose=True, recognizers=self.names)
            return {"shape": list(im.shape[:2]), "faces": [privacy.face_to_json(f) for f in faces]}

        try:
            d = self.features.get(path, self.names, compute)
        except RefacexError:
            return None
        faces = [privacy.face_from_json(f) for f in d["faces"]]
        i = privacy.primary_index(faces, tuple(d["shape"]))
        if i is None:
            return None
        return {k: v.tolist() for k, v in faces[i].embeddings.items()}

    # -- cache ------------------------------------------------------------------
    def record_key(self, rel: str) -> str:
        c = self.cfg
        parts = [rel, _fstamp(c.original / rel), json.dumps(c.settings(), sort_keys=True)]
        if not c.run:
            parts += [_fstamp(_find(c.anonymized, rel)), _fstamp(_find(c.recovered, rel))]
        return hashlib.sha1("|".join(parts).encode()).hexdigest()

    def cached(self, rel: str) -> dict[str, Any] | None:
        p = self.records_dir / f"{self.record_key(rel)}.json"
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def store(self, rel: str, rec: dict[str, Any]) -> None:
        write_bytes_atomic(self.records_dir / f"{self.record_key(rel)}.json",
                           json.dumps(_clean(rec), default=_json_default).encode())

    # -- producing the anonymised / recovered images ---------------------------------
    def produce(self, rel: str, orig: np.ndarray, rec: dict[str, Any]
                ) -> tuple[np.ndarray, dict[str, np.ndarray], list[tuple[np.ndarray, str]]]:
        """Anonymise with ``cfg.run`` and recover; returns (anonymised, {tier: recovered},
        [(edited face box, donor id)])."""
        from refacex.io.images import decode_image, encode_image, write_image
        from refacex.pipeline import anonymize, encode_output
        from refacex.recover import recover

        out = self.cfg.out
        res = anonymize(orig, self.seal, method=self.cfg.run)
        rec["timings_ms"] = dict(res.timings_ms)
        rec["robust_bytes"] = res.robust_bytes
        rec["robust_faces"] = res.robust_faces
        data = encode_output(res, ".png")
        anon_path = (out / "anonymized" / rel).with_suffix(".png")
        write_bytes_atomic(anon_path, data)
        recovered: dict[str, np.ndarray] = {}
        t0 = time.perf_counter()
        r = recover(data, self.open)
        rec["timings_ms"]["recover_vault"] = (time.perf_counter() - t0) * 1e3
        recovered[r.tier] = r.image
        write_image((out / "recovered" / "vault" / rel).with_suffix(".png"), r.image)
        # A sharing platform re-encodes and strips metadata: only the robust tier is left.
        if res.robust_bytes:
            t0 = time.perf_counter()
            try:
                rr = recover(encode_image(res.image, ".jpg", 75), self.open)
                recovered["robust"] = rr.image
                write_image((out / "recovered" / "robust" / rel).with_suffix(".png"), rr.image)
                rec["robust_status"] = "recovered"
            except RefacexError as exc:
                rec["robust_status"] = f"failed: {exc}"
            except Exception as exc:  # noqa: BLE001 - report a crashing extractor, go on
                rec["robust_status"] = f"crash: {type(exc).__name__}"
            rec["timings_ms"]["recover_robust"] = (time.perf_counter() - t0) * 1e3
        else:
            rec["robust_status"] = "not-embedded (image too small for the robust tier)"
        anon = decode_image(data)
        edited = [(np.asarray(f.box, np.float32), f.donor) for f in res.faces
                  if f.status == "anonymized"]
        return anon, recovered, edited

    def image(self, rel: str) -> dict[str, Any]:
        """Measure one image (see the module doc for what is measured)."""
        from refacex.faces.align import warp_face

        c = self.cfg
        t_start = time.perf_counter()
        rec: dict[str, Any] = {"rel": rel, "identity": identity_of(rel), "faces": []}
        opath = c.original / rel
        orig = read_image(opath)
        ofaces = self.analyze_original(opath, orig)
        rec["n_faces"] = len(ofaces)
        prim = privacy.primary_index(ofaces, orig.shape[:2])
        donors: list[tuple[np.ndarray, str]] = []
        recovered: dict[str, np.ndarray] = {}
        if c.run:
            try:
                anon, recovered, donors = self.produce(rel, orig, rec)
            except RefacexError as exc:  # e.g. no face for the pipeline's detector
                rec["error"] = str(exc)
                return rec
        else:
            ap = _find(c.anonymized, rel)
            if ap is None:
                rec["error"] = "no anonymised file"
                return rec
            anon = read_image(ap)
            rp = _find(c.recovered, rel)
            if rp is not None:
                recovered["given"] = read_image(rp)
        if anon.shape != orig.shape:
            rec["error"] = f"anonymised image size {anon.shape} differs from original {orig.shape}"
            return rec
        found = self.analyzer.detector.detect(anon)
        for i, of in enumerate(ofaces):
            frec: dict[str, Any] = {"index": i, "primary": i == prim,
                                    "box": [round(float(v), 1) for v in of.box],
                                    "orig_score": float(of.score),
                                    "orig_embeddings": {k: v.tolist()
                                                        for k, v in of.embeddings.items()},
                                    "anon_embeddings": {}}
            match, ov = utility.match_detection(of, found)
            frec["detected"] = match is not None
            frec["det_iou"] = ov
            frec["det_score"] = float(match.score) if match is not None else None
            if match is not None:
                self.analyzer.describe(anon, match, landmarks=True, pose=False,
                                       recognizers=self.names)
                frec["anon_embeddings"]["redetect"] = {k: v.tolist()
                                                       for k, v in match.embeddings.items()}
                anon_lm = match.landmarks
            else:
                anon_lm = self.analyzer.landmarker.predict(anon, privacy.copy_face(of, False))
            known = privacy.copy_face(of, landmarks=True)
            frec["anon_embeddings"]["known_location"] = {
                k: v.tolist() for k, v in privacy.embed_all(anon, known, self.names).items()}
            # native scores, handy per image (aggregates recompute from embeddings)
            frec["scores"] = {}
            for mode, embs in frec["anon_embeddings"].items():
                frec["scores"][mode] = {
                    k: privacy.get_recognizer(k).score(np.asarray(v), of.embeddings[k])
                    for k, v in embs.items()}
            donor = None
            for box, did in donors:
                if did is not None and utility.iou(of.box, box) > utility.IOU_MATCH:
                    donor = did
            frec["donor"] = donor
            if donor is not None:
                de = privacy.donor_embeddings(donor, self.names)
                if de is not None:
                    frec["donor_embeddings"] = {k: v.tolist() for k, v in de.items()}
            if of.landmarks is not None:
                frec["utility"] = utility.face_utility(orig, anon, of, anon_lm)
            # recovery on the aligned crop, per tier
            frec["recovery"] = {}
            oc = warp_face(orig, of.kps, RECOVERY_CROP, RECOVERY_PADDING).crop
            for tier, rimg in recovered.items():
                rc = warp_face(rimg, of.kps, RECOVERY_CROP, RECOVERY_PADDING).crop
                frec["recovery"][tier] = self.compare(oc, rc)
            rec["faces"].append(frec)
        rec["background"] = utility.background_fidelity(orig, anon, ofaces)
        rec["recovery_image"] = {tier: self.compare(orig, rimg, whole=True)
                                 for tier, rimg in recovered.items()}
        rec["timings_ms"] = {**rec.get("timings_ms", {}),
                             "audit_total": (time.perf_counter() - t_start) * 1e3}
        return rec

    def compare(self, a: np.ndarray, b: np.ndarray, whole: bool = False) -> dict[str, Any]:
        return compare_images(a, b, self.lpips)

    # -- robustness -----------------------------------------------------------------
    def robustness(self, rel: str) -> dict[str, Any]:
        """Every distortion of ``audit.distortions`` on one anonymised file: does the
        robust payload survive, does it decrypt, how close is the recovered face."""
        from refacex.audit.distortions import DISTORTIONS
        from refacex.audit.metrics import psnr, ssim
        from refacex.errors import NoPayloadError, WrongKeyError
        from refacex.faces.align import warp_face
        from refacex.io.images import decode_image
        from refacex.recover import recover

        subset = ",".join(self.cfg.distortions or ["all"])
        key = hashlib.sha1(f"robust|{subset}|{self.record_key(rel)}".encode()).hexdigest()
        cp = self.records_dir / f"{key}.json"
        if cp.is_file():
            return json.loads(cp.read_text())
        ap = _find(self.cfg.out / "anonymized", rel) if self.cfg.run else _find(
            self.cfg.anonymized, rel)
        if ap is None:
            return {"rel": rel, "error": "no anonymised file"}
        orig = read_image(self.cfg.original / rel)
        ofaces = self.analyze_original(self.cfg.original / rel, orig)
        data = ap.read_bytes()
        anon = decode_image(data)
        out: dict[str, Any] = {"rel": rel, "distortions": {}}
        wanted = self.cfg.distortions
        for d in DISTORTIONS:
            if wanted is not None and d.name not in wanted:
                continue
            blob, m = d.fn(anon, data)
            r: dict[str, Any] = {"survived": False, "decrypted": False}
            try:
                res = recover(blob, self.open)
                r.update(survived=True, decrypted=True, tier=res.tier)
                img = res.image
                ps, ss = [], []
                for f in ofaces:
                    kps = f.kps.astype(np.float64) @ m[:, :2].T + m[:, 2]
                    oc = warp_face(orig, f.kps, RECOVERY_CROP, RECOVERY_PADDING).crop
                    rc = warp_face(img, kps.astype(np.float32), RECOVERY_CROP,
                                   RECOVERY_PADDING).crop
                    ps.append(min(psnr(oc, rc), PSNR_CAP_DB))
                    ss.append(ssim(oc, rc))
                r["psnr"] = float(np.mean(ps)) if ps else None
                r["ssim"] = float(np.mean(ss)) if ss else None
            except NoPayloadError:
                pass
            except WrongKeyError:
                r["survived"] = True
            except RefacexError as exc:
                r["survived"] = "robust payload" not in str(exc)
                r["error"] = str(exc)[:200]
            except Exception as exc:  # noqa: BLE001 - a crashing extractor is a finding
                r["error"] = f"crash in recover: {type(exc).__name__}: {str(exc)[:160]}"
            out["distortions"][d.name] = r
        write_bytes_atomic(cp, json.dumps(_clean(out), default=_json_default).encode())
        return out


    # -- realism ----------------------------------------------------------------------
    def realism_features(self, rel: str) -> tuple[np.ndarray, np.ndarray, float, int] | None:
        """Inception features of every face's aligned crop in the original and in the
        anonymised image, both cut at the original landmarks (so only pixels differ), the
        seconds spent and the crops computed; None when the anonymised image is missing.

        Cached per record (``cache/records/realism-KEY.npz``); the originals' features
        also per file in the feature cache, shared by the audits of all methods."""
        from refacex.audit import realism
        from refacex.audit.inception import CONVERTER_VERSION

        cp = self.records_dir / f"realism-{self.record_key(rel)}.npz"
        if cp.is_file():
            with np.load(cp) as z:
                return z["orig"], z["anon"], 0.0, 0
        ap = _find(self.cfg.out / "anonymized", rel) if self.cfg.run else _find(
            self.cfg.anonymized, rel)
        if ap is None:
            return None
        opath = self.cfg.original / rel
        orig, anon = read_image(opath), read_image(ap)
        if orig.shape != anon.shape:
            return None
        kps = [f.kps for f in self.analyze_original(opath, orig)]
        t0 = time.perf_counter()
        of = oc = None
        n = len(kps)
        if self.features.root is not None:
            key = hashlib.sha1(f"{opath.resolve()}|{_fstamp(opath)}|{realism.CROP_SIZE}|"
                               f"{realism.CROP_PADDING}|{CONVERTER_VERSION}|{len(kps)}"
                               .encode()).hexdigest()
            oc = self.features.root / "realism" / f"{key}.npy"
            if oc.is_file():
                of = np.load(oc)
        if of is None:
            n += len(kps)
            of = realism.features(realism.face_crops(orig, kps))
            if oc is not None:
                _save_npy(oc, of)
        af = realism.features(realism.face_crops(anon, kps))
        dt = time.perf_counter() - t0
        buf = io.BytesIO()
        np.savez(buf, orig=of, anon=af)
        write_bytes_atomic(cp, buf.getvalue())
        return of, af, dt, n


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    write_bytes_atomic(path, buf.getvalue())


def realism_section(aud: Auditor, records: list[dict[str, Any]], progress: bool = False
                    ) -> dict[str, Any]:
    """FID/KID of all faces of the audited images (the first ``realism_limit``)."""
    from tqdm import tqdm

    from refacex.audit import realism

    rels = [r["rel"] for r in records if "error" not in r and r.get("faces")]
    rels = rels[: aud.cfg.realism_limit] if aud.cfg.realism_limit else rels
    real, fake, secs, n_crops = [], [], 0.0, 0
    for rel in tqdm(rels, desc="realism", unit="img", disable=not progress, mininterval=2.0):
        got = aud.realism_features(rel)
        if got is None:
            continue
        real.append(got[0])
        fake.append(got[1])
        secs += got[2]
        n_crops += got[3]
    dim = realism.FEATURE_DIM
    out = realism.summarize(np.concatenate(real) if real else np.zeros((0, dim)),
                            np.concatenate(fake) if fake else np.zeros((0, dim)))
    out.update(crop=[realism.CROP_SIZE, realism.CROP_PADDING], images=len(real),
               ms_per_crop=secs * 1e3 / n_crops if n_crops else None)
    return out


# ----------------------------------------------------------------------- aggregation
def _rate(vals: list[bool]) -> dict[str, Any]:
    return {"n": len(vals), "rate": float(np.mean(vals)) if vals else None}


def aggregate(records: list[dict[str, Any]], gallery: dict[str, dict[str, list]],
              robust: list[dict[str, Any]]) -> dict[str, Any]:
    """Turn per-image records into the audit.json aggregate sections."""
    ok = [r for r in records if "error" not in r]
    faces = [f for r in ok for f in r["faces"]]
    util_keys = ["nme_pct", "pose_err_mean_deg", "d_eye_openness", "d_mouth_openness",
                 "expression_shape_dist", "light_angle_deg", "skin_delta_e"]
    util: dict[str, Any] = {
        "detection_retained": _rate([bool(f["detected"]) for f in faces]),
        "detection_confidence": stats(f["det_score"] for f in faces),
        "original_detection_confidence": stats(f["orig_score"] for f in faces),
    }
    for k in util_keys:
        util[k] = stats(f.get("utility", {}).get(k) for f in faces)
    for axis in ("yaw", "pitch", "roll"):
        util[f"pose_err_{axis}_deg"] = stats(
            f.get("utility", {}).get("pose_err_deg", {}).get(axis) for f in faces)
    for k in ("bg_psnr", "bg_ssim"):
        util[k] = stats(r.get("background", {}).get(k) for r in ok)
    util["bg_untouched"] = _rate([r.get("background", {}).get("bg_psnr") == "inf"
                                  or r.get("background", {}).get("bg_psnr") == float("inf")
                                  for r in ok if "bg_psnr" in r.get("background", {})])
    tiers = sorted({t for f in faces for t in f.get("recovery", {})})
    recovery: dict[str, Any] = {}
    for t in tiers:
        crop = [f["recovery"][t] for f in faces if t in f.get("recovery", {})
                and "error" not in f["recovery"][t]]
        whole = [r["recovery_image"][t] for r in ok if t in r.get("recovery_image", {})
                 and "error" not in r["recovery_image"][t]]
        recovery[t] = {
            "crop128": {m: stats(_num(x[m]) for x in crop) for m in ("psnr", "ssim", "lpips")},
            "image": {m: stats(_num(x[m]) for x in whole) for m in ("psnr", "ssim", "lpips")},
            # whole image exact: the robust tier's in-pixel code lies outside the vault's
            # edit regions, so a vault recovery of a watermarked image is exact only there
            "exact": _rate([bool(x.get("exact")) for x in whole]),
            "exact_crop": _rate([bool(x.get("exact")) for x in crop]),
        }
    if any("robust_status" in r for r in ok):
        st = [r["robust_status"] for r in ok if "robust_status" in r]
        recovery["robust_status"] = {s: st.count(s) for s in sorted(set(st))}
    robustness: dict[str, Any] = {}
    if robust:
        from refacex.audit.distortions import DISTORTIONS

        for d in DISTORTIONS:
            rs = [x["distortions"][d.name] for x in robust if d.name in x.get("distortions", {})]
            if not rs:  # not part of this run's --distortions subset
                continue
            robustness[d.name] = {
                "family": d.family, "level": d.level, "n": len(rs),
                "survival": _rate([bool(x["survived"]) for x in rs])["rate"],
                "decrypt": _rate([bool(x["decrypted"]) for x in rs])["rate"],
                "psnr": stats(x.get("psnr") for x in rs),
                "ssim": stats(x.get("ssim") for x in rs),
                "crashes": sum(1 for x in rs if str(x.get("error", "")).startswith("crash"))}
    timing_keys = sorted({k for r in ok for k in r.get("timings_ms", {})})
    speed = {k: stats(r["timings_ms"].get(k) for r in ok) for k in timing_keys}
    return {
        "counts": {"images": len(records), "ok": len(ok),
                   "errors": len(records) - len(ok), "faces": len(faces),
                   "primary_faces": sum(1 for f in faces if f.get("primary")),
                   "with_gallery_identity": sum(1 for r in ok if r.get("identity") in gallery)},
        "privacy": privacy.aggregate_privacy(ok, gallery),
        "utility": util, "recovery": recovery, "robustness": robustness,
        "speed_ms": speed,
        "errors": {r["rel"]: r["error"] for r in records if "error" in r},
    }


_PRIVATE = ("orig_embeddings", "anon_embeddings", "donor_embeddings")


def _compact(rec: dict[str, Any]) -> dict[str, Any]:
    """Embeddings as float32 arrays (512 B each instead of ~4 KB of Python floats), so
    10,000 records stay in the tens of MB."""
    def arr(d: dict[str, Any]) -> dict[str, Any]:
        return {k: np.asarray(v, np.float32) if isinstance(v, list) else
                (arr(v) if isinstance(v, dict) else v) for k, v in d.items()}

    for f in rec.get("faces", []):
        for k in _PRIVATE:
            if isinstance(f.get(k), dict):
                f[k] = arr(f[k])
    return rec


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    """A record as written to audit.json: embeddings removed."""
    out = dict(rec)
    out["faces"] = [{k: v for k, v in f.items() if k not in _PRIVATE}
                    for f in rec.get("faces", [])]
    return out


def _num(x: Any) -> float | None:
    if x == "inf":
        return float("inf")
    return None if x is None else float(x)


# ----------------------------------------------------------------------- the run
def run_audit(cfg: AuditConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole audit; writes OUT/audit.json and OUT/report.html; returns the dict."""
    from tqdm import tqdm

    if cfg.run is None and cfg.anonymized is None:
        raise RefacexError("give --anonymized DIR or --run METHOD")
    if cfg.robustness and not (cfg.run or cfg.key):
        raise RefacexError("--robustness needs the key: use --run METHOD or --key KEYFILE")
    if not cfg.original.is_dir():
        raise RefacexError(f"{cfg.original}: not a folder")
    cfg.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    aud = Auditor(cfg)
    rels = list_originals(cfg)
    if not rels:
        raise RefacexError(f"{cfg.original}: no images found")
    gal_paths = folder_gallery(cfg.gallery) if cfg.gallery else default_gallery(cfg, rels)
    records: list[dict[str, Any]] = []
    hits = computed = 0
    partial = False
    bar = tqdm(rels, desc=f"audit {cfg.run or ''}".strip(), unit="img",
               disable=not cfg.progress, mininterval=2.0)
    for rel in bar:
        rec = aud.cached(rel)
        if rec is not None:
            hits += 1
        else:
            if cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds:
                partial = True
                continue
            try:
                rec = aud.image(rel)
            except RefacexError as exc:
                rec = {"rel": rel, "identity": identity_of(rel), "error": str(exc), "faces": []}
            aud.store(rel, rec)
            computed += 1
        records.append(_compact(rec))
    bar.close()
    t_images = time.perf_counter() - t0
    gal_files = {ident: p.resolve() for ident, p in gal_paths.items()}
    for rec in records:
        ident = rec.get("identity")
        rec["gallery_is_self"] = bool(ident in gal_files and
                                      (cfg.original / rec["rel"]).resolve() == gal_files[ident])
    # Gallery: only identities that are probed, plus all others given as distractors.
    gallery: dict[str, dict[str, list]] = {}
    for ident, p in tqdm(sorted(gal_paths.items()), desc="gallery", unit="img",
                         disable=not cfg.progress, mininterval=2.0):
        e = aud.gallery_embedding(p)
        if e is not None:
            gallery[ident] = e
    robust: list[dict[str, Any]] = []
    if cfg.robustness:
        # With --run we know which images carry a robust code; the others (too small)
        # would only measure "no payload" and dilute the survival rates.
        chosen = [r["rel"] for r in records if "error" not in r
                  and (not cfg.run or r.get("robust_bytes", 1) > 0)][: cfg.robust_limit]
        for rel in tqdm(chosen, desc="robustness", unit="img", disable=not cfg.progress):
            robust.append(aud.robustness(rel))
    agg = aggregate(records, gallery, robust)
    agg["realism"] = realism_section(aud, records, cfg.progress) if cfg.realism else None
    wall = time.perf_counter() - t0
    n_ok = agg["counts"]["ok"]
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {**asdict(cfg), **cfg.settings()},
        "recognizers": privacy.recognizer_info(),
        "partial": partial,
        **agg,
        "run": {"wall_s": wall, "images_wall_s": t_images, "computed": computed,
                "cache_hits": hits,
                "images_per_s": computed / t_images if computed and t_images > 0 else None,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "cpu": _cpu_model(), "cores": os.cpu_count()},
        # Per-image numbers without the embeddings (biometric data; they stay in the cache).
        "images": [_public(r) for r in records],
    }
    result["settings"].pop("files", None)
    result["settings"]["n_requested"] = len(rels)
    result["robustness_images"] = robust
    write_bytes_atomic(cfg.out / "audit.json", dumps(result).encode())
    from refacex.audit.report import render_html

    html = render_html(result, cfg, n_ok=n_ok)
    write_bytes_atomic(cfg.out / "report.html", html.encode())
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def summary_table(result: dict[str, Any]) -> str:
    """The short table printed at the end of `refacex audit`."""
    lines = []
    c = result["counts"]
    lines.append(f"images {c['ok']}/{c['images']} ok, faces {c['faces']}, "
                 f"gallery {result['privacy']['gallery_size']}"
                 + (" (PARTIAL)" if result.get("partial") else ""))
    lines.append(f"{'recogniser':<8}{'mode':<16}{'score(mean)':>12}{'ver.orig':>10}"
                 f"{'ver.gal':>9}{'rank1':>7}{'rank5':>7}")
    for name, r in result["privacy"]["recognizers"].items():
        for mode in privacy.MODES:
            m = r[mode]
            lines.append(f"{name:<8}{mode:<16}{_f(m['score_vs_original']['mean']):>12}"
                         f"{_f(m['verified_vs_original']['rate']):>10}"
                         f"{_f(m['verified_vs_gallery']['rate']):>9}{_f(m['rank1']):>7}"
                         f"{_f(m['rank5']):>7}")
        ref = r["original_reference"]
        lines.append(f"{name:<8}{'(originals)':<16}{'':>12}{'':>10}"
                     f"{_f(ref['verified_vs_gallery']['rate']):>9}{_f(ref['rank1']):>7}"
                     f"{_f(ref['rank5']):>7}")
    u = result["utility"]
    lines.append(f"utility: detected {_f(u['detection_retained']['rate'])}, "
                 f"NME {_f(u['nme_pct']['mean'])} %, "
                 f"pose err {_f(u['pose_err_mean_deg']['mean'])}°, "
                 f"ΔE {_f(u['skin_delta_e']['mean'])}, light {_f(u['light_angle_deg']['mean'])}°, "
                 f"bg PSNR {_f(u['bg_psnr']['median'])} dB (median)")
    for tier, t in result["recovery"].items():
        if tier == "robust_status":
            lines.append(f"robust tier: {t}")
            continue
        cr = t["crop128"]
        lines.append(f"recovery {tier}: crop PSNR {_f(cr['psnr']['mean'])} dB, "
                     f"SSIM {_f(cr['ssim']['mean'], 3)}, LPIPS {_f(cr['lpips']['mean'], 3)}; "
                     f"exact {_f(t['exact']['rate'])}")
    rl = result.get("realism")
    if rl:
        lines.append(f"realism ({rl['n_fake']} faces): FID {_f(rl['fid'], 1)}, "
                     f"KID {_f(rl['kid'], 4)} ± {_f(rl['kid_std'], 4)}")
    run = result["run"]
    lines.append(f"speed: {_f(run['images_per_s'])} img/s computed ({run['computed']} new, "
                 f"{run['cache_hits']} cached), peak RSS {run['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if x == "inf":
        return "inf"
    return f"{float(x):.{nd}f}"

