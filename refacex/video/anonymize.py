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
   track**, on its first keyframe, with the full privacy verification; a few later
   keyframes (every ``verify_every_s``, at most ``max_keyframes``) re-verify with that
   donor first; every other frame reuses the accepted donor and settings unverified
   (``FaceContext.donor_index``, ``verify=False``) — ~6x cheaper, and the identity
   cannot drift;
5. the original pixels of every edited region go, PNG-compressed, into sealed chunks of
   the sidecar vault (``video/vault.py``); after encoding, the output is decoded back and
   each frame's binding goes into the sealed index; then sidecar and video are renamed
   into place (sidecar first, like images).
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

import numpy as np

from refacex.anonymize import FaceContext, get_method
from refacex.anonymize.baselines import BlurAnonymizer
from refacex.errors import OutputError
from refacex.faces.confirm import FACE, NOT_FACE, action_for, confirmer
from refacex.faces.detect import _detector
from refacex.io.images import TEMP_SUFFIX, encode_image
from refacex.io.video import VideoReader, VideoWriter, luma
from refacex.payload.binding import image_binding
from refacex.payload.format import FaceRecord, Payload, encode_payload
from refacex.payload.keyring import SealKeys
from refacex.pipeline import LOW_FLOOR, analyzer
from refacex.video import vault
from refacex.video.track import Observation, Tracker

#: Smallest face (detector box width, px) that gets the swap; smaller ones are blurred
#: (the donor crop would be upsampled mush, and the verification is unreliable there).
MIN_SWAP_PX = 32


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
                 verify_every_s: float = 2.0, max_keyframes: int = 6) -> None:
        action_for(NOT_FACE, low_confidence)  # validates the policy before any work
        self.keys, self.method, self.low_confidence = keys, method, low_confidence
        self.anonymizer = get_method(method, strength=strength, **(method_options or {}))
        self.is_swap = method == "swap"
        self.verify = bool(getattr(self.anonymizer, "verify", False))
        self.fast = self.anonymizer
        if self.is_swap:
            self.fast = copy.copy(self.anonymizer)
            self.fast.verify = False
        self.blur = BlurAnonymizer()
        self.tracker = Tracker(fps=fps)
        self.fps = fps
        self.min_frames = max(1, min_frames)
        self.lookahead = max(self.min_frames - 1, lookahead)
        self.verify_every = max(1, int(round(verify_every_s * fps)))
        self.max_keyframes = max_keyframes
        self.detector = _detector(LOW_FLOOR)
        self.judge = confirmer()
        self.fa = analyzer()
        self.counts: dict[int, list[int]] = {}  # track id -> [method frames, blurred]
        #: An unconfirmed (plausible) track gets a new second opinion this often (frames):
        #: it may become a face as it turns or grows, but not every frame's worth of cost.
        self.rejudge_every = max(1, int(round(fps / 5)))

    # ---------------------------------------------------------------- analysis
    def analyse(self, img: np.ndarray, index: int, t: float) -> list[Observation]:
        """Detect, associate, judge and smooth the faces of one frame."""
        from refacex.faces.recognizers import get_recognizer

        tr = self.tracker
        dets = self.detector.detect(img)
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
            self.fa.describe(img, d, landmarks=True, pose=False)
            if track is None:
                emb = get_recognizer("sface").embed(img, d)
                track = tr.reidentify(emb, index) or tr.new_track(d, index, t, verdict)
                track.judged_at = index
                if track.embedding is None:
                    track.embedding = emb
            if track.id in seen:  # two detections on one track: the second starts its own
                track = tr.new_track(d, index, t, verdict)
            seen.add(track.id)
            obs.append(Observation(track, tr.observe(track, d, index, t, verdict)))
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
        ``verify_every`` frames, at most ``max_keyframes`` times in all."""
        if not track.keyframes:
            return True
        if len(track.keyframes) >= self.max_keyframes:
            return False
        w = float(face.box[2])
        ratio = w / max(track.key_width, 1.0)
        whole = _inside(face.box, shape)
        return (ratio > 1.2 or ratio < 1 / 1.2 or (whole and not track.key_whole)
                or index - track.keyframes[-1] >= self.verify_every)

    def _swap(self, out: np.ndarray, ctx: FaceContext, ob: Observation, index: int) -> None:
        track = ob.track
        img = out.copy()
        if self._due(track, ob.face, index, out.shape):
            track.keyframes.append(index)
            track.key_width, track.key_whole = float(ob.face.box[2]), _inside(ob.face.box,
                                                                               out.shape)
            if track.donor_index is None:
                self._first_keyframe(out, ctx, track)
                return
            self._reverify(out, img, ctx, track)
            return
        self._render(out, ctx, track, track.overrides)
        if track.fallback_blur:
            self.blur.apply(out, ctx)
        elif self.verify and not self._guard(out, img, ctx):
            # The cheap guard says this frame is not private (the face turned, grew or
            # changed light since the keyframe): a full keyframe check here, out of turn.
            track.keyframes.append(index)
            track.guard_trips += 1
            out[...] = img
            self._reverify(out, img, ctx, track)

    def _guard(self, out: np.ndarray, original: np.ndarray, ctx: FaceContext) -> bool:
        """Every non-keyframe: SFace on the result at the face's own landmarks against
        the original, at the swap's margin (two SFace runs, ~20 ms; the keyframe check
        adds re-detection, dlib and pose). True = private."""
        from refacex.faces.recognizers import get_recognizer

        sface = get_recognizer("sface")
        face = copy.copy(ctx.face)
        face.embeddings = {}
        sim = sface.similarity(sface.embed(original, face), sface.embed(out, face))
        return sim < sface.threshold - self.anonymizer.verify_margin

    def _first_keyframe(self, out: np.ndarray, ctx: FaceContext, track) -> None:
        """The swap's own choice and verification: the keyed donor for the whole track."""
        self.anonymizer.apply(out, ctx)  # verified (unless --no-verify)
        donor = ctx.info.get("donor")
        if donor is not None:
            track.donor_index = list(self.anonymizer.bank.ids).index(donor)
            track.donors_seen.append(donor)
        track.overrides = dict(ctx.info.get("escalated") or {})
        track.fallback_blur = ctx.info.get("fallback") == "blur"
        self._note_risk(track, ctx.info.get("privacy_risk"))
        if "sface" in ctx.face.embeddings:
            track.embedding = ctx.face.embeddings["sface"]

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

    def _reverify(self, out: np.ndarray, original: np.ndarray, ctx: FaceContext,
                  track) -> None:
        """A later keyframe: the track's donor again (one identity per person), checked
        as an attacker would (SFace on the re-detected result, the swap's margin); not
        private -> up the swap's escalation ladder with the same donor; still not ->
        this track is blurred from here on (never a second donor, never a leak)."""
        from refacex.faces.recognizers import get_recognizer

        if not self.verify:
            self._render(out, ctx, track, track.overrides)
            return
        sface = get_recognizer("sface")
        face = ctx.face
        own = face.embeddings.get("sface")
        if own is None or own is track.embedding:
            own = sface.embed(original, face)
        limit = sface.threshold - self.anonymizer.verify_margin
        ladder = [track.overrides] + [e for e in self.anonymizer.ESCALATION
                                      if e != track.overrides]
        x, y, w, h = ctx.rect
        for overrides in ladder:
            trial = original.copy()
            self._render(trial, ctx, track, overrides)
            seen = self.anonymizer._redetect(trial, ctx)
            sim = sface.similarity(own, sface.embed(trial, seen if seen is not None
                                                    else face))
            risk = sim - limit
            if risk < 0:
                out[y:y + h, x:x + w] = trial[y:y + h, x:x + w]
                track.overrides = dict(overrides)
                self._note_risk(track, risk)
                if track.fallback_blur:
                    self.blur.apply(out, ctx)
                return
        self._render(out, ctx, track, track.overrides)
        self.blur.apply(out, ctx)
        track.fallback_blur = True
        self._note_risk(track, risk)

    @staticmethod
    def _note_risk(track, risk: float | None) -> None:
        if risk is not None:
            r = round(float(risk), 3)
            track.privacy_risk = r if track.privacy_risk is None else max(track.privacy_risk, r)

    def edit(self, img: np.ndarray, obs: list[Observation], index: int
             ) -> tuple[np.ndarray, list[FaceRecord]]:
        """Apply the per-track decisions to one frame; (edited frame, vault records)."""
        out = img.copy()
        records: list[FaceRecord] = []
        for i, ob in enumerate(obs):
            act = self._action(ob)
            if act == "leave":
                continue
            ctx = FaceContext.for_face(ob.face, img.shape[:2], donor_key=self.keys.donor_key)
            x, y, w, h = ctx.rect
            if w <= 0 or h <= 0:
                continue
            c = self.counts.setdefault(ob.track.id, [0, 0])
            if act == "method":
                if self.is_swap:
                    self._swap(out, ctx, ob, index)
                else:
                    self.anonymizer.apply(out, ctx)
                c[0] += 1
            else:
                self.blur.apply(out, ctx)
                c[1] += 1
            records.append(FaceRecord(index=i, affine=ctx.matrix, crop_size=256,
                                      rect=ctx.rect, codec="png",
                                      data=encode_image(img[y:y + h, x:x + w], ".png")))
        return out, records

    def reports(self) -> list[TrackReport]:
        out = []
        for tr in self.tracker.all:
            m, b = self.counts.get(tr.id, [0, 0])
            if not m and not b:
                continue
            out.append(TrackReport(tr.id, tr.first_frame, tr.last_frame, m, b, tr.verdict,
                                   list(tr.donors_seen), list(tr.keyframes), tr.privacy_risk,
                                   tr.guard_trips))
        return out


def anonymize_video(src: str | os.PathLike[str], dest: str | os.PathLike[str],
                    keys: SealKeys, method: str = "swap", strength: float = 1.0,
                    method_options: dict | None = None, low_confidence: str = "blur",
                    codec: str | None = None, crf: int = 20, vault_tier: bool = True,
                    progress=None, **engine: object) -> VideoResult:
    """Anonymise the video ``src`` into ``dest`` (+ ``dest.refacex``, the sealed vault).

    Nothing is at ``dest`` until both files are complete; any error leaves no output.
    ``engine`` options go to ``VideoAnonymizer`` (``min_frames``, ``lookahead``, ...).
    """
    src, dest = Path(src), Path(dest)
    t_start = time.perf_counter()
    timings = {"analyse": 0.0, "edit": 0.0, "encode": 0.0, "bind": 0.0}
    with VideoReader(src) as reader:
        info = reader.info
        fps = float(info.rate) if info.rate else 25.0
        engine_ = VideoAnonymizer(keys, method, strength, method_options, low_confidence,
                                  fps=fps, **engine)  # type: ignore[arg-type]
        writer = VideoWriter(dest, info, reader.audio, codec=codec, crf=crf)
        try:
            chunks = (_Chunks(dest, keys, (info.width, info.height), method)
                      if vault_tier else None)
        except BaseException:
            writer.abort()
            raise
        rects: list[list[tuple[int, int, int, int]]] = []
        regions = 0
        try:
            pending: deque = deque()

            def emit(item) -> None:
                nonlocal regions
                frame, obs = item
                t0 = time.perf_counter()
                out, records = engine_.edit(frame.image, obs, frame.index)
                timings["edit"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                writer.write(out, frame.pts)
                timings["encode"] += time.perf_counter() - t0
                rects.append([r.rect for r in records])
                regions += len(records)
                if chunks is not None:
                    chunks.add(frame.index, records)
                if progress is not None:
                    progress(frame.index)

            for kind, item in reader.packets():
                if kind == "audio":
                    writer.write_audio(item)
                    continue
                t0 = time.perf_counter()
                t = item.time if item.time is not None else item.index / fps
                obs = engine_.analyse(item.image, item.index, float(t))
                timings["analyse"] += time.perf_counter() - t0
                item.av_frame = None  # keep only the pixels while the frame waits
                pending.append((item, obs))
                if len(pending) > engine_.lookahead:
                    emit(pending.popleft())
            while pending:
                emit(pending.popleft())
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
            writer.abort()
            if chunks is not None:
                chunks.abort()
            raise
    n = len(rects)
    elapsed = time.perf_counter() - t_start
    timings["total"] = elapsed
    return VideoResult(dest, side, n, n / elapsed if elapsed > 0 else 0.0,
                       engine_.reports(), regions,
                       {k: round(v, 3) for k, v in timings.items()},
                       engine_.tracker.reidentified)


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
