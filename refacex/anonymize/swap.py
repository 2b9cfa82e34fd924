"""``swap``: replace a face's identity with a keyed donor face (no network at run time).

Why this design: the donors belong to nobody. By default they are photoreal faces
rendered by MobileStyleGAN and screened against every training person (``donors.py``,
``--donors gan``); the licence-clean alternative is shape-normalised means of >= 30
training people (``--donors templates``). The key picks the donor among those whose
perceived sex, age, skin tone, mouth opening and yaw match the face. Everything that is
*not* identity is kept from the original:

* pose and expression — the donor texture is warped (piecewise affine over the 68
  points + crop-border points) onto the face's OWN landmarks, so head pose, jaw, lips
  and brows move as in the photo;
* gaze, blinks, teeth — the eye openings and the mouth interior keep the original
  pixels (``part_mask``, feathered). By default only the eyelid opening itself is kept
  (``eye_dilate=0``): a dilated eye region (lids, lashes) measurably raised the
  recognisers' similarity, so it was reduced;
* colour, lighting and grain — Lab mean/std matching inside the face mask, a second
  order spherical-harmonic shading transfer (``refacex.faces.photometry``) so a side-lit
  face stays side-lit, the photo's noise level (``blend.match_grain``), and grey-scale
  photos stay grey;
* what is in front of the face — fringes, hat brims and hands over the forehead and
  temples stay in front (``blend.occluder_mask``); the donor goes in with a multi-band
  blend (``blend.multiband_blend``), so there is no seam and no soft band.

``strength`` s in [0, 1] scales the shape change and blends the texture
``(1 - s) * original + s * donor``. The shape change is pose-safe: the donor group's
deviation from the population mean shape (rotated/scaled into the face) is added, and
the face's own left-right-symmetric deviation (widths and heights) is removed —
for turned faces too, although foreshortening is symmetric as well: the pose hold
below keeps them turned. Moving towards
the donor's raw (frontal) landmarks instead was tried and turned faces by up to 20°.
Even these offsets change the 68-point PnP pose (a longer nose or a narrower face reads
as pitch or yaw: up to ~10° on the samples, more with the escalated settings), so the
new landmarks are then held at the face's own PnP pose by a smooth least-norm
correction (``hold_pose``). What remains is the donor *texture* moving the points dlib
finds (up to ~9° of yaw on the rolled face 0 of the t1 sample); the verification loop
in ``apply`` measures that as the audit does and re-renders against it.
All work happens in the 256 px canonical crop; only ``ctx.rect`` of the image is written.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import cv2
import numpy as np

from refacex.anonymize.base import CROP_SIZE, Anonymizer, FaceContext
from refacex.anonymize.blend import local_tone, match_grain, multiband_blend, occluder_mask
from refacex.anonymize.donors import (
    DonorBank,
    GanDonorBank,
    Traits,
    border_points,
    load_bank,
    piecewise_affine,
    skin_lab,
)
from refacex.faces.align import paste_back, similarity_transform, transform_points
from refacex.faces.attributes import face_attributes, is_greyscale
from refacex.faces.landmarks import MOUTH_INNER, MOUTH_OUTER, eye_openness, mouth_openness
from refacex.faces.masks import face_mask, part_mask
from refacex.faces.photometry import face_normals, fit_sh_lighting, transfer_shading
from refacex.faces.pose import PNP_POINTS, estimate_pose
from refacex.faces.recognizers import get_recognizer
from refacex.faces.types import Face

#: Resolution of the lighting fit: shading is low-frequency, 64 px is plenty and ~16x
#: cheaper than fitting at 256.
_SH_SIZE = 64
#: Clamp of the linear-light shading gain: beyond this the fit is explaining albedo or
#: occluders, not light. Photoreal donors carry their own (soft, frontal) light and
#: specular highlights, which a wide gain blows out into bright patches: a narrower clamp.
_GAIN_RANGE = {"templates": (0.6, 1.6), "gan": (0.8, 1.25)}
#: |yaw| (degrees) at which the removal of the face's own symmetric shape reaches 0.
#: 90: not faded. Fading it (25) was needed before ``hold_pose``; with the pose held it
#: only left turned faces their own shape (LFW eval, 60 faces, unverified: SFace verified
#: 26.7 -> 16.7 %, FaceRes 50 -> 37 %, median pose error 3.2 -> 2.9 degrees).
_YAW_FADE = 90.0
#: Re-detection region for the checks: the edit rectangle plus this margin (px), its
#: origin snapped to YuNet's coarsest stride so the result matches a full-image detection.
_DETECT_MARGIN, _DETECT_STRIDE = 128, 32
#: A verified candidate whose perceived sex flipped (face-api probability on the far side
#: of 0.5 from a face at least ``_SEX_CLEAR`` from it) is ranked as if its pose error
#: were this: kept only when no other private candidate exists.
_SEX_FLIP_PENALTY, _SEX_CLEAR = 90.0, 0.25
#: Escalation candidates: donors whose risk is within this of the least risky one.
_ESCALATE_BAND = 0.02
#: Point groups whose opening is expression, not identity: the shape change moves each
#: vertically as a whole (``render``).
_RIGID_PARTS = (slice(36, 42), slice(42, 48), slice(48, 68))
#: Left-right mirror permutation of the iBUG 68 points.
_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 21, -1)) + list(range(21, 16, -1))
    + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65])


def hold_pose(lm: np.ndarray, target: np.ndarray, shape_hw: tuple[int, int],
              goal: tuple[float, float, float], iters: int = 3, tol: float = 0.5) -> np.ndarray:
    """``target`` (68 image points) moved so that its PnP pose (``estimate_pose``, as the
    audit reads it) is ``goal`` (yaw, pitch, roll).

    The correction is a smooth field — Gaussian bumps (sigma 0.4 inter-ocular distances,
    on the face's own points ``lm``) centred on the 14 points the PnP reads, evaluated
    at all 68 — of least norm, found by damped Gauss-Newton (numerical Jacobian, ~30 PnP
    solves per step, 1-2 steps typically). Where that does not reach ``tol`` degrees of
    yaw/pitch (the PnP is ill-conditioned for some faces), the shape change is scaled
    back towards ``lm`` until it does: pose wins over shape."""
    lm = np.asarray(lm, np.float64)
    t = np.asarray(target, np.float64)
    iod = float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))
    d2 = ((lm[:, None, :] - lm[None, PNP_POINTS, :]) ** 2).sum(-1)
    basis = np.exp(-d2 / (2.0 * (0.4 * iod) ** 2))  # (68, 14)
    goal_a = np.asarray(goal, np.float64)
    n_par = 2 * len(PNP_POINTS)

    def residual(pts: np.ndarray) -> np.ndarray:
        r = np.array(estimate_pose(pts, shape_hw).as_tuple()) - goal_a
        r[2] = (r[2] + 180.0) % 360.0 - 180.0  # roll wraps
        return r

    def worst(r: np.ndarray) -> float:
        return float(np.abs(r).max()) if np.isfinite(r).all() else np.inf

    cur, r = t, residual(t)
    eps = 0.02 * iod
    for _ in range(iters):
        if worst(r) < 0.1:
            break
        jac = np.zeros((3, n_par))
        for j in range(n_par):
            w = np.zeros(n_par)
            w[j] = eps
            jac[:, j] = (residual(cur + basis @ w.reshape(-1, 2)) - r) / eps
        if not np.isfinite(jac).all():
            break
        step = basis @ (-np.linalg.pinv(jac, rcond=1e-3) @ r).reshape(-1, 2)
        for lam in (1.0, 0.5, 0.25):  # backtrack: the PnP is not linear far out
            cand = cur + lam * step
            rc = residual(cand)
            if worst(rc) < worst(r):
                cur, r = cand, rc
                break
        else:
            break
    if not worst(r[:2]) < tol:
        lo, hi = 0.0, 1.0  # bisect the largest share of the change that keeps the pose
        for _ in range(6):
            mid = 0.5 * (lo + hi)
            if worst(residual(lm + mid * (cur - lm))[:2]) < tol:
                lo = mid
            else:
                hi = mid
        cur = lm + lo * (cur - lm)
    return cur.astype(np.float32)


def _lab_stats(lab: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    px = lab[sel]
    return px.mean(0), px.std(0) + 1e-3


class SwapAnonymizer(Anonymizer):
    """Keyed donor-template swap that keeps pose, expression, gaze, colour and lighting.

    ``shape_alpha`` (how far the shape moves to the donor's at strength 1) is modest so
    the face outline stays consistent with hair, ears and neck, which are not replaced.
    ``eye_dilate`` is the dilation (crop px) of the kept eye/mouth-interior region;
    0 keeps only the eyelid opening (iris, pupil, sclera) — less identity leaks.
    ``eye_keep`` < 1 blends the donor's eyes in too (0: donor eyes, gaze lost).
    ``own_beta`` / ``sym_y``: how much of the face's own symmetric shape is removed
    (``sym_y``: its vertical proportions too; 1 by default since ``hold_pose`` keeps
    the pitch they would otherwise change); ``yaw_fade``: the |yaw| at which that
    removal has faded to 0.
    ``pose_tol``: the yaw/pitch tolerance (degrees) of ``hold_pose``; beyond it the shape
    change is scaled back. 2, not 0.5: the donor texture alone moves the measured pose
    by about 3 degrees (median), so a tighter hold only gave back identity (shape).
    ``forehead``: height of the replaced forehead band (x brow-to-nose distance).
    ``local_tone``: opt-in local colour transfer scale (x inter-ocular distance; 0 = off).
    ``keep_pose``: hold the new landmarks at the face's own PnP pose (``hold_pose``;
    not for near-profile faces, |yaw| > 45, whose 68-point pose is unreliable).
    ``max_pose_error`` / ``pose_retries``: the verified yaw/pitch tolerance (degrees),
    and how often a private candidate that misses it is re-rendered aimed against the
    measured change.
    """

    name = "swap"
    yaw_fade = _YAW_FADE
    replaces_identity = True
    #: Stronger settings tried, in order, when no donor alone gets below the target
    #: (each of up to two of the least risky donors goes up this ladder, see ``apply``).
    #: All are pose-held (``keep_pose``): they cost gaze (donor eyes) and shape
    #: fidelity, not head pose.
    #: No half-blended eyes (``eye_keep`` 0.5 was the first step): two pairs of eyes
    #: showed through each other on the t1 sample.
    ESCALATION = ({"eye_keep": 0.0, "shape_alpha": 1.3},
                  {"eye_keep": 0.0, "shape_alpha": 1.6},
                  {"eye_keep": 0.0, "shape_alpha": 2.0, "own_beta": 1.5},
                  {"eye_keep": 0.0, "shape_alpha": 2.0, "own_beta": 2.0})

    def __init__(self, strength: float = 1.0, shape_alpha: float = 1.0, eye_dilate: int = 0,
                 shading: bool = True, forehead: float = 0.9, own_beta: float = 1.0,
                 sym_y: float = 1.0, eye_keep: float = 1.0, pose_tol: float = 2.0,
                 bank: DonorBank | None = None, verify: bool = True,
                 verify_margin: float = 0.08, max_tries: int = 10,
                 verify_dlib: bool = True, verify_margin_dlib: float = 0.05,
                 max_pose_error: float = 4.0, keep_pose: bool = True,
                 pose_retries: int = 2, donors: str = "gan", occlusion: bool = True,
                 quality: bool = False, local_tone: float = 0.0) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.strength = float(strength)
        self.shape_alpha = float(shape_alpha)
        self.eye_dilate = int(eye_dilate)
        self.shading = shading
        # 0.9, not less: replacing only the lower forehead (0.6) left the photoreal donors'
        # hair out of the paste but kept enough of the original that 2 of the 7 sample
        # faces no longer verified as private. The donors' own hair is masked instead.
        self.forehead = float(forehead)
        self.own_beta = float(own_beta)
        self.sym_y = float(sym_y)
        self.eye_keep = float(eye_keep)
        self.pose_tol = float(pose_tol)
        self._bank = bank
        self.verify = verify
        self.verify_margin = float(verify_margin)
        self.max_tries = int(max_tries)
        self.verify_dlib = verify_dlib
        self.verify_margin_dlib = float(verify_margin_dlib)
        self.max_pose_error = float(max_pose_error)
        self.keep_pose = keep_pose
        self.pose_retries = int(pose_retries)
        self.donors = donors
        self.occlusion = occlusion
        self.quality = quality
        self.local_tone = float(local_tone)
        self._renderer = None
        self._lm68 = None

    @property
    def checks(self) -> bool:
        """Whether ``apply`` verifies its result (and so may try several donors)."""
        return self.verify and self.strength >= 1.0

    @property
    def bank(self) -> DonorBank | GanDonorBank:
        if self._bank is None:
            self._bank = load_bank(self.donors)
        return self._bank

    # ------------------------------------------------------------------ steps
    def _embedding(self, img: np.ndarray, ctx: FaceContext) -> np.ndarray:
        """The face's SFace embedding (computed once; the pipeline usually has it)."""
        emb = ctx.face.embeddings.get("sface")
        if emb is None:
            emb = get_recognizer("sface").embed(img, ctx.face)
            ctx.face.embeddings["sface"] = emb
        return emb

    def donor_order(self, crop: np.ndarray, lm: np.ndarray, ctx: FaceContext,
                    img: np.ndarray, traits: Traits | None = None) -> list[int]:
        """Keyed donor order for this face (HMAC of the key and its identity bucket);
        a forced ``ctx.donor_index`` goes first, and alone when nothing is verified.
        ``traits``: this face's, when the caller already has them."""
        if ctx.donor_index is not None and not self.checks:
            return [ctx.donor_index]
        if traits is None:
            traits = self.traits(img, ctx, crop, lm)
        order = self.bank.order_for(crop, lm, traits, ctx.donor_key, self._embedding(img, ctx))
        if ctx.donor_index is not None:
            order = [ctx.donor_index] + [k for k in order if k != ctx.donor_index]
        return order

    def traits(self, img: np.ndarray, ctx: FaceContext, crop: np.ndarray,
               lm: np.ndarray) -> Traits:
        """What the donor must share with this face (see ``donors.Traits``)."""
        pose = ctx.face.pose or estimate_pose(ctx.face.landmarks, img.shape[:2])
        att = face_attributes(img, ctx.face)
        return Traits(skin=skin_lab(crop, lm), yaw=float(pose.yaw),
                      mouth_open=mouth_openness(lm), p_male=att.p_male, age=att.age,
                      happy=att.expression_probs.get("happy"))

    def _match_colour(self, donor: np.ndarray, orig: np.ndarray, sel: np.ndarray) -> np.ndarray:
        """Lab mean/std transfer inside the face (std ratio clamped: a bearded or
        harshly lit face must not turn the donor into a high-contrast caricature)."""
        dl = cv2.cvtColor(donor, cv2.COLOR_BGR2LAB).astype(np.float32)
        ol = cv2.cvtColor(orig, cv2.COLOR_BGR2LAB).astype(np.float32)
        mu_d, sd_d = _lab_stats(dl, sel)
        mu_o, sd_o = _lab_stats(ol, sel)
        ratio = np.clip(sd_o / sd_d, 0.6, 1.6)
        out = (dl - mu_d) * ratio + mu_o
        return cv2.cvtColor(np.clip(out + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)

    @staticmethod
    def _match_lips(donor: np.ndarray, orig: np.ndarray, lm: np.ndarray) -> np.ndarray:
        """The donor's lips given the original lips' mean hue and saturation (Lab a/b,
        feathered).

        Rendered donors often have saturated, lipstick-red lips, which the skin colour
        match leaves as they are: on a man's face they read as make-up. Lip colour is
        not what identifies a face, and keeping it keeps lipstick where there was some."""
        hw = donor.shape[:2]
        lips = np.zeros(hw, np.uint8)
        cv2.fillPoly(lips, [np.round(lm[MOUTH_OUTER]).astype(np.int32)], 255)
        cv2.fillPoly(lips, [np.round(lm[MOUTH_INNER]).astype(np.int32)], 0)
        sel = cv2.erode(lips, np.ones((3, 3), np.uint8)) > 0
        if sel.sum() < 20:
            return donor
        dl = cv2.cvtColor(donor, cv2.COLOR_BGR2LAB).astype(np.float32)
        ol = cv2.cvtColor(orig, cv2.COLOR_BGR2LAB).astype(np.float32)
        shift = ol[sel].mean(0) - dl[sel].mean(0)
        # Hue and saturation only: shifting the lips' lightness too moved the mouth edges
        # dlib finds (a t1 face's measured yaw by 5 degrees).
        shift[0] = 0.0
        w = cv2.GaussianBlur(lips.astype(np.float32) / 255.0, (0, 0), 1.5)[..., None]
        out = dl + w * shift
        return cv2.cvtColor(np.clip(out + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)

    def _shade(self, donor: np.ndarray, orig: np.ndarray, lm: np.ndarray,
               sel: np.ndarray) -> np.ndarray:
        """Move the donor's (frontal, averaged-out) shading to the original's SH lighting.

        The gain map is computed at 64 px by re-shading a constant linear image with
        ``transfer_shading`` and applied at 256 px in sRGB (gain ** (1 / 2.2))."""
        n = _SH_SIZE
        f = n / donor.shape[0]
        small_sel = cv2.resize(sel.astype(np.uint8), (n, n), interpolation=cv2.INTER_NEAREST) > 0
        normals = face_normals((n, n), lm * f)
        ds = cv2.resize(donor, (n, n), interpolation=cv2.INTER_AREA)
        os_ = cv2.resize(orig, (n, n), interpolation=cv2.INTER_AREA)
        try:
            c_d = fit_sh_lighting(ds, normals, small_sel).coeffs
            c_o = fit_sh_lighting(os_, normals, small_sel).coeffs
        except ValueError:
            return donor  # too few pixels (tiny or heavily occluded face): skip shading
        # Only the order <= 1 terms (ambient + one directional light) are transferred:
        # with the ellipsoid normals the 2nd-order terms mostly fit albedo (brows, beard,
        # lips) rather than light, and their ratio swings the gain wildly.
        c_d[4:] = 0.0
        c_o[4:] = 0.0
        weight = cv2.GaussianBlur(small_sel.astype(np.float32), (0, 0), 2.0)
        gain = transfer_shading(np.ones((n, n, 3)), c_d, c_o, normals, weight, max_gain=2.0)
        gain = cv2.resize(gain.astype(np.float32), donor.shape[1::-1],
                          interpolation=cv2.INTER_LINEAR)
        lo, hi = _GAIN_RANGE[self.donors]
        gain = np.power(np.clip(gain, lo, hi), 1.0 / 2.2)
        return np.clip(donor.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ main
    def render(self, img: np.ndarray, ctx: FaceContext, k: int | None = None,
               shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray, int]:
        """(new crop, paste alpha, donor index) in canonical-crop space."""
        size = CROP_SIZE
        bank = self.bank
        m = np.asarray(ctx.matrix, np.float64)
        crop = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
        lm = transform_points(m, ctx.face.landmarks).astype(np.float32)
        if k is None:
            k = self.donor_order(crop, lm, ctx, img)[0]
        s = self.strength
        border = border_points(size)
        d_lm = bank.landmarks[k]
        # Shape change = the donor group's deviation from the mean of all groups (both
        # frontal), rotated/scaled into this face. Moving towards the donor's raw shape
        # instead would also pull the pose towards frontal (a turned face would turn).
        mean_lm = bank.mean_shape
        to_face = similarity_transform(mean_lm, lm)
        lin = to_face[:, :2]
        # The face's own identity shape: its left-right SYMMETRIC deviation from the mean
        # (face/eye/nose/mouth widths, heights). Yaw and roll mostly show up as the
        # antisymmetric part and are kept; ``sym_y`` < 1 spares vertical proportions,
        # which pitch also changes.
        al = transform_points(similarity_transform(lm, mean_lm), lm)
        dev = al - mean_lm
        mir = dev[_MIRROR] * np.array([-1.0, 1.0])
        sym = 0.5 * (dev + mir) * np.array([1.0, self.sym_y])
        # Foreshortening of a turned face is symmetric too, so removing it could
        # "un-turn" the face; ``hold_pose`` undoes that, and ``yaw_fade`` (no fade by
        # default) can spare turned faces where the pose is not held.
        pose = ctx.face.pose or estimate_pose(ctx.face.landmarks, img.shape[:2])
        # Frontal shape offsets do not transfer to near-profile faces (they read as a
        # change of pitch, and the pose is not held there): both fade out past 45 degrees.
        profile = float(np.clip((75.0 - abs(pose.yaw)) / 30.0, 0.0, 1.0))
        fade = float(np.clip(1.0 - abs(pose.yaw) / self.yaw_fade, 0.0, 1.0))
        beta = self.own_beta * fade * profile
        alpha_shape = self.shape_alpha * profile
        delta = alpha_shape * (d_lm - mean_lm) - beta * sym
        # The eyes and the mouth move vertically as wholes (their height in the face is
        # identity) but keep their own openings, which are expression: with the vertical
        # proportions changed too (``sym_y``), an open smile was closed.
        for part in _RIGID_PARTS:
            delta[part, 1] = delta[part, 1].mean()
        target = (lm + s * delta @ lin.T).astype(np.float32)
        if self.keep_pose and s > 0 and abs(pose.yaw) <= 45:
            inv = cv2.invertAffineTransform(m)
            goal = (pose.yaw - shift[0], pose.pitch - shift[1], pose.roll)
            held = hold_pose(ctx.face.landmarks, transform_points(inv, target),
                             img.shape[:2], goal, tol=self.pose_tol)
            target = transform_points(m, held).astype(np.float32)
        dst = np.vstack([target, border])
        moved = s > 0 and float(np.abs(target - lm).max()) > 0.05
        orig = (piecewise_affine(crop, np.vstack([lm, border]), dst, bank.triangles, size)
                if moved else crop)
        fmask = face_mask((size, size), target, forehead=self.forehead)
        parts = part_mask((size, size), target, dilate=self.eye_dilate)
        if self.eye_keep < 1.0:
            eyes = np.zeros_like(parts)
            for sl in (slice(36, 42), slice(42, 48)):
                cv2.fillPoly(eyes, [np.round(target[sl]).astype(np.int32)], 255)
            eyes = cv2.dilate(eyes, np.ones((2 * self.eye_dilate + 1,) * 2, np.uint8))
            parts = np.maximum(parts.astype(np.float32) - (1.0 - self.eye_keep) * eyes, 0)
            parts = parts.astype(np.uint8)
        # Statistics over bare skin only: no hairline, brows, eyes or lips.
        skin = cv2.erode(face_mask((size, size), target, forehead=0.0),
                         np.ones((9, 9), np.uint8))
        sel = (skin > 0) & (cv2.dilate(parts, np.ones((9, 9), np.uint8)) == 0)
        if sel.sum() < 50:
            sel = fmask > 0
        occ = np.zeros((size, size), np.float32)
        if s <= 0:
            tex = orig
        else:
            donor_img, donor_lm = self._donor_face(k, lm, pose)
            donor = piecewise_affine(donor_img, np.vstack([donor_lm, border]), dst,
                                     bank.triangles, size)
            if self.occlusion:
                # The donor's own hair over its temples / upper forehead is not pasted
                # onto bare skin: there the original stays.
                occ = occluder_mask(donor, target, skin_lab(donor, target), self.forehead)
            donor = self._match_colour(donor, orig, sel)
            donor = self._match_lips(donor, orig, target)
            if self.shading:
                donor = self._shade(donor, orig, target, sel)
            if self.local_tone > 0:
                # Off by default: it gives the donor the original's low frequencies
                # (light, tone), which today's robust recovery also replaces with the
                # coarse face code's — the recovered face then came out worse than the
                # anonymised one (22.7 vs 22.9 dB on a 250 px photo). Measured over the
                # forehead too (the hairline patch) it drew hair streaks onto the skin.
                iod_t = float(np.linalg.norm(target[36:42].mean(0) - target[42:48].mean(0)))
                donor = local_tone(donor, orig, sel, self.local_tone * iod_t)
            donor = match_grain(donor, orig, sel, seed=k)
            if is_greyscale(crop):
                grey = cv2.cvtColor(donor, cv2.COLOR_BGR2GRAY)
                donor = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
            tex = donor if s >= 1 else cv2.addWeighted(orig, 1.0 - s, donor, s, 0.0)
        # Face alpha minus the kept parts (eye openings, mouth interior) and minus the
        # occluders in front of the forehead and temples (fringes, hat brims, hands).
        iod = float(np.linalg.norm(target[36:42].mean(0) - target[42:48].mean(0)))
        sig = max(1.0, 0.08 * iod)
        # Erode first so the blend ends AT the jaw/forehead line: the donor crop's own
        # hair and background must not bleed outside the face.
        er = int(2 * sig) | 1
        core = cv2.erode(fmask, np.ones((er, er), np.uint8))
        fa = cv2.GaussianBlur(core.astype(np.float32) / 255.0, (0, 0), 0.5 * sig)
        pa = cv2.GaussianBlur(parts.astype(np.float32) / 255.0, (0, 0), max(0.8, 0.03 * iod))
        if self.occlusion:
            occ = np.maximum(occ, occluder_mask(orig, target, skin_lab(orig, target),
                                                self.forehead))
        a = np.clip(fa * (1.0 - pa) * (1.0 - occ), 0.0, 1.0)
        # The donor only inside the face (the original elsewhere), then a multi-band
        # blend: shading and colour fade gradually, texture switches crisply — no seam
        # line and no soft band.
        inside = (cv2.dilate(core, np.ones((3, 3), np.uint8)) > 0)[..., None]
        top = np.where(inside, tex, orig)
        new = multiband_blend(orig, top, a)
        if self.occlusion:
            # Thin occluders (single strands) average away in the coarse bands, which
            # would tint them with the donor: put their own pixels back on top.
            keep = cv2.GaussianBlur((occ > 0.5).astype(np.float32), (0, 0), 0.7)[..., None]
            new = np.clip(new * (1.0 - keep) + orig * keep + 0.5, 0, 255).astype(np.uint8)
        # Paste region: the face plus a margin for the (small) background deformation.
        grow = max(3, int(0.25 * iod)) | 1
        paste = cv2.dilate(np.maximum(fmask, face_mask((size, size), lm, forehead=self.forehead)),
                           cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
        paste = cv2.GaussianBlur(paste.astype(np.float32) / 255.0, (0, 0), grow / 3.0)
        # Clip: paste_back treats a mask whose max exceeds 1 (blur round-off) as 0..255.
        return new, np.clip(paste, 0.0, 1.0), k

    def _donor_face(self, k: int, lm: np.ndarray, pose) -> tuple[np.ndarray, np.ndarray]:
        """Donor ``k``'s crop and landmarks: as shipped, or in quality mode re-rendered
        with this face's yaw, pitch, mouth and eye opening (``gan_render``), so the warp
        only has to fit shape, not turn or open a face."""
        bank = self.bank
        if self.quality and isinstance(bank, GanDonorBank):
            if self._renderer is None:
                from refacex.anonymize.gan_render import DonorRenderer

                self._renderer = DonorRenderer(bank)
            target = {"yaw": float(pose.yaw), "pitch": float(pose.pitch),
                      "mouth_open": mouth_openness(lm), "eye_open": min(eye_openness(lm))}
            got = self._renderer.render(k, target)
            if got is not None:
                return got
        return bank.image(k), bank.landmarks[k]

    def _paste(self, img: np.ndarray, ctx: FaceContext, new: np.ndarray,
               alpha: np.ndarray) -> np.ndarray:
        """The edit rectangle with ``new`` pasted in (the image itself is not touched)."""
        x, y, w, h = ctx.rect
        # Paste into the edit rectangle only: shift the transform to ROI coordinates.
        m_roi = np.asarray(ctx.matrix, np.float64).copy()
        m_roi[:, 2] += m_roi[:, :2] @ np.array([x, y], np.float64)
        return paste_back(img[y:y + h, x:x + w], new, m_roi, mask=alpha, feather=0.004)

    def _redetect(self, img: np.ndarray, ctx: FaceContext):
        """The swapped face as a detector sees it now (image coordinates), or None."""
        from refacex.faces.detect import _detector, match_detection

        x, y, w, h = ctx.rect
        ih, iw = img.shape[:2]
        # The region around the edit rectangle, its origin on YuNet's 32 px anchor grid
        # and with a margin for the network's receptive field: then the detection (box,
        # 5 points, hence the 68 points and the pose) is the one the whole image gives,
        # as the audit sees it. A plain crop at the rectangle moved the 5 points by up to
        # 10 px and the measured pose by up to 4 degrees.
        x0 = max(0, x - _DETECT_MARGIN) // _DETECT_STRIDE * _DETECT_STRIDE
        y0 = max(0, y - _DETECT_MARGIN) // _DETECT_STRIDE * _DETECT_STRIDE
        x1, y1 = min(iw, x + w + _DETECT_MARGIN), min(ih, y + h + _DETECT_MARGIN)
        found = _detector().detect(np.ascontiguousarray(img[y0:y1, x0:x1]))
        for f in found:
            f.box = f.box + np.array([x0, y0, 0, 0], np.float32)
            f.kps = f.kps + np.array([x0, y0], np.float32)
        return match_detection(ctx.face, found)[0]

    def _pose_change(self, img: np.ndarray, ctx: FaceContext, ref, seen) -> np.ndarray:
        """Signed (yaw, pitch) change (degrees) of the swapped face, read as the audit
        reads it (re-detection, 68 landmarks, PnP). Near-profile faces (|yaw| > 45) are
        not held to it (zeros): their 68-point pose is itself unreliable."""
        if abs(ref.yaw) > 45:
            return np.zeros(2)
        lm = self._landmarker().predict(img, seen if seen is not None else ctx.face)
        p = estimate_pose(lm, img.shape[:2])
        return np.array([p.yaw - ref.yaw, p.pitch - ref.pitch])

    @staticmethod
    def _sex_flipped(img: np.ndarray, ctx: FaceContext, seen, p_male: float) -> bool:
        """Whether a face clearly perceived as one sex (face-api, |p - 0.5| >= 0.25) is
        now perceived as the other. The donor's sex is matched, but the result is the
        donor's texture on the face's own outline, hair and context, and 1 in 10
        results still read as the other sex (LFW eval, 80 faces)."""
        if abs(p_male - 0.5) < _SEX_CLEAR:
            return False
        now = face_attributes(img, seen if seen is not None else ctx.face).p_male
        return (now - 0.5) * (p_male - 0.5) < 0

    def _landmarker(self):
        from refacex.faces.landmarks import Dlib68Landmarker

        if getattr(self, "_lm68", None) is None:
            self._lm68 = Dlib68Landmarker()
        return self._lm68

    def _risk(self, img: np.ndarray, ctx: FaceContext, original: np.ndarray,
              original_dlib: np.ndarray | None, seen) -> float:
        """How close the swapped face still is to being recognised; < 0 means both
        recognisers are beyond their threshold by the safety margin. SFace is measured
        as an attacker would (see ``_attacker_similarity``); dlib (slower, ~90 ms) only
        once SFace passes."""
        sface = get_recognizer("sface")
        risk = self._attacker_similarity(img, ctx, original, seen) - (
            sface.threshold - self.verify_margin)
        if risk < 0 and original_dlib is not None:
            dl = get_recognizer("dlib")
            dist = dl.score(original_dlib, dl.embed(img, ctx.face))
            # 0.6 x: a dlib distance step of 0.1 weighs like an SFace cosine step of 0.06.
            risk = max(risk, 0.6 * (dl.threshold + self.verify_margin_dlib - dist))
        return risk

    def _attacker_similarity(self, img: np.ndarray, ctx: FaceContext,
                             original: np.ndarray, seen,
                             also: Sequence[tuple[Face, np.ndarray]] = ()) -> float:
        """SFace similarity to the original as an attacker would measure it: at the
        original landmarks *and* at a fresh detection (``seen``; the worst of them),
        since a swapped face re-detects with slightly different points. ``also``: more
        (face points, the original's embedding there) pairs, each compared at its own
        points and at ``seen`` (the video engine adds the raw detection's)."""
        sface = get_recognizer("sface")
        at_seen = sface.embed(img, seen) if seen is not None else None
        sims = []
        for face, own in [(ctx.face, original), *also]:
            sims.append(sface.similarity(own, sface.embed(img, face)))
            if at_seen is not None:
                sims.append(sface.similarity(own, at_seen))
        return max(sims)

    def apply(self, img: np.ndarray, ctx: FaceContext) -> None:
        """Swap, then *verify* as an attacker would: re-embed the result with SFace (at
        the original and at re-detected landmarks) and dlib; while either is within its
        safety margin of the same-person threshold, or the head pose moved by more than
        ``max_pose_error``, try the next donor in the keyed order (``max_tries``), then
        stronger settings (``ESCALATION``). A private candidate whose pose moved is
        first re-rendered aimed against the measured change (``pose_retries``), and one
        now perceived as the other sex (face-api, ``_sex_flipped``) is kept only as a last
        resort. A donor that happens to resemble the person must not leave them
        recognisable.
        ``verify=False`` skips this (fast, unchecked; the shape is still pose-held)."""
        if ctx.face.landmarks is None:
            raise ValueError("swap needs the face's 68 landmarks")
        x, y, w, h = ctx.rect
        if w == 0 or h == 0:
            return
        size = CROP_SIZE
        m = np.asarray(ctx.matrix, np.float64)
        crop = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
        lm = transform_points(m, ctx.face.landmarks).astype(np.float32)
        # The face's traits once: the donor order and the sex check below both need its
        # perceived sex (face-api, ~6 ms a call); a forced, unchecked donor needs neither.
        traits = self.traits(img, ctx, crop, lm) if (
            self.checks or ctx.donor_index is None) else None
        order = self.donor_order(crop, lm, ctx, img, traits)
        tries = order[: self.max_tries] if self.checks else order[:1]
        original = self._embedding(img, ctx)
        original_dlib = None
        if self.verify_dlib and len(tries) > 1:
            original_dlib = ctx.face.embeddings.get("dlib")
            if original_dlib is None:
                original_dlib = get_recognizer("dlib").embed(img, ctx.face)
        # Candidates in keyed order, then escalations of the donors tried; accept the
        # first that is private (risk < 0) and keeps the head pose; else the private one
        # with the best pose; else the least risky.
        # Reference pose measured exactly as the candidates are (re-detection around the
        # face, which reproduces the full-image detection the audit makes), so detector
        # jitter between contexts does not count as a pose change.
        seen0 = self._redetect(img, ctx) if len(tries) > 1 else None
        ref_pose = estimate_pose(self._landmarker().predict(img, seen0), img.shape[:2]) if (
            seen0 is not None) else (ctx.face.pose or estimate_pose(ctx.face.landmarks,
                                                                     img.shape[:2]))
        trial = img.copy() if len(tries) > 1 else img
        p_male = (traits.p_male if traits is not None and traits.p_male is not None
                  and len(tries) > 1 else 0.5)
        results: list[tuple[float, float, np.ndarray, int, dict]] = []

        def attempt(k: int, overrides: dict) -> bool:
            """One donor/setting; a private result whose pose moved is re-rendered with
            the measured change aimed against (``pose_retries`` times): the donor texture
            shifts the 68 points dlib finds by a donor-specific amount."""
            variant = self
            if overrides:
                variant = copy.copy(self)
                variant.__dict__.update(overrides)
            shift = np.zeros(2)
            for _ in range(1 + self.pose_retries):
                new, alpha, _ = variant.render(img, ctx, k, (float(shift[0]), float(shift[1])))
                roi = self._paste(img, ctx, new, alpha)
                if len(tries) == 1:
                    results.append((-1.0, 0.0, roi, k, overrides))
                    return True
                trial[y:y + h, x:x + w] = roi
                seen = self._redetect(trial, ctx)
                risk = self._risk(trial, ctx, original, original_dlib, seen)
                change = self._pose_change(trial, ctx, ref_pose, seen)
                pose_err = float(np.abs(change).max()) if np.isfinite(change).all() else np.inf
                if risk < 0 and np.isfinite(pose_err) and self._sex_flipped(trial, ctx, seen,
                                                                            p_male):
                    # Private, but now read as the other sex: a last resort only.
                    pose_err = _SEX_FLIP_PENALTY
                results.append((risk, pose_err, roi, k, overrides))
                if risk >= 0 or pose_err >= _SEX_FLIP_PENALTY:
                    return False
                if pose_err <= self.max_pose_error:
                    return True
                shift = shift + change
            return False

        done = any(attempt(k, {}) for k in tries)
        if not done and len(tries) > 1 and not any(r[0] < 0 for r in results):
            # No donor alone breaks the match: escalate, trading some gaze fidelity (donor
            # eyes blended in) and shape fidelity for privacy. The donors: two of the least
            # risky, those within ``_ESCALATE_BAND`` of the best in keyed order first, each
            # taken up the ESCALATION ladder in turn, so the escalated pick stays keyed too.
            ranked = [r[3] for r in sorted(results, key=lambda r: r[0])]
            low = min(r[0] for r in results) + _ESCALATE_BAND
            near = [k for k in tries if any(r[3] == k and r[0] <= low for r in results)]
            closest = list(dict.fromkeys(near + ranked))[:2]
            for k in closest:
                if any(attempt(k, esc) for esc in self.ESCALATION):
                    break
        private = [r for r in results if r[0] < 0]
        good = [r for r in private if r[1] <= self.max_pose_error]
        if good:  # of the accepted candidates, the one furthest from the person
            chosen = min(good, key=lambda r: r[0])
        else:
            chosen = min(private, key=lambda r: r[1]) if private else min(results,
                                                                          key=lambda r: r[0])
        best = (chosen[0], chosen[2], chosen[3])
        if chosen[4]:
            ctx.info["escalated"] = chosen[4]
        if len(tries) > 1:
            ctx.info["pose_error"] = round(float(chosen[1]), 1)
        assert best is not None
        img[y:y + h, x:x + w] = best[1]
        if best[0] >= self.verify_margin:
            # Still the same person by a recogniser's own threshold after every donor and
            # escalation: never ship that. Blur the swapped face (reversible like any edit).
            from refacex.anonymize.baselines import BlurAnonymizer

            BlurAnonymizer().apply(img, ctx)
            ctx.info["fallback"] = "blur"
        ctx.info["donor"] = self.bank.ids[best[2]]
        if len(tries) > 1:
            ctx.info["privacy_risk"] = round(float(best[0]), 3)  # < 0: verified
