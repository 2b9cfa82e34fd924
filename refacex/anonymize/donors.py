"""Donor templates for the ``swap`` anonymiser, and the keyed choice among them.

A donor is never one real person: each template is the shape-normalised mean of at
least ``MIN_MEMBERS`` different training people (LFW train split + CelebA-id train), so
no single photo can be recovered from what ships (see ``scripts/build_donors.py``).
Groups are clustered on skin tone plus a coarse appearance descriptor so that a face
gets a donor of a plausible complexion / sex / age.

The choice among the plausible groups is *keyed*: ``HMAC-SHA256(key, bucket(embedding))``
picks one, where the bucket is the sign pattern of a few fixed random projections of the
SFace embedding. The same person under the same key therefore (mostly) gets the same
donor in every photo — the anonymised people stay consistent across an album — while
without the key the choice cannot be predicted or linked back.

This module also holds the piecewise-affine warp (Delaunay triangles over the 68
landmarks plus crop-border points) shared by the build script and the swap.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from refacex.faces.masks import face_mask

#: Shipped statistics (package data).
DONORS_PATH = Path(__file__).resolve().parents[1] / "data" / "donors.npz"
#: A template must average at least this many different people (privacy of the donors).
MIN_MEMBERS = 30
#: Used when the caller gives no key. NOT secret: it only makes the choice deterministic.
DEFAULT_DONOR_KEY = b"refacex-default-donor-key-not-secret"
#: Number of random projections whose sign bits form the identity bucket.
BUCKET_BITS = 4
#: How many groups (nearest in skin tone / appearance) are candidates for one face.
N_CANDIDATES = 4


# --------------------------------------------------------------------------- geometry
def border_points(size: int, per_side: int = 4) -> np.ndarray:
    """Points on the crop border (corners included) so the triangulation covers the
    whole crop: the background then maps too, and the border stays fixed."""
    t = np.linspace(0.0, size - 1.0, per_side + 1)
    top = np.stack([t, np.zeros_like(t)], 1)
    bottom = np.stack([t, np.full_like(t, size - 1.0)], 1)
    left = np.stack([np.zeros_like(t[1:-1]), t[1:-1]], 1)
    right = np.stack([np.full_like(t[1:-1], size - 1.0), t[1:-1]], 1)
    return np.vstack([top, bottom, left, right]).astype(np.float32)


def delaunay(points: np.ndarray, size: int) -> np.ndarray:
    """Delaunay triangles (T, 3) as indices into ``points`` (computed once on a mean
    shape and reused for every face, so triangles correspond between faces)."""
    sub = cv2.Subdiv2D((-1, -1, size + 2, size + 2))
    pts = np.asarray(points, np.float32)
    for p in pts:
        sub.insert((float(p[0]), float(p[1])))
    tris = []
    for t in sub.getTriangleList().reshape(-1, 3, 2):
        idx = [int(np.argmin(((pts - v) ** 2).sum(1))) for v in t]
        if len(set(idx)) == 3 and np.abs(pts[idx] - t).max() < 0.5:
            tris.append(idx)
    return np.array(tris, np.int32)


def piecewise_affine(img: np.ndarray, src: np.ndarray, dst: np.ndarray, tris: np.ndarray,
                     size: int, interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Warp ``img`` so that points ``src`` land on ``dst`` (both (N, 2), same triangles).

    One remap for the whole crop: the destination triangles are rasterised into a
    triangle-id image, and each pixel's source position comes from its triangle's affine.
    Pixels no triangle covers (only possible with folded triangles) use a global
    least-squares affine, so there are never holes.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    d = np.concatenate([dst[tris], np.ones((len(tris), 3, 1))], 2)  # (T, 3, 3)
    s = src[tris]  # (T, 3, 2)
    mats = np.linalg.pinv(d) @ s  # (T, 3, 2): [x y 1] @ M = source
    # Global fallback affine (index T).
    g_d = np.hstack([dst, np.ones((len(dst), 1))])
    g, *_ = np.linalg.lstsq(g_d, src, rcond=None)
    mats = np.concatenate([mats, g[None]], 0).astype(np.float32)
    ids = np.full((size, size), len(tris), np.int32)
    # Draw larger triangles first so thin ones (lips, eyelids) win on shared edges.
    e1, e2 = dst[tris[:, 1]] - dst[tris[:, 0]], dst[tris[:, 2]] - dst[tris[:, 0]]
    area = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    for t in np.argsort(-area):
        cv2.fillConvexPoly(ids, np.round(dst[tris[t]]).astype(np.int32), int(t))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    m = mats[ids]  # (H, W, 3, 2)
    mx = xx * m[..., 0, 0] + yy * m[..., 1, 0] + m[..., 2, 0]
    my = xx * m[..., 0, 1] + yy * m[..., 1, 1] + m[..., 2, 1]
    return cv2.remap(img, mx, my, interp, borderMode=cv2.BORDER_REFLECT_101)


def defringe(tpl: np.ndarray, d_lm: np.ndarray) -> np.ndarray:
    """The template with everything outside its own skin (the averaged, grey-blurred
    hairline, temples and background) replaced by a smooth extrapolation of the skin.

    Applied at build time. The swap's face mask on a turned or tilted face reaches
    template pixels beyond the template's face (temples, hairline); without this they
    paint grey bands. The fill is a normalised convolution (blur(img * mask) /
    blur(mask)) at three scales, so it carries the skin's colour and low-frequency
    gradient outwards with no detail of its own."""
    size = tpl.shape[0]
    skin = face_mask((size, size), d_lm, forehead=0.45)
    skin = cv2.erode(skin, np.ones((7, 7), np.uint8)).astype(np.float32) / 255.0
    img = tpl.astype(np.float32)
    fill = np.zeros_like(img)
    for i, sigma in enumerate((0.25 * size, 0.1 * size, 0.04 * size)):  # coarse to fine
        num = cv2.GaussianBlur(img * skin[..., None], (0, 0), sigma)
        den = cv2.GaussianBlur(skin, (0, 0), sigma)[..., None]
        ok = np.ones_like(den) if i == 0 else np.clip(den * 4.0, 0.0, 1.0)
        fill = fill * (1.0 - ok) + num / np.maximum(den, 1e-6) * ok
    soft = cv2.GaussianBlur(skin, (0, 0), 0.015 * size)[..., None]
    out = img * soft + fill * (1.0 - soft)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- descriptors
CHEEK_IDX = ((1, 2, 3, 31, 39, 40, 41), (13, 14, 15, 35, 42, 47, 46))


def skin_lab(crop: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Median Lab (OpenCV 8-bit scale) of both cheeks: skin tone without brows, beard
    or lips. Median, not mean, so a specular highlight or a stray hair does not count."""
    mask = np.zeros(crop.shape[:2], np.uint8)
    for idx in CHEEK_IDX:
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(lm[list(idx)]).astype(np.int32)), 255)
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)
    px = lab[mask > 0]
    if len(px) < 20:
        px = lab.reshape(-1, 3)
    return np.median(px, 0).astype(np.float32)


def appearance_vector(crop: np.ndarray) -> np.ndarray:
    """Coarse, contrast-normalised 24x24 grey thumbnail of the central face (brows to
    chin, beard, cheeks): input to the appearance PCA that separates sex / age / hair."""
    h = crop.shape[0]
    a, b = int(0.22 * h), int(0.86 * h)
    c0, c1 = int(0.2 * h), int(0.8 * h)
    g = cv2.cvtColor(crop[a:b, c0:c1], cv2.COLOR_BGR2GRAY)
    g = cv2.resize(g, (24, 24), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    return (g - g.mean()) / (g.std() + 1e-6)


# --------------------------------------------------------------------------- the bank
@dataclass(frozen=True)
class DonorBank:
    """The shipped templates, plus what is needed to describe and match a face."""

    images: np.ndarray  # (K, S, S, 3) uint8, BGR, canonical crop, skin-extrapolated
    landmarks: np.ndarray  # (K, 68, 2) float32, crop coordinates
    counts: np.ndarray  # (K,) members per template (all >= MIN_MEMBERS)
    skin: np.ndarray  # (K, 3) mean cheek Lab
    centroids: np.ndarray  # (K, D) cluster descriptor centroids
    pca_mean: np.ndarray  # (576,) appearance PCA
    pca_basis: np.ndarray  # (P, 576)
    desc_scale: np.ndarray  # (3 + P,) per-feature scale used for clustering
    triangles: np.ndarray  # (T, 3) indices into 68 landmarks + border points
    projections: np.ndarray  # (BUCKET_BITS, 128) fixed random projections (bucket)
    ids: tuple[str, ...]

    @property
    def mean_shape(self) -> np.ndarray:
        """Member-weighted mean of the template shapes: the population mean face shape."""
        w = self.counts.astype(np.float32)[:, None, None]
        return (self.landmarks * w).sum(0) / w.sum()

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def describe(self, crop: np.ndarray, lm_crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(descriptor, skin Lab) of an aligned crop, in the space the groups live in."""
        lab = skin_lab(crop, lm_crop)
        app = self.pca_basis @ (appearance_vector(crop) - self.pca_mean)
        return np.concatenate([lab, app]).astype(np.float32) / self.desc_scale, lab

    def candidates(self, face_descriptor: np.ndarray, skin_lab: np.ndarray | None = None,
                   n: int = N_CANDIDATES) -> np.ndarray:
        """The ``n`` groups nearest to the face: skin tone counts double, so the donor
        complexion matches first and appearance (sex/age cues) second."""
        d = np.asarray(face_descriptor, np.float32).copy()
        if skin_lab is not None:
            d[:3] = np.asarray(skin_lab, np.float32) / self.desc_scale[:3]
        diff = self.centroids - d
        w = np.ones(diff.shape[1], np.float32)
        w[:3] = 2.0
        dist = ((diff**2) * w).sum(1)
        return np.argsort(dist)[: min(n, len(self))]

    def bucket(self, embedding: np.ndarray | None) -> bytes:
        """Sign bits of fixed random projections: coarse enough that two photos of one
        person usually agree, and reveals only BUCKET_BITS bits (it is HMAC'd anyway)."""
        if embedding is None:
            return b"\x00"
        e = np.asarray(embedding, np.float32).ravel()
        e = e / (np.linalg.norm(e) + 1e-12)
        bits = (self.projections @ e) > 0
        return bytes([int(sum(int(b) << i for i, b in enumerate(bits)))])

    def choose(self, face_descriptor: np.ndarray, skin_lab: np.ndarray | None,
               donor_key: bytes | None, embedding: np.ndarray | None) -> int:
        """Index of the donor for one face: keyed pick among the plausible groups."""
        return self.keyed_order(face_descriptor, skin_lab, donor_key, embedding)[0]

    def keyed_order(self, face_descriptor: np.ndarray, skin_lab: np.ndarray | None,
                    donor_key: bytes | None, embedding: np.ndarray | None) -> list[int]:
        """All donors in a keyed order: the plausible groups first (keyed permutation),
        then the rest (keyed too). The swap walks this list when a donor fails the
        privacy check, so the fallback is as unpredictable as the first pick."""
        cands = [int(c) for c in self.candidates(face_descriptor, skin_lab)]
        rest = [i for i in range(len(self)) if i not in cands]
        key = DEFAULT_DONOR_KEY if donor_key is None else donor_key
        bucket = self.bucket(embedding)

        def rank(i: int) -> bytes:
            return hmac.new(key, b"refacex-donor|" + bucket + bytes([i]), hashlib.sha256).digest()

        return sorted(cands, key=rank) + sorted(rest, key=rank)


def load_bank(path: Path | str | None = None) -> DonorBank:
    """Load the templates (cached per path: they are read once per process)."""
    return _load(str(DONORS_PATH if path is None else path))


@lru_cache(maxsize=4)
def _load(path: str) -> DonorBank:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} missing: run scripts/build_donors.py")
    z = np.load(path)
    counts = z["counts"]
    if int(counts.min()) < MIN_MEMBERS:
        raise ValueError(f"{path}: a template averages fewer than {MIN_MEMBERS} people")
    return DonorBank(images=z["images"], landmarks=z["landmarks"].astype(np.float32),
                     counts=counts, skin=z["skin"].astype(np.float32),
                     centroids=z["centroids"].astype(np.float32),
                     pca_mean=z["pca_mean"].astype(np.float32),
                     pca_basis=z["pca_basis"].astype(np.float32),
                     desc_scale=z["desc_scale"].astype(np.float32),
                     triangles=z["triangles"].astype(np.int32),
                     projections=z["projections"].astype(np.float32),
                     ids=tuple(str(s) for s in z["ids"]))
