"""Restore an anonymised video with the key: exact original regions in the decoded frames.

The anonymised video is lossy (H.264), so "the original" here is: each decoded frame of
the anonymised file with the vault's original regions pasted back, bit-exact. The result
is written losslessly (RGB H.264 at qp 0, ``refacex.io.video.LOSSLESS_CODEC``) unless a
lossy ``codec`` is asked for, so what the vault restored exactly stays exact on disk.

Everything is checked before anything is pasted (``video/vault.py`` lists what): the
index opens with the key and comes from a trusted site, every chunk is present, of this
video and in order, and every decoded frame matches its binding. Any failure is an error
for the whole video and no output is written (a half-restored video would be mistaken
for the original).

Without a usable vault (lost sidecar, re-encoded copy, ...) the video is restored from
the robust keyframe codes in its pixels, if it was anonymised with them
(``video/robust.py``): approximate faces, said in the result's ``tier`` and notes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from refacex.errors import BindingError, NoPayloadError, PayloadError
from refacex.io.video import VideoReader, VideoWriter, luma
from refacex.payload.binding import BINDING_LEN, image_binding
from refacex.payload.format import Payload, decode_payload
from refacex.payload.keyring import OpenKeys
from refacex.recover import _check_provenance, _vault_patch
from refacex.video import robust as video_robust
from refacex.video import vault


@dataclass
class VideoRecoverResult:
    output: Path
    frames: int
    regions: int
    notes: list[str] = field(default_factory=list)
    tier: str = "vault"  # "vault" | "robust" (the in-pixel keyframe codes)
    keyframes: list[int] = field(default_factory=list)  # robust: frames whose code opened


def _open(blob: bytes, keys: OpenKeys, notes: list[str], kind: str) -> Payload:
    p = decode_payload(blob, **keys.crypto_kwargs())
    _check_provenance(p, keys, "video vault", notes)
    if p.tier != "vault" or p.extra.get("kind") != kind:
        raise vault.VideoVaultError(f"video vault record is not a {kind}")
    return p


def _extra_int(p: Payload, name: str) -> int:
    v = p.extra.get(name)
    if not isinstance(v, int) or v < 0:
        raise vault.VideoVaultError(f"video vault record lacks {name!r}")
    return v


def recover_video(src: str | os.PathLike[str], dest: str | os.PathLike[str],
                  keys: OpenKeys, sidecar: str | os.PathLike[str] | None = None,
                  codec: str | None = None, crf: int = 18, mode: int = 0o600
                  ) -> VideoRecoverResult:
    """Restore ``src`` (its vault: ``sidecar``, default ``src.refacex``) into ``dest``.

    Like a photo: the vault when it is there and fits this very video; otherwise (missing,
    from another or a re-encoded video, wrong key, damaged) the robust keyframe codes
    in the pixels (``video/robust.py``; videos anonymised with ``robust_tier``), with a
    note saying why. Without those either, the vault's error is raised (its class is
    the finding: wrong key, tampered, missing...)."""
    try:
        return _recover_from_vault(Path(src), Path(dest), keys, sidecar, codec, crf, mode)
    except PayloadError as exc:
        vault_error = exc
    try:
        rob = video_robust.recover_robust(src, dest, keys, codec, crf, mode)
    except PayloadError as exc:
        if isinstance(exc, NoPayloadError):
            raise type(vault_error)(f"{vault_error} (and no robust code to fall back on)"
                                    ) from None
        raise type(exc)(f"{exc}; the vault was not usable either ({vault_error})") from None
    return VideoRecoverResult(Path(dest), rob.frames, rob.regions,
                              [f"vault not used: {vault_error}; restored from the robust "
                               f"keyframe codes"] + rob.notes, "robust", rob.keyframes)


class _PartVault:
    """One part's vault (a whole-file run has one part): its index, checked, and its
    chunks, opened one at a time as the frames reach them."""

    def __init__(self, records: list[bytes], keys: OpenKeys, notes: list[str],
                 offset: int) -> None:
        self.keys, self.notes, self.offset = keys, notes, offset
        self.index = index = _open(records[-1], keys, notes, "video-index")
        self.video_id = index.extra.get("video")
        n_chunks, self.frames = _extra_int(index, "chunks"), _extra_int(index, "frames")
        self.bindings = index.extra.get("bindings")
        if not isinstance(self.bindings, bytes) or \
                len(self.bindings) != BINDING_LEN * self.frames:
            raise vault.VideoVaultError("video vault index is malformed (bindings)")
        if n_chunks != len(records) - 1:
            raise vault.VideoVaultError(f"video vault holds {len(records) - 1} chunk(s), "
                                        f"its index says {n_chunks} (truncated or spliced)")
        self.chunks = iter(records[:-1])
        self.seq = self.next = self.end = 0
        self.by_frame: dict[int, list] = {}

    def binding(self, frame: int) -> bytes:
        i = frame - self.offset
        return self.bindings[i * BINDING_LEN:(i + 1) * BINDING_LEN]

    def records_for(self, frame: int) -> list:
        """The face records of ``frame`` (the video's index), opening chunks as needed."""
        local = frame - self.offset
        while local >= self.end:
            blob = next(self.chunks, None)
            if blob is None:
                raise vault.VideoVaultError(f"video vault has no chunk for frame {frame}")
            c = _open(blob, self.keys, self.notes, "video-chunk")
            first, count = _extra_int(c, "first"), _extra_int(c, "count")
            if c.extra.get("video") != self.video_id or _extra_int(c, "seq") != self.seq \
                    or first != self.next:
                raise vault.VideoVaultError("video vault chunks are out of order or from "
                                            "another video")
            frame_of = c.extra.get("frame_of", b"")
            if not isinstance(frame_of, bytes) or len(frame_of) != 4 * len(c.faces):
                raise vault.VideoVaultError("video vault chunk is malformed (frame_of)")
            by_frame: dict[int, list] = {}
            for rec, f in zip(c.faces, struct.unpack(f"<{len(c.faces)}I", frame_of),
                              strict=True):
                if not first <= f < first + count:
                    raise vault.VideoVaultError("video vault chunk is malformed (frame)")
                by_frame.setdefault(f, []).append(rec)
            if (c.image_size[0], c.image_size[1]) != tuple(self.index.image_size):
                raise vault.VideoVaultError("video vault chunk is for another frame size")
            self.seq, self.next, self.end = self.seq + 1, first + count, first + count
            self.by_frame = by_frame
        return self.by_frame.get(local, [])


def _recover_from_vault(src: Path, dest: Path, keys: OpenKeys,
                        sidecar: str | os.PathLike[str] | None, codec: str | None, crf: int,
                        mode: int) -> VideoRecoverResult:
    """The vault route of ``recover_video`` (exact regions)."""
    notes: list[str] = []
    parts: list[_PartVault] = []
    for records in vault.read_parts(sidecar or vault.sidecar_path(src)):
        parts.append(_PartVault(records, keys, notes,
                                parts[-1].offset + parts[-1].frames if parts else 0))
        if tuple(parts[-1].index.image_size) != tuple(parts[0].index.image_size):
            raise vault.VideoVaultError("video vault parts are for different frame sizes")
    n_frames = parts[-1].offset + parts[-1].frames
    image_size = tuple(parts[0].index.image_size)
    current = iter(parts)
    part = next(current)

    regions = 0
    with VideoReader(src) as reader:
        info = reader.info
        if (info.width, info.height) != image_size:
            raise BindingError(f"video vault is for {image_size[0]}x"
                               f"{image_size[1]} frames, this video is "
                               f"{info.width}x{info.height} (re-encoded or resized?)")
        with VideoWriter(dest, info, reader.audio, codec=codec, crf=crf,
                         lossless=codec is None, mode=mode) as writer:
            n = 0
            for kind, item in reader.packets():
                if kind == "audio":
                    writer.write_audio(item)
                    continue
                i = item.index
                if i >= n_frames:
                    raise BindingError(f"video has more frames than its vault ({n_frames})")
                while i >= part.offset + part.frames:
                    part = next(current)
                recs = part.records_for(i)
                want = part.binding(i)
                if image_binding(luma(item.av_frame), [r.rect for r in recs]) != want:
                    raise BindingError(f"frame {i} does not match the video vault (the video "
                                       "was re-encoded or edited, or the vault belongs to "
                                       "another video)")
                img = item.image.copy()
                for rec in reversed(recs):
                    x, y, w, h = (int(v) for v in rec.rect)
                    img[y:y + h, x:x + w] = _vault_patch(rec, img.shape)
                    regions += 1
                writer.write(img, item.pts)
                n += 1
            if n != n_frames:
                raise BindingError(f"video has {n} frames, its vault {n_frames} (truncated?)")
            writer.finish()
            writer.commit()
    return VideoRecoverResult(dest, n, regions, notes)


__all__ = ["PayloadError", "VideoRecoverResult", "recover_video"]
