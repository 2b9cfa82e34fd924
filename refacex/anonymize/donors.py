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

#: Shipped banks (package data): averaged templates (licence-clean) and photoreal faces.
DONORS_PATH = Path(__file__).resolve().parents[1] / "data" / "donors.npz"
GAN_DONORS_PATH = Path(__file__).resolve().parents[1] / "data" / "donors_gan.npz"
#: ``--donors`` choices: photoreal MobileStyleGAN faces (default) or averaged templates.
DONOR_KINDS = ("gan", "templates")
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


# --------------------------------------------------------------------------- the banks
#: Trait-distance weights of perceived sex and smile, and the scale of perceived age
#: (years), see ``GanDonorBank.distances``.
SEX_WEIGHT = 10.0
AGE_SCALE = 5.0
SMILE_WEIGHT = 3.0


@dataclass(frozen=True)
class Traits:
    """What the keyed donor choice keeps between a face and its donor: skin tone, head
    yaw, mouth opening, and (when the estimators ran) perceived sex, age and smile
    (face-api's 'happy' probability)."""

    skin: np.ndarray  # cheek Lab, OpenCV 8-bit scale
    yaw: float = 0.0
    mouth_open: float = 0.0
    p_male: float | None = None
    age: float | None = None
    happy: float | None = None


def _keyed_rank(key: bytes | None, bucket: bytes, items: list[int]) -> list[int]:
    """``items`` in the order of ``HMAC(key, bucket | item)``: unpredictable without the
    key, stable for one person (bucket) under one key."""
    k = DEFAULT_DONOR_KEY if key is None else key
    return sorted(items, key=lambda i: hmac.new(
        k, b"refacex-donor|" + bucket + i.to_bytes(4, "big"), hashlib.sha256).digest())


def _bucket(projections: np.ndarray, embedding: np.ndarray | None) -> bytes:
    """Sign bits of fixed random projections of the embedding: coarse enough that two
    photos of one person usually agree; reveals only a few bits (and is HMAC'd anyway)."""
    if embedding is None:
        return b"\x00"
    e = np.asarray(embedding, np.float32).ravel()
    e = e / (np.linalg.norm(e) + 1e-12)
    bits = (projections @ e) > 0
    return bytes([int(sum(int(b) << i for i, b in enumerate(bits)))])


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

    def image(self, k: int) -> np.ndarray:
        return self.images[k]

    def order_for(self, crop: np.ndarray, lm: np.ndarray, traits: Traits,
                  donor_key: bytes | None, embedding: np.ndarray | None) -> list[int]:
        """Keyed donor order for one face (the swap's single entry point to a bank)."""
        desc, lab = self.describe(crop, lm)
        return self.keyed_order(desc, lab, donor_key, embedding)

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
        return _bucket(self.projections, embedding)

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
        bucket = self.bucket(embedding)
        return _keyed_rank(donor_key, bucket, cands) + _keyed_rank(donor_key, bucket, rest)


#: Photoreal donors whose traits are nearest to the face; the key picks among them.
N_GAN_CANDIDATES = 16
#: A donor whose lower forehead has this much more fine texture than its cheeks has a
#: fringe, a cap or a headband there (``fringe_score``): pasted onto a bare forehead it
#: shows as a patch of someone else's hair (a platinum fringe on a dark-haired woman in
#: the t1 sample). Of the 226 shipped donors 19 score above it, nearly all fringes or caps.
FRINGE_MAX = 0.95


def fringe_score(crop: np.ndarray, lm: np.ndarray) -> float:
    """Fine texture (grey level minus its 2 px blur, median magnitude) of the lower
    forehead band over that of the cheeks. Hair and fabric are textured, skin is not; the
    ratio cancels the photo's sharpness. The darker-than-skin test of ``occluder_mask``
    misses light hair, which is why this one looks at texture, not colour."""
    hw = crop.shape[:2]
    band = (face_mask(hw, lm, 0.5) > 0) & (face_mask(hw, lm, 0.15) == 0)
    rows = np.arange(hw[0])[:, None]
    cheeks = ((cv2.erode(face_mask(hw, lm, 0.0), np.ones((15, 15), np.uint8)) > 0)
              & (rows > lm[41, 1] + 5) & (rows < lm[48, 1] - 3))
    if not band.any() or not cheeks.any():
        return 0.0
    g = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    hp = np.abs(g - cv2.GaussianBlur(g, (0, 0), 2.0))
    return float(np.median(hp[band]) / (np.median(hp[cheeks]) + 0.5))


class GanDonorBank:
    """Photoreal donors: MobileStyleGAN faces of nobody (``scripts/build_gan_donors.py``),
    screened against every training person and each other, shipped as JPEG crops in the
    anonymiser's canonical geometry and decoded on first use.

    Unlike the templates, each donor is one coherent face (skin texture, pores, a real
    nose and brows), so the result looks like a person, not an average. The keyed choice
    draws among the ``N_GAN_CANDIDATES`` donors whose traits (skin tone, perceived sex and
    age, mouth opening, yaw) are nearest to the face's; that pool is large enough that the
    key, not the face, decides which one (see ``benchmarks/bench_donor_keys.py``)."""

    def __init__(self, path: Path) -> None:
        z = np.load(path)
        self.path = path
        self.ids: tuple[str, ...] = tuple(str(s) for s in z["ids"])
        self._jpeg = z["jpeg"]
        self._offsets = z["offsets"]
        self.landmarks = z["landmarks"].astype(np.float32)
        self.pose = z["pose"].astype(np.float32)
        self.skin = z["skin"].astype(np.float32)
        self.mouth_open = z["mouth_open"].astype(np.float32)
        self.p_male = z["p_male"].astype(np.float32) if "p_male" in z.files else None
        self.age = z["age"].astype(np.float32) if "age" in z.files else None
        self.happy = z["happy"].astype(np.float32) if "happy" in z.files else None
        self.eye_open = z["eye_open"].astype(np.float32)
        self.triangles = z["triangles"].astype(np.int32)
        self.projections = z["projections"].astype(np.float32)
        self.mean_shape = self.landmarks.mean(0)
        # Quality mode (``gan_render``): each donor's style vector and the fitted
        # attribute directions of the generator's style space.
        self.styles = z["styles"].astype(np.float32) if "styles" in z.files else None
        self.directions = z["directions"].astype(np.float32) if "directions" in z.files else None
        self.direction_attrs = (tuple(str(a) for a in z["direction_attrs"])
                                if "direction_attrs" in z.files else ())
        self._images: dict[int, np.ndarray] = {}
        self._fringe: dict[int, bool] = {}
        if len(self._offsets) != len(self.ids) + 1 or self.landmarks.shape[1:] != (68, 2):
            raise ValueError(f"{path}: inconsistent donor bank")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return int(self.image(0).shape[0])

    def image(self, k: int) -> np.ndarray:
        """Donor ``k``'s canonical crop (BGR uint8), decoded once."""
        if k not in self._images:
            buf = self._jpeg[self._offsets[k]:self._offsets[k + 1]]
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"donor {self.ids[k]}: undecodable crop")
            self._images[k] = img
        return self._images[k]

    def donor_attributes(self, k: int) -> dict[str, float]:
        """Donor ``k``'s measured attributes, named as in ``direction_attrs``."""
        vals = {"yaw": self.pose[k, 0], "pitch": self.pose[k, 1],
                "mouth_open": self.mouth_open[k], "eye_open": self.eye_open[k],
                "p_male": np.nan if self.p_male is None else self.p_male[k],
                "age": np.nan if self.age is None else self.age[k]}
        return {n: float(v) for n, v in vals.items()}

    def distances(self, t: Traits) -> np.ndarray:
        """Trait distance of every donor to the face. Scales: 10 Lab units of lightness
        or yellowness, 0.5 of sex probability, ``AGE_SCALE`` years, 0.5 of smile
        probability, 0.15 of mouth opening and 12 degrees of yaw each count 1; sex counts
        most (a woman must not get a man's face), then smile and skin tone. The smile
        term exists because most rendered faces smile (face-api 'happy' >= 0.98 for 3 in
        4 donors): matched only by mouth opening, neutral faces got smiling donors, whose
        raised cheeks and eye creases survive the warp (expression agreement 51 %)."""
        skin = np.asarray(t.skin, np.float32)
        d = (((self.skin[:, 0] - skin[0]) / 10.0) ** 2 + ((self.skin[:, 2] - skin[2]) / 10.0) ** 2
             + ((self.skin[:, 1] - skin[1]) / 10.0) ** 2 * 0.5)
        d += ((self.mouth_open - t.mouth_open) / 0.15) ** 2
        d += ((self.pose[:, 0] - t.yaw) / 12.0) ** 2
        if t.p_male is not None and self.p_male is not None:
            d += SEX_WEIGHT * ((self.p_male - t.p_male) / 0.5) ** 2
        if t.age is not None and self.age is not None:
            d += ((self.age - t.age) / AGE_SCALE) ** 2
        if t.happy is not None and self.happy is not None:
            d += SMILE_WEIGHT * ((self.happy - t.happy) / 0.5) ** 2
        return d

    def order_for(self, crop: np.ndarray, lm: np.ndarray, traits: Traits,
                  donor_key: bytes | None, embedding: np.ndarray | None) -> list[int]:
        """All donors in a keyed order: the nearest ``N_GAN_CANDIDATES`` by traits first
        (keyed permutation), then the rest by trait distance in keyed blocks of the same
        size, so a fallback donor is still a plausible match and still unpredictable."""
        del crop, lm
        near = [int(i) for i in np.argsort(self.distances(traits), kind="stable")]
        # Donors with a fringe or cap over the forehead go last (``FRINGE_MAX``); only the
        # nearest few are looked at, so the first swap does not decode the whole bank.
        head, tail = near[:2 * N_GAN_CANDIDATES], near[2 * N_GAN_CANDIDATES:]
        near = ([i for i in head if not self.has_fringe(i)] + tail
                + [i for i in head if self.has_fringe(i)])
        bucket = _bucket(self.projections, embedding)
        out: list[int] = []
        for s in range(0, len(near), N_GAN_CANDIDATES):
            out += _keyed_rank(donor_key, bucket, near[s:s + N_GAN_CANDIDATES])
        return out

    def has_fringe(self, k: int) -> bool:
        """Does donor ``k`` have hair or a cap over its lower forehead (``fringe_score``)?"""
        if k not in self._fringe:
            self._fringe[k] = fringe_score(self.image(k), self.landmarks[k]) > FRINGE_MAX
        return self._fringe[k]


def load_bank(kind: str = "gan", path: Path | str | None = None) -> DonorBank | GanDonorBank:
    """The donor bank of ``kind`` (cached per path: read once per process)."""
    if kind not in DONOR_KINDS:
        raise ValueError(f"unknown donors {kind!r}: choose from {', '.join(DONOR_KINDS)}")
    if kind == "gan":
        return _load_gan(str(GAN_DONORS_PATH if path is None else path))
    return _load(str(DONORS_PATH if path is None else path))


def bank_for_id(donor_id: str) -> DonorBank | GanDonorBank:
    """The bank that holds ``donor_id`` (photoreal ids start with 'g')."""
    return load_bank("gan" if donor_id.startswith("g") else "templates")


@lru_cache(maxsize=4)
def _load_gan(path: str) -> GanDonorBank:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} missing: run scripts/build_gan_donors.py")
    return GanDonorBank(Path(path))


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
