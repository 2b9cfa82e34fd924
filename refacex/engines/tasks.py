"""One file's work, the same in every engine.

``Worker`` is what a Ray actor is made of and what the local engine calls in-process, so
both engines run exactly this code on every file: the same decoder, pipeline, output
encoder and error texts. Its models are the pipeline's per-process caches (detector,
landmarker, recognisers, donor bank): loaded by the first file (or ``warm``) and kept for
the life of the process, i.e. of the actor.

``Job`` carries the run's settings in plain, picklable values (``KeySpec``: the keys as
bytes; cryptography's key objects cannot be pickled), so it can travel to workers on
other machines. ``Job.digest`` names the settings in the manifest: a file done with
other settings or other keys is not "done" for this run.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from refacex.errors import RefacexError
from refacex.payload.keyring import SealKeys
from refacex.payload.sitekeys import SiteKey

KINDS = ("image", "video")


def failure_text(exc: BaseException) -> str:
    """One line for a file that failed: a user's error as it is, anything else marked as a
    bug (the batch goes on either way)."""
    if isinstance(exc, RefacexError):
        return str(exc)
    return f"internal error (a bug; please report it): {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class KeySpec:
    """``SealKeys`` as bytes. The site seed and passphrase are secrets: they are kept out
    of ``repr`` (Ray may print task arguments in its errors and logs)."""

    recipients: tuple[bytes, ...] = ()
    passphrase: bytes | None = field(default=None, repr=False)
    site_seed: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, keys: SealKeys) -> KeySpec:
        return cls(tuple(k.public_bytes_raw() for k in keys.recipients), keys.passphrase,
                   keys.site.seed if keys.site is not None else None)

    def seal_keys(self) -> SealKeys:
        return SealKeys(recipients=[X25519PublicKey.from_public_bytes(b)
                                    for b in self.recipients],
                        passphrase=self.passphrase,
                        site=SiteKey(self.site_seed) if self.site_seed is not None else None)

    def fingerprint(self) -> str:
        """Names the keys without revealing them: the public keys, and a hash of the
        (already key-derived, 32-byte) donor secret, so another site key or passphrase
        reads as other settings."""
        keys = self.seal_keys()
        h = hashlib.sha256(b"refacex manifest keys v1")
        for r in self.recipients:
            h.update(r)
        if keys.site is not None:
            h.update(keys.site.public.ed25519)
        h.update(hashlib.sha256(keys.donor_key).digest())
        return h.hexdigest()[:32]


@dataclass(frozen=True)
class Job:
    """The settings of one ``anonymize`` run (images and videos)."""

    keys: KeySpec
    method: str = "swap"
    strength: float = 1.0
    tiers: tuple[str, ...] = ("vault", "robust")
    low_confidence: str = "blur"
    method_options: dict[str, Any] | None = None
    robust_code: str = "auto"
    quality: int = 95
    codec: str | None = None  # videos
    crf: int = 20  # videos
    #: Videos on Ray: cut at keyframes into parts of at least this many seconds, one task
    #: each (``engines/videoparts.py``); 0 keeps every video one task.
    video_part_s: float = 0.0

    def digest(self) -> str:
        """Settings + keys, for the manifest (the output format is in the output path)."""
        doc = {"method": self.method, "strength": self.strength, "tiers": list(self.tiers),
               "low_confidence": self.low_confidence,
               "method_options": self.method_options or {}, "quality": self.quality,
               "robust_code": self.robust_code,
               "codec": self.codec, "crf": self.crf, "keys": self.keys.fingerprint()}
        # Not ``video_part_s``: like the number of workers, it says how the work is
        # shared out, and a video done whole or in parts is done (it differs at most
        # near the cuts, docs/scaling.md).
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()
                              ).hexdigest()[:32]


@dataclass(frozen=True)
class Task:
    """One input file and where its output goes."""

    kind: str  # "image" | "video"
    src: Path
    dest: Path
    #: Further files its output comprises (a ``.refacex`` sidecar): removed when the
    #: task fails and leaves no main output, so a failure leaves nothing behind.
    extras: tuple[Path, ...] = ()
    #: ``--rename``: the manifest names the input by this instead of its path.
    private_name: str | None = None


@dataclass
class Outcome:
    """What became of a task: a report (as the CLI's ``--json`` shows it) or an error."""

    task: Task
    report: dict | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)  # what the image decoders said
    seconds: float = 0.0
    worker: str = ""
    skipped: bool = False  # ``--resume``: done by an earlier run

    @property
    def ok(self) -> bool:
        return self.error is None


def image_report(res: Any, written: list[Path]) -> dict:
    """A file's JSON report: outputs, the summary counts, the robust tier, and per face
    box, decision, donor and code size."""
    return {"output": [str(p) for p in written], **res.summary,
            "robust_bytes": res.robust_bytes, "robust_faces": res.robust_faces,
            "faces_detail": [vars(f) for f in res.faces]}


class Worker:
    """Anonymises files with one run's settings; holds nothing but them (the models are
    the pipeline's process-wide caches)."""

    def __init__(self, job: Job, threads: int | None = None) -> None:
        if threads:
            # One Ray actor per CPU: OpenCV's own pool would otherwise start one thread
            # per core in every actor and oversubscribe the machine.
            import cv2

            cv2.setNumThreads(threads)
        self.job = job
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    @cached_property
    def keys(self) -> SealKeys:
        return self.job.keys.seal_keys()

    def warm(self) -> str:
        """Load the models every file needs now, so the first file's time is its own."""
        from refacex.anonymize import get_method
        from refacex.faces.confirm import confirmer
        from refacex.pipeline import analyzer

        _ = analyzer().landmarker
        confirmer()
        get_method(self.job.method, strength=self.job.strength,
                   **(self.job.method_options or {}))
        _ = self.keys.donor_key  # scrypt in passphrase mode: once per process
        return self.name

    def _result(self, t0: float, **fields: Any) -> dict:
        from refacex.io.images import take_decoder_warnings

        return {"worker": self.name, "seconds": round(time.perf_counter() - t0, 4),
                "warnings": take_decoder_warnings(), "report": None, "error": None, **fields}

    def image(self, src: str, dest: str, data: bytes | None = None) -> dict:
        """Anonymise one image. ``data`` None: read ``src`` and write ``dest`` here (local
        engine). Else ``data`` are ``src``'s bytes and the output comes back as
        ``files``: ``[(name, bytes)]`` in the order to write them (sidecar first), for the
        driver to write atomically where ``dest`` is (Ray: workers need no shared disk).
        """
        from refacex.io.images import decode_image, read_image, take_decoder_warnings
        from refacex.pipeline import anonymize, save

        take_decoder_warnings()  # only this file's messages go into its result
        t0 = time.perf_counter()
        job = self.job
        try:
            img = read_image(src) if data is None else decode_image(data, name=src)
            res = anonymize(img, self.keys, method=job.method, strength=job.strength,
                            tiers=job.tiers, low_confidence=job.low_confidence,
                            method_options=job.method_options or None,
                            robust_code=job.robust_code)
            if data is None:
                return self._result(t0, report=image_report(res, save(res, Path(dest),
                                                                      job.quality)))
            with tempfile.TemporaryDirectory(prefix="refacex-worker-") as tmp:
                written = save(res, Path(tmp) / Path(dest).name, job.quality)
                files = [(p.name, p.read_bytes()) for p in reversed(written)]
            out = [Path(dest).with_name(p.name) for p in written]
            return self._result(t0, report=image_report(res, out), files=files)
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
            return self._result(t0, error=failure_text(exc))

    def video(self, src: str, dest: str, hints: list[dict] | None = None) -> dict:
        """Anonymise one video (or one part of one, ``engines/videoparts.py``; ``hints``:
        its ``donor_hints``), writing ``dest`` and its sidecar itself: a worker elsewhere
        needs the same paths (a shared filesystem)."""
        from refacex.video.anonymize import anonymize_video

        t0 = time.perf_counter()
        job = self.job
        try:
            if not Path(src).is_file():
                raise RefacexError(f"{src}: no such file (on worker {self.name})")
            res = anonymize_video(src, dest, self.keys, method=job.method,
                                  strength=job.strength, method_options=job.method_options,
                                  low_confidence=job.low_confidence, codec=job.codec,
                                  crf=job.crf, vault_tier="vault" in job.tiers,
                                  donor_hints=hints)
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
            return self._result(t0, error=failure_text(exc))
        report = {"output": [str(dest)] + ([str(res.sidecar)] if res.sidecar else []),
                  **res.summary, "tracks": [vars(t) for t in res.tracks]}
        return self._result(t0, report=report)
