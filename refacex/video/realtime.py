"""Real-time video anonymisation on a CPU: the per-frame path does no dlib and no swap.

The standard engine (``video/anonymize.py``) runs YuNet at full resolution, dlib's 68
points, a full swap render (~60-160 ms a face) and a privacy check on every frame: a few
frames a second. Here the expensive work moves to *keyframes*, done by a worker in a
process of its own (dlib and the swap's Python hold the GIL, which stalled the frame
loop when they ran in a thread), and every frame only does what is cheap:

* **detection** at a working resolution (longest side ``work_side``, 320 px: ~5 ms
  instead of ~19 ms at 640x480) in the decoder's thread, a full-resolution scan every
  ``full_scan_s`` (small faces), and a full-resolution look around any live track the
  small pass missed;
* **landmarks**: YuNet's 5 points, smoothed by the tracker (One-Euro); masks use the
  population's mean 68-point shape placed by those 5 points (no dlib per frame);
* **swap**: the worker renders the track's donor once with the full swap (dlib landmarks,
  pose hold, colour and shading; ``SwapAnonymizer.render``) into the 256 px canonical
  crop, a *texture*; each frame warps that texture onto the face by the 5-point
  similarity and corrects its colour to the frame (~1 ms). The texture is re-rendered
  every ``refresh_s`` (3 s) and, at most every ``min_refresh_s`` (1 s), whenever the 5
  points move relative to each other by more than ``refresh_tol`` of the eye distance (a
  turn, a grin); beyond ``hard_tol`` the face is blurred until the new texture is there.
  (With three faces, 2 s refreshes kept the worker busy enough to delay new faces'
  first swaps by seconds.)
* **privacy**: the track's donor is chosen and verified by the swap's own check on its
  first keyframe (one donor per track, like the standard engine, with the same wider
  first margin); every texture is checked on the frame it was made from (SFace on the
  pasted result, the swap's escalation ladder with the same donor if not private, else
  blur), again on the first frame it is shown on when that keyframe is older than
  ``stale_s`` (a slow worker), and a guard thread re-checks a live frame every
  ``guard_every_s`` (SFace at the tracked and the re-detected face, like the standard
  engine's per-frame check); a failed check blurs the face until a new texture passes.
  While the worker is busy — a new track's donor choice takes seconds — and wherever
  the face is cut by the frame edge, it is **blurred** (fast blur), never left;
* **blur**: a box-downscaled Gaussian (the same sigma as ``BlurAnonymizer``) inside the
  mean-shape face mask, ~1 ms instead of ~25 ms.

New faces are found at the working resolution up to a few frames after a full-resolution
detector would see them (small, half in the frame); a track born in frame *t* is looked
for at full resolution in the frames still waiting (the lookahead, 12 frames) and covered
there too (``backfill``), so it is blurred from its first detectable frame.

What it gives up (measured in docs/benchmarks.md): expression between texture refreshes
(the mouth and eyes of the keyframe's render stay, the original eye openings and mouth
interior are kept only where they were then), and the per-frame swap check of the
standard engine. Which frames get a checked swap depends on how fast the worker is, so
two runs of the same clip differ in where blurred frames are.
"""

from __future__ import annotations

import copy
import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from refacex.anonymize import CROP_PADDING, CROP_SIZE, FaceContext
from refacex.anonymize.donors import load_bank
from refacex.faces.align import align_matrix, invert_affine, transform_points
from refacex.faces.confirm import FACE
from refacex.faces.detect import iou
from refacex.faces.masks import face_mask
from refacex.faces.recognizers import get_recognizer
from refacex.faces.types import Face
from refacex.payload.keyring import SealKeys
from refacex.video.anonymize import (
    GUARD_SLACK,
    MIN_SWAP_PX,
    Region,
    VideoAnonymizer,
    blend_in,
    cut_alpha,
    face_cut,
)
from refacex.video.threads import PriorityWorker
from refacex.video.track import Observation, Track

#: Head-pose change (yaw/pitch, degrees) the real-time donor choice accepts before it
#: looks further down the keyed pool (the swap's own check: 4).
RT_MAX_POSE_ERROR = 8.0
#: Size of the colour-statistics crop (canonical crop downscaled): colour is smooth.
_STATS = 64
#: Clamp of the per-channel colour gain between a texture's keyframe and a frame.
_GAIN = (0.8, 1.25)


@dataclass
class Texture:
    """A track's rendered donor face in the canonical crop, and what it was made from."""

    crop: np.ndarray  # (256, 256, 3) uint8 BGR: the swapped face
    alpha: np.ndarray  # (256, 256) float32: where it is pasted
    kps: np.ndarray  # (5, 2) the face's 5 points in the crop at the keyframe
    mean: np.ndarray  # (3,) the original's mean colour under alpha at the keyframe
    frame: int


@dataclass
class _Job:
    """What the worker found for one track on one keyframe (applied by the main loop)."""

    frame: int
    donor_index: int | None = None
    donor: str | None = None
    overrides: dict = field(default_factory=dict)
    texture: Texture | None = None
    fallback: bool = False
    risk: float | None = None
    embedding: np.ndarray | None = None


@dataclass
class _State:
    """Per-track state of the real-time swap."""

    texture: Texture | None = None
    job: Future | None = None
    guard: Future | None = None
    guarded: Texture | None = None  # the texture the pending guard checks
    checked: Texture | None = None  # the last texture checked on its first frame
    last_guard: int = -(1 << 30)
    retry_at: int = 0


def _mean_under(img: np.ndarray, matrix: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Mean BGR of ``img`` under ``weight`` (``_STATS`` px) in the canonical crop."""
    m = np.asarray(matrix, np.float64) * (_STATS / CROP_SIZE)
    small = cv2.warpAffine(img, m, (_STATS, _STATS), flags=cv2.INTER_AREA,
                           borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
    return (small * weight[..., None]).sum((0, 1)) / max(float(weight.sum()), 1e-6)


def _roi_matrix(ctx: FaceContext) -> np.ndarray:
    """ROI pixels -> canonical crop (the edit rectangle's origin folded in)."""
    x, y = ctx.rect[:2]
    m = np.asarray(ctx.matrix, np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([x, y], np.float64)
    return m


def _warp_in(ctx: FaceContext, img: np.ndarray, interp: int = cv2.INTER_LINEAR
             ) -> np.ndarray:
    """A canonical-crop image warped into the face's edit rectangle."""
    _, _, w, h = ctx.rect
    return cv2.warpAffine(img, invert_affine(_roi_matrix(ctx)), (w, h), flags=interp,
                          borderMode=cv2.BORDER_REPLICATE)


class RealtimeAnonymizer(VideoAnonymizer):
    """The fast engine; ``anonymize_video(..., engine_class=RealtimeAnonymizer)``."""

    def __init__(self, keys: SealKeys, method: str = "swap", strength: float = 1.0,
                 method_options: dict | None = None, low_confidence: str = "blur",
                 fps: float = 25.0, work_side: int = 320, full_scan_s: float = 1.0,
                 refresh_s: float = 3.0, min_refresh_s: float = 1.0,
                 refresh_tol: float = 0.04, hard_tol: float = 0.12,
                 guard_every_s: float = 1.0, stale_s: float = 2.0, lookahead: int = 12,
                 wait_for_keyframes: bool = False, keyframe_process: bool = True,
                 **engine: object) -> None:
        super().__init__(keys, method, strength, method_options, low_confidence, fps=fps,
                         lookahead=lookahead, **engine)  # type: ignore[arg-type]
        self.strength = float(strength)
        if self.is_swap:
            # The donor choice takes seconds in which the face is only blurred; re-aiming
            # a private candidate whose head pose moved (the swap's ``pose_retries``, up
            # to two more renders and checks per donor) buys pose fidelity, not privacy,
            # and a real-time swap already gives up some fidelity.
            self.chooser.pose_retries = 0
            # For the same reason the first private donor is taken unless it turns the
            # head by more than ``RT_MAX_POSE_ERROR``: with the swap's own 4 degrees, a
            # face whose keyed first donor is private at 5 degrees had all 10 keyed donors
            # rendered and checked for a better pose (1.3 s alone, ~4 s beside the frame
            # loop) before getting that same first donor back — seconds of blur.
            self.chooser.max_pose_error = max(self.chooser.max_pose_error, RT_MAX_POSE_ERROR)
        self.work_side = int(work_side)
        self.full_every = max(1, int(round(full_scan_s * fps)))
        self.refresh_every = max(1, int(round(refresh_s * fps)))
        self.min_refresh = max(1, int(round(min_refresh_s * fps)))
        self.refresh_tol, self.hard_tol = float(refresh_tol), float(hard_tol)
        self.guard_every = max(1, int(round(guard_every_s * fps)))
        self.stale = max(1, int(round(stale_s * fps)))
        #: Tests and offline checks: wait for the worker instead of blurring meanwhile
        #: (the output no longer depends on the machine's speed; not real time).
        self.wait = wait_for_keyframes
        self.states: dict[int, _State] = {}
        self.worker = PriorityWorker("refacex-keyframe")
        # Guards get their own thread: queued behind a keyframe job (a second or more),
        # a guard would come too late to be one.
        self.guards = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refacex-guard")
        # The keyframe jobs run in a process of their own: dlib's recogniser and the swap's
        # Python hold the GIL (py-spy: ~5 s of a 25 s run), which stalled the frame loop.
        # "spawn": a clean interpreter (no fork of a process with threads running); a
        # script that uses this engine needs the usual ``if __name__ == "__main__":``.
        self.pool: ProcessPoolExecutor | None = None
        if self.is_swap and keyframe_process:
            first = {k: v for k, v in engine.items() if k == "first_margin"}
            self.pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_child_init,
                initargs=(keys.donor_key, method, strength, method_options, first))
        if self.is_swap and _CHILD is None:  # the keyframe process is warmed by its parent
            self.worker.submit(-1, self._keyframe, "warm_up")
        self._original: np.ndarray | None = None
        self._arrived: list[tuple[Track, np.ndarray, int]] = []  # see ``analyse``
        # The population mean shape (templates bank: 3,000 people) in the canonical crop:
        # placed by the 5 points it stands in for dlib's 68 in every per-frame mask.
        self.mean_shape = load_bank("templates").mean_shape.astype(np.float64)
        iod = float(np.linalg.norm(self.mean_shape[36:42].mean(0)
                                   - self.mean_shape[42:48].mean(0)))
        self.template_iod = iod
        mask = face_mask((CROP_SIZE, CROP_SIZE), self.mean_shape, forehead=0.8)
        grow = max(3, int(0.08 * iod * 2))  # as baselines._region_mask does per face
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
        self.cover_mask = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0),
                                           grow / 2.0)

    # ---------------------------------------------------------------- analysis
    def _scaled(self, img: np.ndarray, scale: float) -> list[Face]:
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
        out = self.detector.detect(small)
        for f in out:
            f.box = (f.box / scale).astype(np.float32)
            f.kps = (f.kps / scale).astype(np.float32)
        return out

    def _around(self, img: np.ndarray, box: np.ndarray, grow: float = 1.0) -> list[Face]:
        """Full-resolution detections in a window of ``grow`` face sizes around ``box``."""
        x, y, w, h = (float(v) for v in box)
        ih, iw = img.shape[:2]
        x0, y0 = max(0, int(x - grow * w)), max(0, int(y - grow * h))
        x1, y1 = min(iw, int(x + w + grow * w)), min(ih, int(y + h + grow * h))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        found = self.detector.detect(np.ascontiguousarray(img[y0:y1, x0:x1]))
        for f in found:
            f.box = f.box + np.array([x0, y0, 0, 0], np.float32)
            f.kps = f.kps + np.array([x0, y0], np.float32)
        return found

    def scan(self, img: np.ndarray, index: int) -> list[Face]:
        """Working-resolution YuNet, and a full-resolution scan every ``full_every``
        frames (small faces)."""
        h, w = img.shape[:2]
        scale = min(1.0, self.work_side / max(h, w))
        if scale >= 1.0 or index % self.full_every == 0:
            return self.detector.detect(img)
        return self._scaled(img, scale)

    def rescue(self, img: np.ndarray, dets: list[Face]) -> list[Face]:
        """A full-resolution look around each live track the scan missed."""
        for tr in self.tracker.live:
            if tr.misses > self.tracker.coast:
                continue
            pred = tr.box.copy()
            pred[:2] += tr.velocity * (tr.misses + 1)
            if any(iou(pred, d.box) > 0.1 for d in dets):
                continue
            found = [f for f in self._around(img, pred) if iou(pred, f.box) > 0.1]
            if found:
                dets.append(max(found, key=lambda f: iou(pred, f.box)))
        return dets

    def describe(self, img: np.ndarray, face: Face) -> None:
        """The mean 68-point shape placed by the 5 points (no dlib per frame)."""
        m = align_matrix(face.kps, CROP_SIZE, CROP_PADDING)
        face.landmarks = transform_points(invert_affine(m), self.mean_shape).astype(
            np.float32)

    def analyse(self, img: np.ndarray, index: int, t: float) -> list[Observation]:
        before = {tr.id: tr.last_frame for tr in self.tracker.all}
        obs = super().analyse(img, index, t)
        if self.is_swap:
            # A confirmed face's first keyframe job starts now, not when the frame leaves
            # the lookahead: its swap is ready ``lookahead`` frames sooner.
            for ob in obs:
                tr = ob.track
                if (not ob.coasting and tr.hits >= 2 and tr.verdict == FACE
                        and not tr.keyframes and float(ob.face.box[2]) >= MIN_SWAP_PX
                        and not face_cut(ob.face, img.shape)):
                    st = self.states.setdefault(tr.id, _State())
                    if st.job is None:
                        self._submit(tr, st, ob.face, index, img)
                        tr.keyframes.append(index)
        # Tracks new in this frame, or back after a gap: look for them in waiting frames.
        self._arrived = [(ob.track, ob.face.box.copy(), before.get(ob.track.id, -1))
                         for ob in obs if not ob.coasting and before.get(ob.track.id, -1)
                         < index - 1]
        return obs

    def backfill(self, pending: deque, index: int) -> None:
        """Cover each track that arrived in frame ``index`` in the frames still waiting,
        newest first, wherever a full-resolution detector finds it there (blurred:
        coasting observations). A face coming in flickers in and out of detection, so a
        frame without it does not end the search."""
        for track, box, last in self._arrived:
            for frame, obs in reversed(pending):
                if frame.index <= last or any(ob.track is track for ob in obs):
                    break
                taken = [ob.face.box for ob in obs]
                # The whole frame (YuNet in a window around the box missed slivers at
                # the edge) and loosely: an entering face's box grows and moves fast, so
                # anything near it that no other track holds is covered. Rare (tracks
                # are born a few times a clip), so the full-resolution pass is affordable.
                found = [f for f in self.detector.detect(frame.image)
                         if _gap(box, f.box) < 1.5 and all(iou(t, f.box) < 0.3 for t in taken)]
                if not found:
                    continue
                face = min(found, key=lambda f: _gap(box, f.box))
                self.describe(frame.image, face)
                obs.append(Observation(track, face, coasting=True))
                box = face.box.copy()
        self._arrived = []

    # ---------------------------------------------------------------- editing
    def edit_regions(self, img: np.ndarray, obs: list[Observation], index: int
                     ) -> tuple[np.ndarray, list[Region]]:
        self._original = img  # the worker's jobs need the frame as it was
        return super().edit_regions(img, obs, index)

    def cover(self, out: np.ndarray, ctx: FaceContext) -> None:
        """Fast blur: ``BlurAnonymizer``'s sigma (0.35 eye distances), computed on a
        downscaled copy (box-averaged, then a small Gaussian) inside the mean-shape
        mask (~1 ms instead of ~25 ms for a 150 px face)."""
        x, y, w, h = ctx.rect
        roi = out[y:y + h, x:x + w]
        sigma = max(1.0, 0.35 * ctx.face.inter_ocular * self.strength)
        f = max(1.0, sigma / 2.0)
        small = cv2.resize(roi, (max(1, round(w / f)), max(1, round(h / f))),
                           interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / f)
        blurred = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        alpha = (cut_alpha(ctx) if face_cut(ctx.face, out.shape)
                 else _warp_in(ctx, self.cover_mask))
        blend_in(out, ctx, blurred, alpha)

    def apply_method(self, out: np.ndarray, ctx: FaceContext, ob: Observation,
                     index: int) -> str:
        if self.is_swap:
            return self._swap_fast(out, ctx, ob.track, index)
        if self.method == "blur":
            self.cover(out, ctx)
        else:
            self.anonymizer.apply(out, ctx)  # pixelate / mask: cheap on the mean shape
        return "method"

    def _residual(self, ctx: FaceContext, texture: Texture) -> float:
        """How far the 5 points moved relative to each other since the texture's keyframe
        (canonical crop, in eye distances): a turn, a grin, a tilt of the head."""
        now = transform_points(ctx.matrix, ctx.face.kps)
        return float(np.linalg.norm(now - texture.kps, axis=1).max()) / self.template_iod

    def _swap_fast(self, out: np.ndarray, ctx: FaceContext, track: Track, index: int) -> str:
        st = self.states.setdefault(track.id, _State())
        self._collect(track, st, index)
        tex = st.texture
        if tex is None or track.fallback_blur:
            retry = track.fallback_blur and index >= st.retry_at and (
                track.retries < self.max_retries)
            if st.job is None and (not track.fallback_blur or retry):
                track.retries += int(retry)
                self._submit(track, st, ctx.face, index)
            self.cover(out, ctx)
            return "blur"
        if face_cut(ctx.face, out.shape):
            self.cover(out, ctx)
            return "blur"
        resid = self._residual(ctx, tex)
        age = index - tex.frame
        if st.job is None and ((resid > self.refresh_tol and age >= self.min_refresh)
                               or age >= self.refresh_every):
            self._submit(track, st, ctx.face, index)
        if resid > self.hard_tol:
            self.cover(out, ctx)
            return "blur"
        before = out[ctx.rect[1]:ctx.rect[1] + ctx.rect[3],
                     ctx.rect[0]:ctx.rect[0] + ctx.rect[2]].copy()
        self._paste(out, ctx, tex, self._original)
        first_use, st.checked = st.checked is not tex, tex
        if self.verify and first_use and index - tex.frame > self.stale:
            # A texture's first frame, when its keyframe (where the worker checked it) is
            # older than ``stale_s`` (a slow worker): checked here, before it is shown.
            # Fresher ones are left to the guard thread: this check on the frame loop
            # cost ~17 ms a frame on average when every texture got it.
            if self._guard(out, self._original, ctx) > GUARD_SLACK:
                x, y, w, h = ctx.rect
                out[y:y + h, x:x + w] = before
                track.guard_trips += 1
                st.texture = None
                if st.job is None:
                    self._submit(track, st, ctx.face, index)
                self.cover(out, ctx)
                return "blur"
        elif (self.verify and st.guard is None
              and index - st.last_guard >= self.guard_every):
            st.last_guard, st.guarded = index, tex
            st.guard = self.guards.submit(self._guard, out.copy(), self._original, ctx)
        return "method"

    def _paste(self, out: np.ndarray, ctx: FaceContext, tex: Texture,
               original: np.ndarray | None) -> None:
        """The texture warped onto the face, its colour scaled to this frame's."""
        src = out if original is None else original
        weight = cv2.resize(tex.alpha, (_STATS, _STATS), interpolation=cv2.INTER_AREA)
        gain = np.clip(_mean_under(src, ctx.matrix, weight) / np.maximum(tex.mean, 1.0),
                       *_GAIN)
        top = _warp_in(ctx, tex.crop).astype(np.float32) * gain
        blend_in(out, ctx, top, _warp_in(ctx, tex.alpha))

    # ---------------------------------------------------------------- the worker
    def _warm_up(self) -> None:
        """Load what the first keyframe needs (donor bank, dlib, recognisers) while the
        main thread starts on the video, not when the first face is waiting for it."""
        _ = self.anonymizer.bank, self.fa.landmarker
        for name in ("sface", "dlib"):
            get_recognizer(name)

    def _submit(self, track: Track, st: _State, face: Face, index: int,
                 img: np.ndarray | None = None) -> None:
        img = self._original if img is None else img
        assert img is not None
        # A face without a texture (blurred meanwhile) first, refreshes after.
        st.job = self.worker.submit(0 if st.texture is None else 1, self._keyframe,
                                    "texture", img.copy(), _plain(face), index,
                                    track.donor_index, dict(track.overrides))

    def _keyframe(self, job: str, *args: object) -> object:
        """Run a keyframe job ("warm_up", "texture") here or in the keyframe process."""
        if self.pool is not None:
            return self.pool.submit(_child_run, job, *args).result()
        return self._warm_up() if job == "warm_up" else self._texture_job(*args)

    def _collect(self, track: Track, st: _State, index: int) -> None:
        """Take over what the worker finished for ``track`` (its errors fail the run)."""
        if self.wait:
            for fut in (st.job, st.guard):
                if fut is not None:
                    fut.result()
        if st.job is not None and st.job.done():
            res: _Job = st.job.result()
            st.job = None
            if res.frame not in track.keyframes:
                track.keyframes.append(res.frame)
            if track.donor_index is None and res.donor_index is not None:
                track.donor_index = res.donor_index
                track.donors_seen.append(res.donor or str(res.donor_index))
            if res.embedding is not None and track.embedding is None:
                track.embedding = res.embedding
            self._note_risk(track, res.risk)
            if res.fallback:
                track.fallback_blur = True
                st.texture = None
                st.retry_at = index + self.retry_every
            else:
                track.fallback_blur = False
                track.overrides = res.overrides
                st.texture = res.texture
        if st.guard is not None and st.guard.done():
            risk = st.guard.result()
            st.guard = None
            if risk > GUARD_SLACK and st.texture is st.guarded:
                track.guard_trips += 1
                st.texture = None  # blurred until a new texture passes its check

    def _texture_job(self, img: np.ndarray, face: Face, index: int,
                     donor_index: int | None, overrides: dict) -> _Job:
        """A keyframe: dlib landmarks, the donor (chosen and verified by the swap on the
        track's first keyframe), the texture, its check on this frame."""
        self.fa.describe(img, face, landmarks=True, pose=False)
        ctx = FaceContext.for_face(face, img.shape[:2], donor_key=self.keys.donor_key)
        res = _Job(index, donor_index, overrides=overrides)
        if donor_index is None and self.verify:
            quick = self._quick_choice(img, ctx, index)
            if quick is not None:
                res.donor_index, res.texture, res.risk = quick
                res.donor = self.anonymizer.bank.ids[res.donor_index]
                res.embedding = ctx.face.embeddings.get("sface")
                return res
        if donor_index is None:
            self.chooser.apply(img.copy(), ctx)  # the swap's own choice and check
            res.donor = ctx.info.get("donor")
            res.donor_index = list(self.anonymizer.bank.ids).index(res.donor)
            res.overrides = dict(ctx.info.get("escalated") or {})
            res.risk = self._chooser_risk(ctx)
            res.embedding = ctx.face.embeddings.get("sface")
            if ctx.info.get("fallback") == "blur":
                res.fallback = True
                return res
            # The chooser may have kept a result inside its margin for want of a
            # private one: the ladder below decides, with the video's strict rule.
        made: list[tuple[dict, Texture]] = []

        def render(trial: np.ndarray, ov: dict) -> None:
            made.append((ov, self._render_texture(img, ctx, res.donor_index, ov, index)))
            self._paste(trial, ctx, made[-1][1], img)

        if not self.verify:
            render(img.copy(), res.overrides)
            res.texture = made[-1][1]
            return res
        # Checked as it will be seen: pasted by the per-frame path, not as rendered.
        risk, res.overrides, _ = self._ladder(img, ctx, res.overrides, render)
        res.risk = risk if res.risk is None else max(res.risk, risk)
        if risk >= 0:  # only private textures (``VideoAnonymizer._reverify``)
            res.fallback = True
        else:
            res.texture = next(t for ov, t in made if ov == res.overrides)
        return res

    def _quick_choice(self, img: np.ndarray, ctx: FaceContext, index: int
                      ) -> tuple[int, Texture, float] | None:
        """The track's donor in one try, when the keyed first donor is private as it will
        be shown: its texture pasted, SFace at the tracked and the re-detected face at the
        chooser's wider margin, and dlib at the swap's own margin — the swap's privacy
        check (``SwapAnonymizer._risk``) for that donor, without its head-pose check
        (fidelity, not privacy). It is the donor the swap's full choice would take first,
        so the track keeps the keyed donor it would have had; None (then that full
        choice, ~4 s on a loaded 2-core machine instead of ~0.5 s) when it is not private.
        (donor index, texture, risk on the common scale)."""
        m = np.asarray(ctx.matrix, np.float64)
        crop = cv2.warpAffine(img, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
        assert ctx.face.landmarks is not None
        lm = transform_points(m, ctx.face.landmarks).astype(np.float32)
        k = self.anonymizer.donor_order(crop, lm, ctx, img)[0]  # also embeds the face
        tex = self._render_texture(img, ctx, k, {}, index)
        trial = img.copy()
        self._paste(trial, ctx, tex, img)
        risk = self._risk(trial, ctx, ctx.face.embeddings["sface"])
        if risk + (self.chooser.verify_margin - self.anonymizer.verify_margin) >= 0:
            return None
        dl = get_recognizer("dlib")
        if dl.score(dl.embed(img, ctx.face), dl.embed(trial, ctx.face)) < (
                dl.threshold + self.anonymizer.verify_margin_dlib):
            return None
        return k, tex, risk

    def _render_texture(self, img: np.ndarray, ctx: FaceContext, k: int, overrides: dict,
                        index: int) -> Texture:
        variant = self.fast
        if overrides:
            variant = copy.copy(self.fast)
            variant.__dict__.update(overrides)
        crop, alpha, _ = variant.render(img, ctx, k)
        alpha = alpha.astype(np.float32)
        weight = cv2.resize(alpha, (_STATS, _STATS), interpolation=cv2.INTER_AREA)
        return Texture(crop, alpha, transform_points(ctx.matrix, ctx.face.kps),
                       _mean_under(img, ctx.matrix, weight), index)

    def close(self) -> None:
        self.worker.close()
        self.guards.shutdown(wait=True, cancel_futures=True)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """Distance of two boxes' centres in face sizes (of the larger)."""
    ca, cb = a[:2] + a[2:] / 2, b[:2] + b[2:] / 2
    return float(np.linalg.norm(ca - cb)) / max(float(a[2]), float(b[2]), 1.0)


@dataclass(frozen=True)
class _DonorKey:
    """What the keyframe process needs of the run's keys: the donor secret (it seals
    nothing, so it gets neither the site key nor the recipients)."""

    donor_key: bytes


_CHILD: RealtimeAnonymizer | None = None


def _child_init(donor_key: bytes, method: str, strength: float,
                method_options: dict | None, engine: dict) -> None:
    """The keyframe process's own engine (its jobs run in-process there)."""
    global _CHILD
    _CHILD = RealtimeAnonymizer.__new__(RealtimeAnonymizer)  # "in the child" from here on
    _CHILD.__init__(_DonorKey(donor_key), method, strength,  # type: ignore[arg-type]
                    method_options, keyframe_process=False, **engine)


def _child_run(job: str, *args: object) -> object:
    assert _CHILD is not None
    return _CHILD._keyframe(job, *args)


def _plain(face: Face) -> Face:
    """A copy of the face for the worker: its own arrays, no landmarks (dlib fills them
    on the keyframe), no embeddings."""
    f = copy.copy(face)
    f.box, f.kps = face.box.copy(), face.kps.copy()
    f.landmarks, f.pose, f.embeddings = None, None, {}
    return f


__all__ = ["RealtimeAnonymizer", "Texture"]
