"""Stage 2 of the photoreal donor bank: measure, screen and pack the rendered faces.

Input: the PNGs and ``styles.npy`` of ``scripts/render_gan_donors.py`` (MobileStyleGAN,
faces of nobody; NON-COMMERCIAL lineage, see the README's model table).
Per candidate: YuNet detection -> 68 landmarks -> head pose -> the canonical 256 px crop
(the anonymiser's geometry) -> SFace and dlib embeddings, cheek skin Lab, eye and mouth
openness, and how much of the forehead band is bare skin.

Screening (a donor must be a clean, believable face that belongs to nobody):
* exactly one clear face, near-frontal (|yaw|, |pitch| <= 20), eyes open, no glasses or
  sunglasses (``faces.attributes.glasses_score`` / ``eye_darkness``);
* the lower forehead band is bare skin (no fringe, hat or hand over it: the swap pastes
  that band);
* it is no closer (SFace) to any TRAINING person (LFW train split + CelebA-id train,
  three photos per CelebA person) than 99 % of those people are to their nearest other
  training person (``stranger_threshold``: with thousands of people, everyone "verifies"
  as somebody at the 1:1 threshold). dlib is too slow for ~4,700 photos on two cores; the
  swap's own check uses both. The evaluation people are never read;
* no near-duplicates: of two donors closer than that to each other, the second goes.

Output (package data, ``refacex/data/donors_gan.npz``): the crops as JPEG bytes (one
buffer + offsets, decoded on demand), landmarks, measurements, embeddings and styles.

Usage: nice .venv/bin/python scripts/build_gan_donors.py --renders /tmp/gan [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refacex.anonymize.base import CROP_PADDING, CROP_SIZE  # noqa: E402
from refacex.anonymize.blend import occluder_mask  # noqa: E402
from refacex.anonymize.donors import BUCKET_BITS, border_points, delaunay, skin_lab  # noqa: E402
from refacex.faces.align import transform_points, warp_face  # noqa: E402
from refacex.faces.analysis import FaceAnalyzer  # noqa: E402
from refacex.faces.attributes import eye_darkness, face_attributes, glasses_score  # noqa: E402
from refacex.faces.detect import nearest_centre  # noqa: E402
from refacex.faces.landmarks import eye_openness, mouth_openness  # noqa: E402
from refacex.faces.masks import face_mask  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "refacex" / "data" / "donors_gan.npz"
JPEG_QUALITY = 92
#: ``glasses_score`` above this: the donor wears glasses (inspected on 250 donors).
GLASSES_MAX = 1.6


#: Lower forehead band: at least this share must be bare skin.
FOREHEAD_MIN = 0.85


def measure(analyzer: FaceAnalyzer, img: np.ndarray) -> dict | str:
    """Everything the bank keeps about one rendered face, or why it is unusable. The
    cheap tests run first; the embeddings (dlib's is ~0.1 s) only for faces that pass."""
    faces = analyzer.detector.detect(img)
    if len(faces) != 1 or faces[0].score < 0.85:
        return "detection"
    face = faces[0]
    analyzer.describe(img, face, landmarks=True, pose=True)
    p = face.pose
    if p is None or abs(p.yaw) > 20 or abs(p.pitch) > 20 or abs(p.roll) > 15:
        return "pose"
    al = warp_face(img, face.kps, CROP_SIZE, CROP_PADDING)
    lm = transform_points(al.matrix, face.landmarks).astype(np.float32)
    eo = min(eye_openness(lm))
    if eo < 0.18:
        return "eyes closed"
    if glasses_score(al.crop, lm) > GLASSES_MAX or eye_darkness(al.crop, lm) < 0.45:
        return "glasses"  # they would be pasted onto faces without them
    skin = skin_lab(al.crop, lm)
    # Share of the lower forehead band (just above the brows) that is bare skin by the
    # swap's own occluder test: a fringe or hat brim there would be pasted onto faces.
    # Hair higher up (a low hairline) is fine: the swap masks the donor's own occluders.
    band = (face_mask(al.crop.shape[:2], lm, 0.45) > 0) & (face_mask(al.crop.shape[:2], lm, 0.0)
                                                           == 0)
    occ = occluder_mask(al.crop, lm, skin, 0.45)
    forehead_skin = float(1.0 - (occ[band] > 0.5).mean()) if band.any() else 0.0
    if forehead_skin < FOREHEAD_MIN:
        return "forehead"
    analyzer.describe(img, face, landmarks=False, pose=False, recognizers=("sface", "dlib"))
    att = face_attributes(img, face)
    return {"crop": al.crop, "p_male": att.p_male, "age": att.age,
            "happy": att.expression_probs.get("happy", 0.0), "lm": lm,
            "pose": np.array(p.as_tuple(), np.float32),
            "sface": face.embeddings["sface"].ravel().astype(np.float32),
            "dlib": face.embeddings["dlib"].ravel().astype(np.float32),
            "skin": skin, "eye_open": eo, "mouth_open": mouth_openness(lm),
            "forehead_skin": forehead_skin, "score": float(face.score)}


def unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def training_embeddings(analyzer: FaceAnalyzer, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """SFace embeddings of the training people's photos and each photo's person index
    (cached): LFW train people (one photo each) and three photos per CelebA train id."""
    if cache.is_file():
        z = np.load(cache)
        if "person" in z.files:
            return z["sface"], z["person"]
    train = [s.strip() for s in (DATA / "splits/lfw_train_people.txt").read_text().split()]
    evals = set((DATA / "splits/lfw_eval_people.txt").read_text().split())
    items = [(p, DATA / "lfw-deepfunneled" / p / f"{p}_0001.jpg") for p in train
             if p and p not in evals]
    for d in sorted((DATA / "celeba-id/Datasets/train_dataset").iterdir()):
        if d.is_dir():
            items += [(f"celeba:{d.name}", q) for q in sorted(d.glob("*.jpg"))[:3]]
    people = {p: i for i, p in enumerate(dict.fromkeys(p for p, _ in items))}
    sf, who = [], []
    t0 = time.time()
    for i, (person, path) in enumerate(items):
        img = cv2.imread(str(path))
        faces = analyzer.detector.detect(img) if img is not None else []
        if not faces:
            continue
        face = nearest_centre(faces, img.shape[:2])
        analyzer.describe(img, face, landmarks=False, pose=False, recognizers=("sface",))
        sf.append(face.embeddings["sface"].ravel())
        who.append(people[person])
        if (i + 1) % 1000 == 0:
            print(f"  training people {i + 1}/{len(items)} {time.time() - t0:.0f}s", flush=True)
    np.savez(cache, sface=np.array(sf, np.float32), person=np.array(who, np.int32))
    return np.array(sf, np.float32), np.array(who, np.int32)


def stranger_threshold(emb: np.ndarray, person: np.ndarray, q: float = 99.0) -> float:
    """The ``q``-th percentile, over training people, of the SFace similarity to their
    nearest OTHER training person. With thousands of people everyone has a nearest
    stranger above OpenCV's 1:1 threshold (0.363), so "verifies as somebody" must be
    read against this 1:N baseline: a donor is screened out if it is closer to some
    training person than 99 % of real people are to their nearest stranger."""
    e = unit(emb)
    best = np.full(len(e), -1.0, np.float32)
    for s in range(0, len(e), 1024):
        sim = e[s:s + 1024] @ e.T
        sim[person[s:s + 1024, None] == person[None, :]] = -1.0  # self and same person
        best[s:s + 1024] = sim.max(1)
    return float(np.percentile(best, q))


#: Attributes with a linear direction in style space (the quality mode's edits).
DIRECTION_ATTRS = ("yaw", "pitch", "mouth_open", "eye_open", "p_male", "age")
#: Principal axes of the style space the directions are fitted in (see fit_directions).
DIRECTION_PCS = 16


def fit_directions(styles: np.ndarray, attrs: np.ndarray, k: int = DIRECTION_PCS,
                   ridge: float = 1.0) -> np.ndarray:
    """Style-space edit matrix E (len(attrs), 512): ``w + delta @ E`` changes the measured
    attributes by ``delta`` and, to first order, nothing else of them.

    The fit lives in the top ``k`` principal axes of the styles: a ridge regression gives
    B with attrs ~ z @ B (z = the style's PCA scores), and the edit for a change delta is
    the least-norm dz with dz @ B = delta, mapped back (E = pinv(B) @ axes). Fitted in all
    512 dimensions instead, the least-norm edit lands in directions the generator barely
    responds to (a 30-degree yaw request turned the face by 2 degrees); in 16 axes it
    turns it by ~25."""
    w = styles - styles.mean(0)
    axes = np.linalg.svd(w, full_matrices=False)[2][:k]  # (k, 512)
    z = w @ axes.T
    a = attrs - attrs.mean(0)
    b = np.linalg.solve(z.T @ z + ridge * np.eye(k), z.T @ a)  # (k, A)
    return (np.linalg.pinv(b) @ axes).astype(np.float32)  # (A, 512)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--renders", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--train-cache", type=Path, default=Path("/tmp/refacex-train-emb.npz"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    t0 = time.time()
    analyzer = FaceAnalyzer(score_threshold=0.5)
    styles = np.load(args.renders / "styles.npy")
    pngs = sorted(p for p in args.renders.glob("[0-9]*.png") if ".tmp" not in p.name)
    if args.limit:
        pngs = pngs[: args.limit]
    rows: dict[int, dict] = {}
    rejected = {k: 0 for k in ("detection", "pose", "eyes closed", "glasses", "forehead",
                               "training person", "duplicate")}
    for i, png in enumerate(pngs):
        r = measure(analyzer, cv2.imread(str(png)))
        if isinstance(r, str):
            rejected[r] += 1
        else:
            rows[int(png.stem)] = r
        if (i + 1) % 200 == 0:
            print(f"  measured {i + 1}/{len(pngs)}, kept {len(rows)}, {time.time() - t0:.0f}s",
                  flush=True)
    tr_sf, tr_person = training_embeddings(analyzer, args.train_cache)
    screen = stranger_threshold(tr_sf, tr_person)
    print(f"training embeddings: {len(tr_sf)} photos of {len(set(tr_person))} people; "
          f"nearest-stranger 99th percentile (screening threshold): {screen:.3f}")
    ids = sorted(rows)
    sf = unit(np.stack([rows[i]["sface"] for i in ids]))
    dl = np.stack([rows[i]["dlib"] for i in ids])
    max_train = (sf @ unit(tr_sf).T).max(1)
    clean = max_train < screen
    rejected["training person"] = int((~clean).sum())
    print("closest training person, SFace cosine percentiles 5/50/95/max:",
          np.round(np.percentile(max_train, [5, 50, 95, 100]), 3))
    keep: list[int] = []
    for j in np.where(clean)[0]:
        if keep and float((sf[keep] @ sf[j]).max()) >= screen:
            rejected["duplicate"] += 1
            continue
        keep.append(int(j))
    chosen = [ids[j] for j in keep]
    attrs = np.array([[float(rows[i]["pose"][0]), float(rows[i]["pose"][1]),
                       rows[i]["mouth_open"], rows[i]["eye_open"], rows[i]["p_male"],
                       rows[i]["age"]] for i in ids], np.float64)
    directions = fit_directions(styles[ids].astype(np.float64), attrs)
    # How well a linear model in the same 16 axes predicts each attribute on candidates
    # NOT used for the fit (every 5th held out): how linear the space is for each.
    held = np.arange(len(ids)) % 5 == 0
    w_fit = styles[ids][~held] - styles[ids][~held].mean(0)
    axes = np.linalg.svd(w_fit, full_matrices=False)[2][:DIRECTION_PCS]
    z_fit, z_held = w_fit @ axes.T, (styles[ids][held] - styles[ids][~held].mean(0)) @ axes.T
    b = np.linalg.solve(z_fit.T @ z_fit + np.eye(DIRECTION_PCS),
                        z_fit.T @ (attrs[~held] - attrs[~held].mean(0)))
    a = attrs[held] - attrs[~held].mean(0)
    r2 = 1 - ((a - z_held @ b) ** 2).sum(0) / ((a - a.mean(0)) ** 2).sum(0)
    print("direction fit, held-out R^2:", dict(zip(DIRECTION_ATTRS, np.round(r2, 2), strict=True)))
    print(f"kept {len(chosen)} of {len(pngs)}; rejected {rejected}")
    blobs = [cv2.imencode(".jpg", rows[i]["crop"], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
             for i in chosen]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    lms = np.stack([rows[i]["lm"] for i in chosen])
    border = border_points(CROP_SIZE)
    tris = delaunay(np.vstack([lms.mean(0), border]), CROP_SIZE)
    rng = np.random.default_rng(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        ids=np.array([f"g{i:05d}" for i in chosen]),
        jpeg=np.concatenate(blobs).astype(np.uint8), offsets=offsets,
        landmarks=lms.astype(np.float32),
        pose=np.stack([rows[i]["pose"] for i in chosen]),
        skin=np.stack([rows[i]["skin"] for i in chosen]).astype(np.float32),
        eye_open=np.array([rows[i]["eye_open"] for i in chosen], np.float32),
        mouth_open=np.array([rows[i]["mouth_open"] for i in chosen], np.float32),
        p_male=np.array([rows[i]["p_male"] for i in chosen], np.float32),
        age=np.array([rows[i]["age"] for i in chosen], np.float32),
        happy=np.array([rows[i]["happy"] for i in chosen], np.float32),
        sface=sf[keep].astype(np.float16),
        dlib=dl[keep].astype(np.float16),
        styles=styles[chosen].astype(np.float32),
        style_mean=styles.mean(0).astype(np.float32),
        directions=directions, direction_attrs=np.array(DIRECTION_ATTRS),
        max_train_sface=max_train[keep].astype(np.float32),
        screen_threshold=np.float32(screen),
        triangles=tris.astype(np.int32),
        projections=rng.standard_normal((BUCKET_BITS, 128)).astype(np.float32),
    )
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.1f} MB, {len(chosen)} donors) in "
          f"{time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
