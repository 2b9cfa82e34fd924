"""``refacex demo``: run the main job on the bundled sample photos.

The samples are real photos taken from registry packages at install time (never
committed): insightface's group photo ``t1.jpg`` and ``Tom_Hanks_54745.png``, and
scikit-image's astronaut. The demo generates a key pair, anonymises every sample
(``swap``), recovers it from the vault and — after a JPEG re-encode that strips the vault —
from the robust tier, and prints what a user wants to know: did the recognisers stop
matching, and how close is the recovery.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from refacex.anonymize import CROP_PADDING
from refacex.audit.metrics import psnr
from refacex.errors import RefacexError
from refacex.faces import Face, FaceAnalyzer, get_recognizer
from refacex.faces.align import warp_face
from refacex.faces.detect import match_detection
from refacex.faces.recognizers import fingerprint
from refacex.io.images import (
    decode_image,
    encode_image,
    read_image,
    write_bytes_atomic,
    write_image,
)
from refacex.models import SAMPLES, resolve
from refacex.models.registry import DEMO_SAMPLES


def annotate(img: np.ndarray, faces: list[Face]) -> np.ndarray:
    """Draw boxes, 5 points, 68 landmarks and pose on a copy of ``img``."""
    vis = img.copy()
    thick = max(1, round(max(img.shape[:2]) / 600))
    for i, f in enumerate(faces):
        x, y, w, h = (int(round(v)) for v in f.box)
        cv2.rectangle(vis, (x, y), (x + w, y + h), (0, 200, 0), thick)
        if f.landmarks is not None:
            for p in f.landmarks:
                cv2.circle(vis, (int(p[0]), int(p[1])), thick, (255, 200, 0), -1)
        for p in f.kps:
            cv2.circle(vis, (int(p[0]), int(p[1])), thick + 1, (0, 0, 255), -1)
        label = f"#{i} {f.score:.2f}"
        if f.pose is not None:
            label += f" y{f.pose.yaw:+.0f} p{f.pose.pitch:+.0f} r{f.pose.roll:+.0f}"
        cv2.putText(vis, label, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 255, 255), thick, cv2.LINE_AA)
    return vis


def run_analysis_demo(out_dir: Path, log=print) -> dict:
    """Detect and describe faces on every sample; write annotated images + JSON."""
    analyzer = FaceAnalyzer()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in DEMO_SAMPLES:
        asset = SAMPLES[name]
        img = read_image(resolve(name))
        faces = analyzer.analyze(img, recognizers=("sface", "dlib"))
        write_image(out_dir / f"{Path(asset.filename).stem}_faces.png", annotate(img, faces))
        report[asset.filename] = [
            {**f.to_dict(), "fingerprint": {k: fingerprint(v) for k, v in f.embeddings.items()}}
            for f in faces
        ]
        log(f"{asset.filename}: {len(faces)} face(s)")
    write_bytes_atomic(out_dir / "faces.json", json.dumps(report, indent=2).encode())
    return report


def _similarities(analyzer: FaceAnalyzer, orig: np.ndarray, faces: list[Face],
                  other: np.ndarray) -> dict[str, list[float]]:
    """Per recogniser, native score between each original face and the face re-detected
    at the same place in ``other`` (None if not re-detected)."""
    found = analyzer.detector.detect(other)
    out: dict[str, list] = {"sface": [], "dlib": []}
    for f in faces:
        match, _ = match_detection(f, found)
        for name in out:
            if match is None:
                out[name].append(None)
                continue
            analyzer.describe(other, match, pose=False, recognizers=(name,))
            out[name].append(round(get_recognizer(name).score(f.embeddings[name],
                                                              match.embeddings[name]), 3))
    return out


def before_after(img: np.ndarray, anon: np.ndarray, faces: list[Face],
                 height: int = 320) -> np.ndarray:
    """One row per face: the original face with its surroundings (hair, neck) beside the
    anonymised one, at ``height`` px — the view in which a pasted look shows."""
    rows = []
    for f in faces:
        x, y, w, h = (int(round(v)) for v in f.box)
        pad = int(0.45 * max(w, h))
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(img.shape[1], x + w + pad), min(img.shape[0], y + h + pad)
        s = height / (y1 - y0)
        pair = [cv2.resize(a[y0:y1, x0:x1], None, fx=s, fy=s, interpolation=cv2.INTER_AREA
                           if s < 1 else cv2.INTER_CUBIC) for a in (img, anon)]
        gap = np.full((pair[0].shape[0], 6, 3), 255, np.uint8)
        rows.append(np.hstack([pair[0], gap, pair[1]]))
    if not rows:
        return img.copy()
    width = max(r.shape[1] for r in rows)
    rows = [cv2.copyMakeBorder(r, 0, 6, 0, width - r.shape[1], cv2.BORDER_CONSTANT,
                               value=(255, 255, 255)) for r in rows]
    return np.vstack(rows)


def run_demo(out_dir: Path, method: str = "swap", log=print) -> dict:
    """The full job: keys -> anonymise -> recover (vault, then robust) on the samples."""
    from refacex.payload.keyring import OpenKeys, SealKeys
    from refacex.payload.keys import generate_keypair, load_private_key, load_public_key
    from refacex.payload.sitekeys import generate_site_key, load_site_key, trusted_beside
    from refacex.pipeline import anonymize, save
    from refacex.recover import recover

    run_analysis_demo(out_dir, log=lambda _m: None)
    pub, key = generate_keypair(out_dir / "keys", None, overwrite=True)
    _site_pub, site_key = generate_site_key(out_dir / "keys", overwrite=True)
    seal = SealKeys(recipients=[load_public_key(pub)], site=load_site_key(site_key))
    opener = OpenKeys(private_key=load_private_key(key, None), trusted=trusted_beside(key))
    analyzer = FaceAnalyzer()
    rows, report = [], {}
    for name in DEMO_SAMPLES:
        asset = SAMPLES[name]
        img = read_image(resolve(name))
        faces = analyzer.analyze(img, pose=False, recognizers=("sface", "dlib"))
        res = anonymize(img, seal, method=method)
        anon_path = out_dir / "anonymized" / asset.filename
        save(res, anon_path)
        anon = read_image(anon_path)
        write_image(out_dir / "before-after" / f"{Path(asset.filename).stem}.png",
                    before_after(img, anon, faces))
        rec = recover(anon_path, opener)
        write_image(out_dir / "recovered" / f"{Path(asset.filename).stem}.png", rec.image)
        # Sharing platforms strip metadata and re-encode: only the robust tier survives.
        shared = decode_image(encode_image(anon, ".jpg", 75))
        robust_psnr = None
        if res.robust_faces == 0:
            log(f"{asset.filename}: too small for the robust tier "
                f"({img.shape[1]}x{img.shape[0]}); the vault alone carries the way back")
        try:
            rob = recover(encode_image(shared, ".png"), opener)
            write_image(out_dir / "recovered-robust" / f"{Path(asset.filename).stem}.png",
                        rob.image)
            robust_psnr = [round(psnr(warp_face(img, f.kps, 128, CROP_PADDING).crop,
                                      warp_face(rob.image, f.kps, 128, CROP_PADDING).crop), 1)
                           for f in faces]
        except RefacexError as exc:
            if res.robust_faces:
                log(f"{asset.filename}: robust recovery failed: {exc}")
        sims = _similarities(analyzer, img, faces, anon)
        vault_exact = all(np.array_equal(rec.image[y:y + h, x:x + w], img[y:y + h, x:x + w])
                          for x, y, w, h in (f["rect"] for f in rec.faces))
        report[asset.filename] = {"faces": len(faces), "anonymized": res.summary["anonymized"],
                                  "sface_cosine_orig_vs_anon": sims["sface"],
                                  "dlib_l2_orig_vs_anon": sims["dlib"],
                                  "recovered_tier": rec.tier, "vault_exact": vault_exact,
                                  "robust_code_bytes": [f.robust_code_bytes for f in res.faces],
                                  "robust_psnr_128_after_jpeg75": robust_psnr}
        rows.append((asset.filename, len(faces), sims, vault_exact, robust_psnr))
    write_bytes_atomic(out_dir / "demo.json", json.dumps(report, indent=2).encode())

    def fmt(vals):
        vals = [v for v in vals if v is not None]
        return f"{np.mean(vals):.2f}" if vals else "-"

    log(f"\nkeys: {out_dir / 'keys'}  method: {method}")
    log(f"{'image':<22}{'faces':>6}{'SFace cos':>11}{'dlib L2':>9}{'vault':>7}"
        f"{'robust PSNR':>13}")
    log(f"{'':<22}{'':>6}{'(<0.363)':>11}{'(>=0.6)':>9}{'exact':>7}{'(JPEG75)':>13}")
    for fname, n, sims, exact, rp in rows:
        log(f"{fname:<22}{n:>6}{fmt(sims['sface']):>11}{fmt(sims['dlib']):>9}"
            f"{'yes' if exact else 'NO':>7}{fmt(rp or []):>13}")
    return report
