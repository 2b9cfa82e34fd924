"""Anonymise a video: one donor per person-track, a sealed vault of the original regions.

Data flow (frames stream through; memory is bounded by ``lookahead`` frames + one chunk):

1. decode a frame (``refacex.io.video``); audio packets are remuxed untouched;
2. detect faces (the pipeline's detector, ``LOW_FLOOR``); associate them with tracks
   (``video/track.py``: IoU + centre distance, SFace re-identification of lost tracks);
   the second opinion (``faces/confirm.py``) decides face / plausible / not-face for
   detections of tracks not yet confirmed as faces (a confirmed track is not re-judged
   every frame: that would cost ~14 ms per face per frame for nothing); not-faces are
   dropped; 68 landmarks, smoothed over time (One-Euro);
3. the frame waits ``lookahead`` frames, so that when it is edited its tracks' lengths are
   known a little ahead: a track seen for fewer than ``min_frames`` frames (a flash of a
   face, a false detection) or too small to swap is **blurred** instead, never left; a
   track missed by the detector for a few frames is blurred where it was heading
   (coasting); the lookahead is the latency a live version would have (~0.25 s);
4. confirmed tracks get the method. For ``swap`` the keyed donor is chosen **once per
   track**, on its first keyframe, with the full privacy verification (at a wider SFace
   margin, ``FIRST_MARGIN``); a few later keyframes (every ``verify_every_s``, at most
   ``max_keyframes``) re-verify with that donor first; every other frame reuses the
   accepted donor and settings (``FaceContext.donor_index``, ``verify=False``) — ~6x
   cheaper, and the identity cannot drift — and gets a per-frame guard (SFace at the
   tracked and the re-detected face) that sends a frame less private than its keyframe
   to a full check; a donor that fails a check is blurred until a later one passes;
5. the original pixels of every edited region go, PNG-compressed, into sealed chunks of
   the sidecar vault (``video/vault.py``); with ``robust_tier`` every ``robust_every_s``
   an edited frame also carries the in-pixel face code (``video/robust.py``); after
   encoding, the output is decoded back and each frame's binding goes into the sealed
   index; then sidecar and video are renamed into place (sidecar first, like images).

Decoding and face detection (``scan``) run a thread ahead, vault records, robust codes
and encoding a thread behind (``video/threads.py``). ``engine_class`` swaps the
per-frame work for the real-time engine (``video/realtime.py``), which overrides the
hooks ``scan``, ``rescue``, ``describe``, ``backfill``, ``apply_method``, ``cover`` and
``close``.
"""

from __future__ import annotations

import copy
import os
import secrets
import struct
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from refacex.anonymize import FaceContext, get_method
from refacex.anonymize.baselines import BlurAnonymizer
from refacex.errors import OutputError
from refacex.faces.confirm import FACE, NOT_FACE, action_for, confirmer
from refacex.faces.detect import _detector, iou
from refacex.faces.types import Face
from refacex.io.images import TEMP_SUFFIX, encode_image
from refacex.io.video import VideoReader, VideoWriter, luma
from refacex.payload.binding import image_binding
from refacex.payload.format import FaceRecord, Payload, encode_payload
from refacex.payload.keyring import SealKeys
from refacex.pipeline import LOW_FLOOR, analyzer
from refacex.video import robust as video_robust
from refacex.video import vault
from refacex.video.threads import Prefetch, Sink
from refacex.video.track import Observation, Tracker

#: SFace margin of the donor choice on a track's first keyframe (a photo's is the swap's
#: ``verify_margin``, 0.08): the one donor must stay private through the track's other
#: poses and scales. On the 640x480 astronaut clip, donors chosen at 0.08 fell back to
#: blur at a later keyframe under one key of two; at 0.15 neither did
#: (docs/benchmarks.md, "Video").
FIRST_MARGIN = 0.15
#: The per-frame guard's bar (risk, SFace similarity over the swap's threshold minus
#: margin): keyframes accept only risk < 0, and so does every other frame. The margin
#: (0.08) is what encoding leaves: a frame the guard passed at 0.31 (0.03 over, the
#: slack this once had) measured 0.37 in the encoded video, the same person.
GUARD_SLACK = 0.0
#: A face whose eye centre is this close to the frame edge (eye distances), or beyond
#: it, is blurred rather than swapped (``eyes_at_edge``).
EYE_EDGE = 0.15
#: Smallest face (detector box width, px) that gets the swap; smaller ones are blurred
#: (the donor crop would be upsampled mush, and the verification is unreliable there).
MIN_SWAP_PX = 32
#: A face at a video part's first frame is the one at the last frame of the part before
#: (a person on screen across a cut, ``engines/videoparts.py``) when their boxes overlap
#: at least this much: one frame apart, the same face overlaps far more.
LINK_IOU = 0.3


@dataclass
class Region:
    """One edited face region of a frame: what the vault stores and the robust code
    describes."""

    index: int  # the face's place among the frame's observations
    face: Face
    matrix: np.ndarray  # image -> 256 px canonical crop
    rect: tuple[int, int, int, int]  # x, y, w, h of the edit region


def vault_records(img: np.ndarray, regions: list[Region]) -> list[FaceRecord]:
    """The vault's records of one frame: each region's original pixels, PNG."""
    out = []
    for r in regions:
        x, y, w, h = r.rect
        out.append(FaceRecord(index=r.index, affine=r.matrix, crop_size=256, rect=r.rect,
                              codec="png", data=encode_image(img[y:y + h, x:x + w], ".png",
                                                             fast_png=True)))
    return out


@dataclass
class TrackReport:
    id: int
    first_frame: int
    last_frame: int
    frames: int  # frames edited with the method (swap, ...)
    blurred: int  # frames blurred (short track, too small, plausible, coasting)
    verdict: str
    donors: list[str] = field(default_factory=list)  # distinct donors used (1 for a track)
    keyframes: list[int] = field(default_factory=list)
    privacy_risk: float | None = None
    guard_trips: int = 0  # frames the per-frame guard sent to a full check
    first_method_frame: int | None = None  # its first frame with the method (not blur)
    #: Its first and last edited frames and face boxes (x, y, w, h): where a video cut
    #: into parts links this track to the next part's (``engines/videoparts.py``).
    edited: tuple[int, int] | None = None
    first_box: list[float] | None = None
    last_box: list[float] | None = None
    overrides: dict = field(default_factory=dict)  # the swap settings it ended with


@dataclass
class VideoResult:
    output: Path
    sidecar: Path | None
    frames: int
    fps: float  # processing speed, frames per second (decode + anonymise + encode)
    tracks: list[TrackReport]
    edited_regions: int
    timings_s: dict[str, float] = field(default_factory=dict)
    reidentified: int = 0
    robust_frames: int = 0  # robust keyframes that carry a face code
    robust_bytes: int = 0  # their payload bytes, all together

    @property
    def summary(self) -> dict:
        return {"frames": self.frames, "tracks": len(self.tracks),
                "anonymized_tracks": sum(1 for t in self.tracks if t.frames),
                "blurred_only_tracks": sum(1 for t in self.tracks if not t.frames),
                "regions": self.edited_regions, "fps": round(self.fps, 2)}


class _Chunks:
    """Seals the vault chunk by chunk into a hidden temp sidecar (encrypted on disk)."""

    def __init__(self, dest: Path, keys: SealKeys, size: tuple[int, int], method: str) -> None:
        self.keys, self.size, self.method = keys, size, method
        self.video_id = secrets.token_bytes(16)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.",
                                   suffix=TEMP_SUFFIX)
        self.tmp = Path(tmp)
        self.fh = os.fdopen(fd, "wb")
        self.fh.write(vault.header())
        self.seq = 0
        self.records: list[FaceRecord] = []
        self.frame_of: list[int] = []
        self.first = 0
        self.count = 0
        self.bytes = 0

    def add(self, frame: int, records: list[FaceRecord]) -> None:
        self.count += 1
        for r in records:
            self.records.append(r)
            self.frame_of.append(frame)
            self.bytes += len(r.data)
        if self.count >= vault.CHUNK_FRAMES or self.bytes >= vault.CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.count:
            return
        p = Payload(tier="vault", image_size=self.size, faces=self.records, method=self.method,
                    extra={"kind": "video-chunk", "video": self.video_id, "seq": self.seq,
                           "first": self.first, "count": self.count,
                           "frame_of": struct.pack(f"<{len(self.frame_of)}I", *self.frame_of)})
        self.fh.write(vault.record(encode_payload(p, compact=False,
                                                  **self.keys.crypto_kwargs())))
        self.seq += 1
        self.first += self.count
        self.count, self.bytes, self.records, self.frame_of = 0, 0, [], []

    def close(self, bindings: list[bytes]) -> None:
        self.flush()
        p = Payload(tier="vault", image_size=self.size, method=self.method,
                    extra={"kind": "video-index", "video": self.video_id, "chunks": self.seq,
                           "frames": len(bindings), "bindings": b"".join(bindings)})
        self.fh.write(vault.record(encode_payload(p, compact=False,
                                                  **self.keys.crypto_kwargs())))
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def abort(self) -> None:
        try:
            self.fh.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class VideoAnonymizer:
    """Per-video state: tracker, method instances, the per-track donor decisions."""

    def __init__(self, keys: SealKeys, method: str = "swap", strength: float = 1.0,
                 method_options: dict | None = None, low_confidence: str = "blur",
                 fps: float = 25.0, min_frames: int = 4, lookahead: int = 6,
                 verify_every_s: float = 2.0, max_keyframes: int = 6,
                 retry_every_s: float = 0.5, max_retries: int = 8,
                 first_margin: float = FIRST_MARGIN,
                 donor_hints: list[dict] | None = None) -> None:
        """``donor_hints``: for a video cut into parts, the donors the part before gave
        the people seen at its last frame (``{"box", "donor", "overrides"}``): a track
        starting at this part's first frames where a hint's box is keeps that donor
        (checked like any later keyframe) instead of choosing one."""
        action_for(NOT_FACE, low_confidence)  # validates the policy before any work
        self.keys, self.method, self.low_confidence = keys, method, low_confidence
        self.anonymizer = get_method(method, strength=strength, **(method_options or {}))
        self.is_swap = method == "swap"
        self.verify = bool(getattr(self.anonymizer, "verify", False))
        self.fast = self.chooser = self.anonymizer
        if self.is_swap:
            self.fast = copy.copy(self.anonymizer)
            self.fast.verify = False
            self.chooser = copy.copy(self.anonymizer)
            self.chooser.verify_margin = max(first_margin, self.anonymizer.verify_margin)
        self.blur = BlurAnonymizer()
        self.tracker = Tracker(fps=fps)
        self.fps = fps
        self.min_frames = max(1, min_frames)
        self.lookahead = max(self.min_frames - 1, lookahead)
        self.verify_every = max(1, int(round(verify_every_s * fps)))
        self.max_keyframes = max_keyframes
        self.retry_every = max(1, int(round(retry_every_s * fps)))
        self.max_retries = max_retries
        self.detector = _detector(LOW_FLOOR)
        self.judge = confirmer()
        self.fa = analyzer()
        self.counts: dict[int, list[int]] = {}  # track id -> [method frames, blurred]
        self.first_method: dict[int, int] = {}  # track id -> first frame with the method
        self.spans: dict[int, list] = {}  # track id -> [first, box, last, box] edited
        self.hints = list(donor_hints or [])
        self.scanned: dict[int, list[Face]] = {}  # frame -> ``prescan``'s detections
        #: An unconfirmed (plausible) track gets a new second opinion this often (frames):
        #: it may become a face as it turns or grows, but not every frame's worth of cost.
        self.rejudge_every = max(1, int(round(fps / 5)))

    # ---------------------------------------------------------------- analysis
    def scan(self, img: np.ndarray, index: int) -> list[Face]:
        """Every face of the frame (YuNet at full resolution, down to ``LOW_FLOOR``).
        Depends on the frame alone, so the driver runs it in the decoder's thread
        (``prescan``), overlapping the previous frame's analysis."""
        return self.detector.detect(img)

    def prescan(self, img: np.ndarray, index: int) -> None:
        """``scan`` ahead of ``analyse`` (called from the decoder's thread)."""
        self.scanned[index] = self.scan(img, index)

    def rescue(self, img: np.ndarray, dets: list[Face]) -> list[Face]:
        """Hook: detections the scan missed, found with what the tracks know (the
        real-time engine looks again at full resolution where a track was lost)."""
        return dets

    def describe(self, img: np.ndarray, face: Face) -> None:
        """Fill the 68 landmarks the methods and masks need (dlib, per frame)."""
        self.fa.describe(img, face, landmarks=True, pose=False)

    def backfill(self, pending: deque, index: int) -> None:
        """Hook for engines that detect less than every frame at full resolution: cover
        a track born in frame ``index`` in the frames still waiting in ``pending``. This
        engine detects every frame at full resolution: nothing to do."""

    def close(self) -> None:
        """Release what the engine holds beyond the run (worker threads); idempotent."""

    def analyse(self, img: np.ndarray, index: int, t: float) -> list[Observation]:
        """Detect, associate, judge and smooth the faces of one frame."""
        from refacex.faces.recognizers import get_recognizer

        tr = self.tracker
        dets = self.scanned.pop(index, None)
        dets = self.rescue(img, self.scan(img, index) if dets is None else dets)
        matched, _unmatched = tr.associate(dets)
        obs: list[Observation] = []
        seen: set[int] = set()
        for di, d in enumerate(dets):
            track = matched.get(di)
            if track is not None and (track.verdict == FACE or
                                      index - track.judged_at < self.rejudge_every):
                verdict = track.verdict  # confirmed once, or judged a moment ago
            else:
                verdict = self.judge.confirm(img, d, dets).verdict
                if track is not None:
                    track.judged_at = index
            if verdict == NOT_FACE:
                continue
            self.describe(img, d)
            if track is None:
                emb = get_recognizer("sface").embed(img, d)
                track = tr.reidentify(emb, index) or tr.new_track(d, index, t, verdict)
                track.judged_at = index
                if track.embedding is None:
                    track.embedding = emb
            if track.id in seen:  # two detections on one track: the second starts its own
                track = tr.new_track(d, index, t, verdict)
            seen.add(track.id)
            obs.append(Observation(track, tr.observe(track, d, index, t, verdict),
                                   detected=d))
        obs += tr.end_frame(index, seen)
        return obs

    # ---------------------------------------------------------------- editing
    def _action(self, ob: Observation) -> str:
        track = ob.track
        if ob.coasting or track.hits < self.min_frames or float(ob.face.box[2]) < (
                MIN_SWAP_PX if self.is_swap else 0):
            return "blur"
        act = action_for(track.verdict, self.low_confidence)
        return "blur" if act == "leave" and track.verdict != NOT_FACE else act

    def _due(self, track, face, index: int, shape: tuple[int, ...]) -> bool:
        """Is this frame a keyframe of ``track`` (verify the swap here)? Its first swapped
        frame; then when the face has changed enough that the first check no longer
        speaks for it (grown or shrunk by 20 %, or no longer cut by the frame edge: a
        half face verified private says little about the whole face), or every
        ``verify_every`` frames, at most ``max_keyframes`` times in all. A track blurred
        because its donor was not private at the last check is checked again every
        ``retry_every`` frames (the face may have turned back), ``max_retries`` times."""
        if not track.keyframes:
            return True
        if track.fallback_blur:
            return (index - track.keyframes[-1] >= self.retry_every
                    and track.retries < self.max_retries)
        if len(track.keyframes) >= self.max_keyframes:
            return False
        w = float(face.box[2])
        ratio = w / max(track.key_width, 1.0)
        whole = _inside(face.box, shape)
        return (ratio > 1.2 or ratio < 1 / 1.2 or (whole and not track.key_whole)
                or index - track.keyframes[-1] >= self.verify_every)

    def _swap(self, out: np.ndarray, ctx: FaceContext, ob: Observation, index: int) -> str:
        """Swap one face of a confirmed track; returns what was done: "method" | "blur"."""
        track = ob.track
        if eyes_at_edge(ctx.face, out.shape):
            # What is left of a face cut at the eyes by the frame edge cannot be checked
            # (see ``eyes_at_edge``): blurred, as the real-time engine does.
            self.cover(out, ctx)
            return "blur"
        img = out.copy()
        if self._due(track, ob.face, index, out.shape):
            extra = self._attacker_refs(img, ctx, ob) if self.verify else []
            if track.fallback_blur:
                track.retries += 1
            track.keyframes.append(index)
            track.key_width, track.key_whole = float(ob.face.box[2]), _inside(ob.face.box,
                                                                               out.shape)
            if track.donor_index is None and not self._take_hint(track):
                return self._first_keyframe(out, img, ctx, track, extra)
            return self._reverify(out, img, ctx, track, extra)
        self._render(out, ctx, track, track.overrides)
        if track.fallback_blur:
            self.cover(out, ctx)
            return "blur"
        if not self.verify:
            return "method"
        extra = self._attacker_refs(img, ctx, ob)
        if self._guard(out, img, ctx, extra) > GUARD_SLACK:
            # The guard says this frame is less private than its keyframe had to be (the
            # face turned, grew or changed light since): a full keyframe check here, out
            # of turn.
            track.keyframes.append(index)
            track.guard_trips += 1
            out[...] = img
            return self._reverify(out, img, ctx, track, extra)
        return "method"

    def _risk(self, out: np.ndarray, ctx: FaceContext, own: np.ndarray,
              extra: list | tuple = ()) -> float:
        """How close the swapped face in ``out`` still is to the original (SFace
        embedding ``own`` at the tracked face), measured as the swap measures it on a
        photo: at the tracked face and at the face re-detected in ``out``, the worst
        (``SwapAnonymizer._attacker_similarity``); < 0 is private with the swap's margin.
        The re-detection matters: the donor's texture moves the points a detector finds,
        and at those points a face measured 0.385 where the tracked points said 0.29.
        ``extra``: (face, the original's embedding there) of other places an attacker
        may align at (``_attacker_refs``), each compared as the tracked face is."""
        from refacex.faces.recognizers import get_recognizer

        sface = get_recognizer("sface")
        seen = self.anonymizer._redetect(out, ctx)
        return self.anonymizer._attacker_similarity(out, ctx, own, seen, extra) - (
            sface.threshold - self.anonymizer.verify_margin)

    def _guard(self, out: np.ndarray, original: np.ndarray, ctx: FaceContext,
               extra: list | tuple = ()) -> float:
        """Every non-keyframe: ``_risk`` of the result against this frame's original
        (re-detection and three to six SFace runs, ~20-70 ms; the keyframe check adds
        dlib, pose and the escalation ladder). Over ``GUARD_SLACK``: a full check."""
        return self._risk(out, ctx, self._own(original, ctx), extra)

    @staticmethod
    def _own(original: np.ndarray, ctx: FaceContext) -> np.ndarray:
        """The original face's SFace embedding at this frame's tracked points."""
        from refacex.faces.recognizers import get_recognizer

        return get_recognizer("sface").embed(original, ctx.face)

    @staticmethod
    def _attacker_refs(original: np.ndarray, ctx: FaceContext, ob: Observation
                       ) -> list[tuple[Face, np.ndarray]]:
        """The raw detection, with the original's SFace embedding there, where its
        points differ from the tracked (smoothed) ones the face is edited at (``_risk``'s
        ``extra``): an attacker who knows where the face was aligns where a detector
        finds it, as the audit's known-location check does. At a frame edge the two sets
        of eyes were 3 px apart on a 66 px face, and SFace at the detected ones judged a
        swapped frame the same person (0.37) where the tracked ones said 0.25."""
        from refacex.faces.recognizers import get_recognizer

        d = ob.detected
        if d is None or float(np.abs(d.kps - ctx.face.kps).max()) <= 0.5:
            return []
        return [(d, get_recognizer("sface").embed(original, d))]

    def _take_hint(self, track) -> bool:
        """Give ``track`` the donor of a hint (``donor_hints``) if it starts in the part's
        first two frames where the hint's face was (IoU >= ``LINK_IOU``, the best one)."""
        first, box = self.spans.get(track.id, [None, None])[:2]
        if not self.hints or first is None or first > 1:
            return False
        overlap, best = max((iou(np.asarray(h["box"], float), box), i)
                            for i, h in enumerate(self.hints))
        if overlap < LINK_IOU:
            return False
        best = self.hints[best]
        self.hints.remove(best)
        ids = list(self.anonymizer.bank.ids)
        if best["donor"] not in ids:
            return False
        track.donor_index = ids.index(best["donor"])
        track.donors_seen.append(best["donor"])
        track.overrides = dict(best.get("overrides") or {})
        return True

    def _first_keyframe(self, out: np.ndarray, original: np.ndarray, ctx: FaceContext,
                        track, extra: list) -> str:
        """The swap's own choice and verification: the keyed donor for the whole track.
        The swap checks at the tracked points; ``extra`` (``_attacker_refs``) adds the
        others, as a later keyframe does."""
        self.chooser.apply(out, ctx)  # verified (unless --no-verify), wider margin
        donor = ctx.info.get("donor")
        if donor is not None:
            track.donor_index = list(self.anonymizer.bank.ids).index(donor)
            track.donors_seen.append(donor)
        track.overrides = dict(ctx.info.get("escalated") or {})
        risk = self._chooser_risk(ctx)
        if extra and risk is not None and risk < 0:
            risk = max(risk, self._risk(out, ctx, self._own(original, ctx), extra))
        self._note_risk(track, risk)
        # As strict as the later keyframes (``_reverify``): a result the chooser kept
        # inside its own margin for want of a private one is blurred, and checked again.
        track.fallback_blur = ctx.info.get("fallback") == "blur" or (
            risk is not None and risk >= 0)
        if track.fallback_blur and ctx.info.get("fallback") != "blur":
            self.cover(out, ctx)
        if "sface" in ctx.face.embeddings:
            track.embedding = ctx.face.embeddings["sface"]
        return "blur" if track.fallback_blur else "method"

    def _render(self, out: np.ndarray, ctx: FaceContext, track, overrides: dict) -> None:
        """The track's donor with the accepted settings, unverified (cheap)."""
        variant = self.fast
        if overrides:
            variant = copy.copy(self.fast)
            variant.__dict__.update(overrides)
        ctx.donor_index = track.donor_index
        if track.embedding is not None:
            # Only used to verify, which is off here: skips an SFace run per frame.
            ctx.face.embeddings.setdefault("sface", track.embedding)
        variant.apply(out, ctx)

    def _ladder(self, original: np.ndarray, ctx: FaceContext, start: dict, render,
                extra: list | tuple = ()) -> tuple[float, dict, np.ndarray]:
        """The track's donor up the swap's escalation ladder from its accepted settings
        ``start``: ``render(trial, overrides)`` draws it into a copy of ``original``, and
        each result is checked as an attacker would (SFace against the original, at the
        tracked and at the re-detected face, the worse of the two, as the swap's own
        ``_attacker_similarity``; ``extra``: more places, see ``_risk``). The first private
        setting, else the least risky one: (risk, its settings, its image); risk < 0 is
        private with margin."""
        own = self._own(original, ctx)
        best: tuple[float, dict, np.ndarray] | None = None
        for overrides in [start] + [e for e in self.anonymizer.ESCALATION if e != start]:
            trial = original.copy()
            render(trial, overrides)
            risk = self._risk(trial, ctx, own, extra)
            if best is None or risk < best[0]:
                best = (risk, dict(overrides), trial)
            if risk < 0:
                break
        assert best is not None
        return best

    def _reverify(self, out: np.ndarray, original: np.ndarray, ctx: FaceContext,
                  track, extra: list | tuple = ()) -> str:
        """A later keyframe: the track's donor again (one identity per person), up the
        escalation ladder if it is not private (``_ladder``). Stricter than the swap's
        check on a photo, which keeps the least risky result unless a recogniser matches
        it at its own threshold: a video shows the face again 25 times a second, each
        frame a new measurement, and results kept inside the margin let single frames
        cross the threshold. So only a result private with the margin is kept, else
        this face is blurred until a later keyframe (``retry_every``) finds the donor
        private again: never a second donor, never a leak. Returns "method" | "blur".
        """
        if not self.verify:
            self._render(out, ctx, track, track.overrides)
            track.fallback_blur = False
            return "method"
        risk, overrides, trial = self._ladder(
            original, ctx, track.overrides,
            lambda im, ov: self._render(im, ctx, track, ov), extra)
        self._note_risk(track, risk)
        x, y, w, h = ctx.rect
        out[y:y + h, x:x + w] = trial[y:y + h, x:x + w]
        if risk >= 0:
            self.cover(out, ctx)
            track.fallback_blur = True
            return "blur"
        track.overrides = overrides
        track.fallback_blur = False
        return "method"

    def _chooser_risk(self, ctx: FaceContext) -> float | None:
        """The first keyframe's risk (``chooser``, wider margin) on the common scale (the
        swap's own margin), like every later check's."""
        risk = ctx.info.get("privacy_risk")
        if risk is None:
            return None
        return float(risk) - (self.chooser.verify_margin - self.anonymizer.verify_margin)

    @staticmethod
    def _note_risk(track, risk: float | None) -> None:
        if risk is not None:
            r = round(float(risk), 3)
            track.privacy_risk = r if track.privacy_risk is None else max(track.privacy_risk, r)

    def apply_method(self, out: np.ndarray, ctx: FaceContext, ob: Observation,
                     index: int) -> str:
        """The method on one face of a confirmed track, in place; returns what was done:
        "method", or "blur" where the method could not be applied safely here."""
        if self.is_swap:
            return self._swap(out, ctx, ob, index)
        self.anonymizer.apply(out, ctx)
        return "method"

    def cover(self, out: np.ndarray, ctx: FaceContext) -> None:
        """Blur one face that does not get the method (short, small, unconfirmed,
        coasting, cut by the frame edge)."""
        if not face_cut(ctx.face, out.shape):
            self.blur.apply(out, ctx)
            return
        x, y, w, h = ctx.rect
        blend_in(out, ctx, cv2.GaussianBlur(out[y:y + h, x:x + w], (0, 0),
                                            self.blur.sigma(ctx)), cut_alpha(ctx))

    def edit(self, img: np.ndarray, obs: list[Observation], index: int
             ) -> tuple[np.ndarray, list[FaceRecord]]:
        """Apply the per-track decisions to one frame; (edited frame, vault records)."""
        out, regions = self.edit_regions(img, obs, index)
        return out, vault_records(img, regions)

    def edit_regions(self, img: np.ndarray, obs: list[Observation], index: int
                     ) -> tuple[np.ndarray, list[Region]]:
        """Apply the per-track decisions to one frame; (edited frame, edited regions).
        The regions' original pixels are the vault's (``vault_records``, which the
        threaded writer runs off the anonymiser's thread)."""
        out = img.copy()
        regions: list[Region] = []
        for i, ob in enumerate(obs):
            act = self._action(ob)
            if act == "leave":
                continue
            ctx = FaceContext.for_face(ob.face, img.shape[:2], donor_key=self.keys.donor_key)
            x, y, w, h = ctx.rect
            if w <= 0 or h <= 0:
                continue
            c = self.counts.setdefault(ob.track.id, [0, 0])
            box = [round(float(v), 1) for v in ob.face.box]
            span = self.spans.setdefault(ob.track.id, [index, box, index, box])
            span[2:] = [index, box]
            done = self.apply_method(out, ctx, ob, index) if act == "method" else "blur"
            if act != "method":
                self.cover(out, ctx)
            c[0 if done == "method" else 1] += 1
            if done == "method":
                self.first_method.setdefault(ob.track.id, index)
            regions.append(Region(i, ob.face, ctx.matrix, ctx.rect))
        return out, regions

    def reports(self) -> list[TrackReport]:
        out = []
        for tr in self.tracker.all:
            m, b = self.counts.get(tr.id, [0, 0])
            if not m and not b:
                continue
            out.append(TrackReport(tr.id, tr.first_frame, tr.last_frame, m, b, tr.verdict,
                                   list(tr.donors_seen), list(tr.keyframes), tr.privacy_risk,
                                   tr.guard_trips, self.first_method.get(tr.id),
                                   *self._span(tr.id), dict(tr.overrides or {})))
        return out

    def _span(self, track_id: int) -> tuple:
        s = self.spans.get(track_id)
        return ((s[0], s[2]), s[1], s[3]) if s else (None, None, None)


def anonymize_video(src: str | os.PathLike[str], dest: str | os.PathLike[str],
                    keys: SealKeys, method: str = "swap", strength: float = 1.0,
                    method_options: dict | None = None, low_confidence: str = "blur",
                    codec: str | None = None, crf: int = 20, vault_tier: bool = True,
                    progress=None, robust_tier: bool = False,
                    robust_every_s: float = video_robust.EVERY_S,
                    engine_class: type[VideoAnonymizer] | None = None,
                    **engine: object) -> VideoResult:
    """Anonymise the video ``src`` into ``dest`` (+ ``dest.refacex``, the sealed vault).

    Nothing is at ``dest`` until both files are complete; any error leaves no output.
    ``robust_tier``: also the in-pixel face code every ``robust_every_s`` seconds
    (``video/robust.py``). ``engine_class`` (default ``VideoAnonymizer``; the real-time
    one is ``video.realtime.RealtimeAnonymizer``) gets the ``engine`` options
    (``min_frames``, ``lookahead``, ...).

    Decoding runs one thread ahead and encoding (with the vault's PNGs and the robust
    code) one thread behind the anonymiser (``video/threads.py``).
    """
    src, dest = Path(src), Path(dest)
    t_start = time.perf_counter()
    timings = {"analyse": 0.0, "edit": 0.0, "encode": 0.0, "robust": 0.0, "bind": 0.0}
    robust_stats = {"frames": 0, "bytes": 0}
    with VideoReader(src) as reader:
        info = reader.info
        fps = float(info.rate) if info.rate else 25.0
        engine_ = (engine_class or VideoAnonymizer)(
            keys, method, strength, method_options, low_confidence, fps=fps,
            **engine)  # type: ignore[arg-type]
        robust_every = video_robust.keyframe_every(fps, robust_every_s) if robust_tier else 0
        writer = VideoWriter(dest, info, reader.audio, codec=codec, crf=crf)
        try:
            chunks = (_Chunks(dest, keys, (info.width, info.height), method)
                      if vault_tier else None)
        except BaseException:
            writer.abort()
            engine_.close()
            raise
        rects: list[list[tuple[int, int, int, int]]] = []

        def consume(item: tuple) -> None:
            """Writer thread: robust code, vault records, encoding (in frame order)."""
            t0 = time.perf_counter()
            if item[0] == "audio":
                writer.write_audio(item[1])
                return
            _, frame, out, regions = item
            key = bool(robust_every) and frame.index % robust_every == 0 and bool(regions)
            if key:
                t1 = time.perf_counter()
                out, nbytes, _coded = video_robust.embed_frame(
                    out, frame.image, [(r.index, r.face) for r in regions], keys)
                robust_stats["frames"] += nbytes > 0
                robust_stats["bytes"] += nbytes
                timings["robust"] += time.perf_counter() - t1
            if chunks is not None:
                chunks.add(frame.index, vault_records(frame.image, regions))
            writer.write(out, frame.pts, keyframe=key)
            timings["encode"] += time.perf_counter() - t0

        def decode():
            """The decoder thread: frames, each scanned for faces (``prescan``)."""
            for kind, item in reader.packets():
                if kind == "frame":
                    engine_.prescan(item.image, item.index)
                yield kind, item

        sink = Sink(consume)
        decoder = Prefetch(decode())
        try:
            pending: deque = deque()

            def emit(item) -> None:
                frame, obs = item
                t0 = time.perf_counter()
                out, regions = engine_.edit_regions(frame.image, obs, frame.index)
                timings["edit"] += time.perf_counter() - t0
                rects.append([r.rect for r in regions])
                sink.put(("frame", frame, out, regions))
                if progress is not None:
                    progress(frame.index)

            for kind, item in decoder:
                if kind == "audio":
                    sink.put(("audio", item))
                    continue
                t0 = time.perf_counter()
                t = item.time if item.time is not None else item.index / fps
                obs = engine_.analyse(item.image, item.index, float(t))
                engine_.backfill(pending, item.index)
                timings["analyse"] += time.perf_counter() - t0
                item.av_frame = None  # keep only the pixels while the frame waits
                pending.append((item, obs))
                if len(pending) > engine_.lookahead:
                    emit(pending.popleft())
            while pending:
                emit(pending.popleft())
            sink.finish()
            t0 = time.perf_counter()
            tmp = writer.finish()
            timings["encode"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            bindings = _bindings(tmp, rects) if chunks is not None else []
            timings["bind"] += time.perf_counter() - t0
            side = None
            if chunks is not None:
                chunks.close(bindings)
                side = vault.sidecar_path(dest)
                os.chmod(chunks.tmp, 0o666 & ~_umask())
                os.replace(chunks.tmp, side)
            writer.commit()
        except BaseException:
            sink.abort()
            writer.abort()
            if chunks is not None:
                chunks.abort()
            raise
        finally:
            decoder.close()
            engine_.close()
    n = len(rects)
    elapsed = time.perf_counter() - t_start
    timings["total"] = elapsed
    return VideoResult(dest, side, n, n / elapsed if elapsed > 0 else 0.0,
                       engine_.reports(), sum(len(r) for r in rects),
                       {k: round(v, 3) for k, v in timings.items()},
                       engine_.tracker.reidentified, robust_stats["frames"],
                       robust_stats["bytes"])


def face_cut(face: Face, shape: tuple[int, ...]) -> bool:
    """Are any of the face's brows, nose or eyes (of its 68 landmarks) outside the
    frame? On such a face SFace swings with the alignment points (half its crop is
    outside the frame): what was left of a swapped face (mouth, kept teeth, chin)
    identified people in our clips while the check, at slightly different points,
    passed it. The real-time engine blurs it; this one checks it like any face and
    blurs it when the eyes themselves are at the edge (``eyes_at_edge``). Both cover it
    with ``cut_alpha``."""
    assert face.landmarks is not None
    pts = face.landmarks[17:48]
    h, w = shape[:2]
    return bool(((pts < 0) | (pts >= np.array([w, h], np.float32))).any())


def eyes_at_edge(face: Face, shape: tuple[int, ...]) -> bool:
    """Is an eye centre (the detector's points) within ``EYE_EDGE`` eye distances of
    the frame edge, or outside it? There half of SFace's alignment crop is outside the
    frame and its score swings with the points: a swapped frame of the test clip's
    astronaut leaving at the top (eyes 0-2 px from the edge) measured 0.23 at the points
    re-detected before encoding and 0.38, the same person, 2 px lower after it."""
    m = EYE_EDGE * face.inter_ocular
    eyes = face.kps[:2]
    h, w = shape[:2]
    return bool(((eyes < m) | (eyes > np.array([w - 1, h - 1], np.float32) - m)).any())


def cut_alpha(ctx: FaceContext) -> np.ndarray:
    """Blend weight (h, w of ``ctx.rect``) to cover a face cut by the frame edge: an
    ellipse over its detection box, grown. The face-shape mask the methods use is placed
    from the 5 points, which come out too small on such a face."""
    x, y, w, h = ctx.rect
    alpha = np.zeros((h, w), np.float32)
    bx, by, bw, bh = (float(v) for v in ctx.face.box)
    centre = (int(round(bx + bw / 2 - x)), int(round(by + bh / 2 - y)))
    axes = (int(round(0.65 * bw)), int(round(0.65 * bh)))
    cv2.ellipse(alpha, centre, axes, 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(alpha, (0, 0), max(1.0, 0.05 * bw))


def blend_in(out: np.ndarray, ctx: FaceContext, top: np.ndarray, alpha: np.ndarray) -> None:
    """``out``'s edit rectangle blended towards ``top`` (its size) by ``alpha``, in place."""
    x, y, w, h = ctx.rect
    roi = out[y:y + h, x:x + w].astype(np.float32)
    out[y:y + h, x:x + w] = np.clip(roi + alpha[..., None] * (top.astype(np.float32) - roi)
                                    + 0.5, 0, 255).astype(np.uint8)


def _inside(box: np.ndarray, shape: tuple[int, ...], margin: float = 0.05) -> bool:
    """Is the face box whole in the frame (not cut by an edge)?"""
    x, y, w, h = (float(v) for v in box)
    mx, my = margin * w, margin * h
    return x >= -mx and y >= -my and x + w <= shape[1] + mx and y + h <= shape[0] + my


def _bindings(path: Path, rects: list[list[tuple[int, int, int, int]]]) -> list[bytes]:
    """Per frame: the binding of the *decoded* output's luma over that frame's regions."""
    out = []
    with VideoReader(path) as r:
        for f in r.frames():
            if f.index >= len(rects):
                break
            out.append(image_binding(luma(f.av_frame), rects[f.index]))
    if len(out) != len(rects):
        raise OutputError(f"the encoder wrote {len(out)} frames for {len(rects)} input "
                          "frames (cannot bind the vault)")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
