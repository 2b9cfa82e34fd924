"""Privacy measurements: does a face recogniser still know who it is?

Every number is computed for **each recogniser in ``RECOGNIZERS``** (a claim that holds
for one model says little about another), in the recogniser's *native* score (SFace
cosine, dlib L2) and decided at the recogniser's *own* published threshold, and for two
attackers:

* ``redetect``: the attacker runs a face detector on the anonymised image and embeds
  what it finds (a face that is no longer found cannot be matched);
* ``known_location``: the attacker knows where the face was (e.g. from the unchanged
  body/background, or a tracker) and embeds the anonymised pixels at the *original*
  face's box/5 points/68 landmarks — so a method cannot "win" merely by making faces
  undetectable.

Set-level numbers (re-identification rank-1/5 against a gallery, diversity) need all
images, so per-image records keep the (small) embeddings and :func:`aggregate_privacy`
computes them at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from refacex.faces import Face, get_recognizer
from refacex.faces.recognizers import RECOGNIZERS, Recognizer
from refacex.faces.types import Pose

MODES = ("redetect", "known_location")


def recognizer_names() -> list[str]:
    """All registered recognisers: loop over the registry so a third one plugs in."""
    return list(RECOGNIZERS)


def recognizer_info() -> dict[str, dict[str, Any]]:
    """Name, metric and threshold of each recogniser (written into audit.json)."""
    out = {}
    for name in recognizer_names():
        cls = RECOGNIZERS[name]
        out[name] = {"metric": cls.metric, "threshold": cls.threshold,
                     "native_score": "cosine similarity (same person if >= threshold)"
                     if cls.metric == "cosine" else
                     "L2 distance (same person if < threshold)"}
    return out


# ----------------------------------------------------------------------- face <-> json
def face_to_json(f: Face) -> dict[str, Any]:
    """Everything the audit needs of a face, JSON-serialisable (embeddings included:
    they are biometric data, so the cache lives under the audit's own output folder)."""
    return {
        "box": [float(v) for v in f.box], "score": float(f.score),
        "kps": np.asarray(f.kps, float).round(3).tolist(),
        "landmarks": None if f.landmarks is None
        else np.asarray(f.landmarks, float).round(3).tolist(),
        "pose": None if f.pose is None else list(f.pose.as_tuple()),
        "embeddings": {k: np.asarray(v, float).round(6).tolist() for k, v in f.embeddings.items()},
    }


def face_from_json(d: dict[str, Any]) -> Face:
    f = Face(box=np.asarray(d["box"], np.float32), score=float(d["score"]),
             kps=np.asarray(d["kps"], np.float32),
             landmarks=None if d.get("landmarks") is None
             else np.asarray(d["landmarks"], np.float32))
    if d.get("pose") is not None:
        f.pose = Pose(*d["pose"])
    f.embeddings = {k: np.asarray(v, np.float32) for k, v in d.get("embeddings", {}).items()}
    return f


def copy_face(f: Face, landmarks: bool = True) -> Face:
    """A Face at the same place (box, 5 points, optionally 68 landmarks), no embeddings:
    the known-location attacker's view of the anonymised image."""
    return Face(box=f.box.copy(), score=f.score, kps=f.kps.copy(),
                landmarks=None if (f.landmarks is None or not landmarks) else f.landmarks.copy())


def primary_index(faces: list[Face], shape_hw: tuple[int, int]) -> int | None:
    """The face a photo is "of" (LFW convention: the large face nearest the centre)."""
    if not faces:
        return None
    h, w = shape_hw
    centre = np.array([w / 2, h / 2])
    big = max(float(f.box[2]) for f in faces)

    def cost(i: int) -> float:
        f = faces[i]
        c = f.box[:2] + f.box[2:] / 2
        penalty = 0.0 if f.box[2] >= 0.5 * big else 1e6
        return float(np.linalg.norm(c - centre)) + penalty

    return min(range(len(faces)), key=cost)


class FeatureCache:
    """Original/gallery face analysis, cached on disk per file (path + size + mtime).

    Why: the originals and the gallery are the same for every method audited; a
    benchmark over four methods should analyse them once, not four times.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)

    def _key(self, path: Path, recognizers: list[str]) -> str:
        st = path.stat()
        raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{','.join(recognizers)}|v1"
        return hashlib.sha1(raw.encode()).hexdigest()

    def get(self, path: Path, recognizers: list[str], compute) -> dict[str, Any]:
        """Cached ``compute()`` (a JSON-able dict) for this file."""
        if self.root is None:
            return compute()
        p = self.root / f"{self._key(path, recognizers)}.json"
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except (OSError, ValueError):
                pass
        value = compute()
        tmp = p.with_suffix(f".{os.getpid()}.tmp")  # parallel audits share this cache
        tmp.write_text(json.dumps(value))
        tmp.replace(p)
        return value


def embed_all(img: np.ndarray, face: Face, names: list[str]) -> dict[str, np.ndarray]:
    return {n: get_recognizer(n).embed(img, face) for n in names}


# ----------------------------------------------------------------------- donors
_donor_cache: dict[str, dict[str, np.ndarray]] = {}


def donor_face(lm: np.ndarray) -> Face:
    """A Face for a donor template from its known landmarks (crop coordinates)."""
    lm = np.asarray(lm, np.float32)
    kps = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    h = y1 - y0
    box = np.array([x0, y0 - 0.25 * h, x1 - x0, 1.25 * h], np.float32)
    return Face(box=box, score=1.0, kps=kps.astype(np.float32), landmarks=lm)


def donor_embeddings(donor_id: str, names: list[str]) -> dict[str, np.ndarray] | None:
    """Embeddings of a donor template (an aligned 256 px crop), built from its stored
    landmarks rather than re-detected, so it never fails on a template."""
    if donor_id in _donor_cache:
        return _donor_cache[donor_id]
    from refacex.anonymize.donors import load_bank

    bank = load_bank()
    if donor_id not in bank.ids:
        return None
    k = bank.ids.index(donor_id)
    img = np.ascontiguousarray(bank.images[k])
    _donor_cache[donor_id] = embed_all(img, donor_face(bank.landmarks[k]), names)
    return _donor_cache[donor_id]


# ----------------------------------------------------------------------- aggregation
def _rate(values: list[bool]) -> dict[str, Any]:
    return {"n": len(values), "rate": float(np.mean(values)) if values else None}


def _similarities(rec: Recognizer, probe: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """``rec.similarity`` of one probe to every gallery row (vectorised for the two
    metrics we know, generic loop for any other recogniser)."""
    if rec.metric == "cosine":
        g = gallery / (np.linalg.norm(gallery, axis=1, keepdims=True) + 1e-12)
        return g @ (probe / (np.linalg.norm(probe) + 1e-12))
    if rec.metric == "euclidean":
        return -np.linalg.norm(gallery - probe[None], axis=1)
    return np.array([rec.similarity(probe, g) for g in gallery])


def _rank_of_true(rec: Recognizer, probe: np.ndarray, gallery: np.ndarray, true_idx: int
                  ) -> int:
    """1 + number of gallery identities the probe is strictly more similar to than its
    own (ties count in the probe's favour, as in the usual CMC definition)."""
    sims = _similarities(rec, probe, gallery)
    return int((sims > sims[true_idx]).sum()) + 1


def _probe_identity(recd: dict[str, Any], face: dict[str, Any]) -> str | None:
    """The identity a face is scored against the gallery with: only the photo's primary
    face, and never when the gallery photo is this very file."""
    if not face.get("primary") or recd.get("gallery_is_self"):
        return None
    return recd.get("identity")


def aggregate_privacy(records: list[dict[str, Any]], gallery: dict[str, dict[str, list]],
                      seed: int = 0, max_pairs: int = 20000) -> dict[str, Any]:
    """Set-level privacy from per-image records.

    ``gallery`` maps identity -> {recogniser: embedding}. Per recogniser and attacker
    mode: native similarity to the original (mean/median/p95), verification rate against
    the original and against the gallery photo of the same person, rank-1/rank-5
    re-identification with chance levels, donor leakage and diversity.
    """
    from refacex.audit.run import stats

    names = recognizer_names()
    ids = sorted(gallery)
    gal_index = {k: i for i, k in enumerate(ids)}
    out: dict[str, Any] = {"gallery_size": len(ids),
                           "chance_rank1": 1 / len(ids) if ids else None,
                           "chance_rank5": min(1.0, 5 / len(ids)) if ids else None,
                           "recognizers": {}}
    rng = np.random.default_rng(seed)
    for name in names:
        rec = get_recognizer(name)
        gmat = [np.asarray(gallery[k][name], np.float32) for k in ids if name in gallery[k]]
        gstack = np.stack(gmat) if gmat else np.zeros((0, 1), np.float32)
        r: dict[str, Any] = {"metric": rec.metric, "threshold": rec.threshold}
        # Reference: how well the recogniser does on the *un-anonymised* originals.
        base_rank: list[int] = []
        base_ver: list[bool] = []
        for recd in records:
            for face in recd.get("faces", []):
                ident = _probe_identity(recd, face)
                emb_o = face["orig_embeddings"].get(name)
                if emb_o is None or ident not in gal_index or len(gmat) != len(ids):
                    continue
                o = np.asarray(emb_o, np.float32)
                gi = gal_index[ident]
                base_ver.append(bool(rec.same_person(o, gmat[gi])))
                base_rank.append(_rank_of_true(rec, o, gstack, gi))
        for mode in MODES:
            score, ver_o, ver_g, ranks, donor_s, donor_same = [], [], [], [], [], []
            for recd in records:
                for face in recd.get("faces", []):
                    emb_o = face["orig_embeddings"].get(name)
                    emb_a = face.get("anon_embeddings", {}).get(mode, {}).get(name)
                    if emb_o is None:
                        continue
                    ident = _probe_identity(recd, face)
                    g_ok = ident in gal_index and len(gmat) == len(ids)
                    if emb_a is None:  # undetected: the attacker has nothing to match
                        ver_o.append(False)
                        if g_ok:
                            ver_g.append(False)
                            ranks.append(len(ids) + 1)
                        continue
                    a = np.asarray(emb_a, np.float32)
                    o = np.asarray(emb_o, np.float32)
                    score.append(rec.score(a, o))
                    ver_o.append(bool(rec.same_person(a, o)))
                    if g_ok:
                        gi = gal_index[ident]
                        ver_g.append(bool(rec.same_person(a, gmat[gi])))
                        ranks.append(_rank_of_true(rec, a, gstack, gi))
                    d = face.get("donor_embeddings", {}).get(name)
                    if d is not None:
                        dv = np.asarray(d, np.float32)
                        donor_s.append(rec.score(a, dv))
                        donor_same.append(bool(rec.same_person(a, dv)))
            ranks_a = np.array(ranks)
            r[mode] = {
                "score_vs_original": stats(score),
                "verified_vs_original": _rate(ver_o),
                "verified_vs_gallery": _rate(ver_g),
                "rank1": float((ranks_a <= 1).mean()) if len(ranks_a) else None,
                "rank5": float((ranks_a <= 5).mean()) if len(ranks_a) else None,
                "n_probes": len(ranks),
                "donor_score": stats(donor_s),
                "verified_as_donor": _rate(donor_same),
            }
        br = np.array(base_rank)
        r["original_reference"] = {
            "verified_vs_gallery": _rate(base_ver),
            "rank1": float((br <= 1).mean()) if len(br) else None,
            "rank5": float((br <= 5).mean()) if len(br) else None,
        }
        r["diversity"] = _diversity(rec, records, rng, max_pairs)
        out["recognizers"][name] = r
    return out


def _diversity(rec: Recognizer, records: list[dict[str, Any]], rng: np.random.Generator,
               max_pairs: int) -> dict[str, Any]:
    """Mean pairwise native score between faces of *different* people, anonymised vs
    original (known-location embeddings, so every face counts). Anonymised faces that
    all look alike ("identity collapse") are a utility loss and make donors guessable."""
    an, orig, who = [], [], []
    for recd in records:
        for j, face in enumerate(recd.get("faces", [])):
            a = face.get("anon_embeddings", {}).get("known_location", {}).get(rec.name)
            o = face["orig_embeddings"].get(rec.name)
            if a is None or o is None:
                continue
            an.append(np.asarray(a, np.float32))
            orig.append(np.asarray(o, np.float32))
            who.append(recd.get("identity") or f"{recd['rel']}#{j}")
    n = len(an)
    if n < 2:
        return {"pairs": 0, "anonymized": None, "original": None}
    total = n * (n - 1) // 2
    if total <= max_pairs:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    else:
        ii = rng.integers(0, n, max_pairs)
        jj = rng.integers(0, n, max_pairs)
        pairs = [(int(i), int(j)) for i, j in zip(ii, jj, strict=True) if i != j]
    pairs = [(i, j) for i, j in pairs if who[i] != who[j]]
    sa = [rec.score(an[i], an[j]) for i, j in pairs]
    so = [rec.score(orig[i], orig[j]) for i, j in pairs]
    same_a = [rec.same_person(an[i], an[j]) for i, j in pairs]
    same_o = [rec.same_person(orig[i], orig[j]) for i, j in pairs]
    return {"pairs": len(pairs),
            "anonymized": float(np.mean(sa)) if sa else None,
            "original": float(np.mean(so)) if so else None,
            "false_match_rate_anonymized": float(np.mean(same_a)) if same_a else None,
            "false_match_rate_original": float(np.mean(same_o)) if same_o else None}
