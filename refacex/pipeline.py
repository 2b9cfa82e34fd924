"""Anonymise an image and make it carry its own encrypted way back.

Data flow (one image):

1. detect every face (YuNet, low threshold); a second opinion on each detection under
   ``CONFIDENCE`` (``faces/confirm.py``): face, plausible or not a face;
2. 68 landmarks (+ SFace embedding for the donor) for what will be edited; for each face:
   remember the original pixels of its edit region, apply the method (``anonymize/``)
   inside that region — the chosen method on faces, a blur on plausible-but-unconfirmed
   detections (``low_confidence``), nothing on non-faces;
3. **vault tier**: the original edit regions as lossless PNG + their geometry, sealed
   (full AEAD, all recipients) and attached to the output file (PNG chunk / JPEG APP11 /
   sidecar) — exact recovery while the file is intact;
4. **robust tier**: per face a compact code + geometry (the learned code of what the
   anonymised face lacks, ``payload/learned_code.py``, or the PCA code of the aligned
   original face, ``payload/facecode.py``), sealed in the compact mode and embedded in
   the pixels, sized to what the image carries *invisibly* (its textured part:
   ``stego/masking.py``) on the most robust layout that gives every face a usable code
   (``choose_robust``) — recovery after re-encoding, resizing or metadata stripping. A
   photo too small (or too flat) for any code says so in ``robust_status`` (the CLI
   warns), never silently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refacex.anonymize import FaceContext, get_method
from refacex.anonymize.baselines import BlurAnonymizer
from refacex.errors import NoFaceError
from refacex.faces import Face, FaceAnalyzer
from refacex.faces.align import align_matrix, warp_face
from refacex.faces.confirm import CONFIDENT, NOT_FACE, FaceConfirmer, action_for, confirmer
from refacex.faces.detect import _detector
from refacex.io.images import decode_image, encode_image, write_bytes_atomic
from refacex.payload import learned_code
from refacex.payload.binding import image_binding
from refacex.payload.facecode import CODE_PADDING, CODE_SIZE, codec
from refacex.payload.format import FaceRecord, Payload, encode_payload
from refacex.payload.keyring import SealKeys

TIERS = ("vault", "robust")
CONFIDENCE = CONFIDENT  # at or above: a face without a second look (see faces/confirm.py)
LOW_FLOOR = 0.2  # anonymize: below this a detection is not reported at all
DETECT_FLOOR = 0.3  # the shared analyzer's floor (recover matches faces among these)


@dataclass
class FaceReport:
    index: int
    box: list[float]
    score: float
    #: "anonymized" (the method) | "fallback-blur" (plausible, unconfirmed: blurred) |
    #: "uncertain-left" (plausible, ``low_confidence="skip"``) | "not-face-left"
    status: str
    donor: str | None = None
    robust_code_bytes: int = 0
    #: swap's verified margin to the recognisers' same-person thresholds (< 0: checked
    #: private); None where nothing was verified (other methods, or ``verify=False``).
    privacy_risk: float | None = None
    #: The second opinion: verdict (face | plausible | not_face), reason, and for
    #: detections under ``CONFIDENCE`` p_face and the evidence (``Confirmation.to_dict``).
    decision: dict | None = None


@dataclass
class AnonymizeResult:
    image: np.ndarray  # anonymised (and, with the robust tier, watermarked) BGR image
    faces: list[FaceReport]
    robust_bytes: int = 0  # size of the payload embedded in the pixels
    robust_faces: int = 0  # faces whose code fits in the robust tier
    #: Unsealed vault: it is sealed when the output is encoded (``encode_output``), because
    #: it binds to the output's decoded pixels (``refacex.payload.binding``).
    vault_payload: Payload | None = None
    keys: SealKeys | None = None
    robust_dense: bool = False  # a denser (less downscale+JPEG-proof) layout was needed
    #: The robust tier in one phrase, as the JSON report shows it: the layout used
    #: ("normal" | "dense" | "fine"), "<layout>, K of N faces (image too small)",
    #: "none, image too small", or "off" (not requested, or no face edited).
    robust_status: str = "off"
    timings_ms: dict[str, float] = field(default_factory=dict)
    detected: list[Face] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        st = [f.status for f in self.faces]
        return {"faces": len(st) - st.count("not-face-left"),
                "anonymized": st.count("anonymized"), "fallback": st.count("fallback-blur"),
                "uncertain": st.count("uncertain-left"), "not_face": st.count("not-face-left"),
                "robust": self.robust_status}


_analyzer: FaceAnalyzer | None = None


def analyzer() -> FaceAnalyzer:
    global _analyzer
    if _analyzer is None:
        _analyzer = FaceAnalyzer(score_threshold=DETECT_FLOOR)
    return _analyzer


def _png(img: np.ndarray) -> bytes:
    return encode_image(img, ".png")


def build_robust_payload(original: np.ndarray, faces: list[tuple[int, Face]],
                         keys: SealKeys, capacity: int, host: np.ndarray | None = None
                         ) -> tuple[bytes | None, list[int]]:
    """Largest-quality robust payload that fits ``capacity`` bytes.

    Every face gets the same code budget; if even the smallest code per face does not fit,
    the smallest faces are dropped first. Returns the sealed bytes and per-face code sizes.
    With ``host`` (the anonymised image that will carry the payload) and the learned
    recovery model installed, faces get the learned code (``payload.learned_code``: it
    codes what ``host`` lacks); otherwise the PCA code of the original alone.
    """
    learned = host is not None and learned_code.available()
    fc = learned_code.codec() if learned else codec()
    h, w = original.shape[:2]
    mats = [align_matrix(f.kps, CODE_SIZE, CODE_PADDING) for _, f in faces]
    if learned:
        latents = [fc.latent(learned_code.cut(original, m), learned_code.cut(host, m))
                   for m in mats]
        encode = lambda j, budget: fc.encode_latent(latents[j], budget)  # noqa: E731
    else:
        crops = [warp_face(original, f.kps, CODE_SIZE, CODE_PADDING).crop for _, f in faces]
        encode = lambda j, budget: fc.encode(crops[j], budget)  # noqa: E731
    order = sorted(range(len(faces)), key=lambda j: -float(faces[j][1].box[2]))
    for n in range(len(order), 0, -1):
        chosen = sorted(order[:n])
        budget = max(1, capacity // n)
        for _ in range(8):
            if fc.best_level(budget) is None:
                break
            records = [FaceRecord(index=faces[j][0], affine=mats[j], crop_size=CODE_SIZE,
                                  rect=(0, 0, 0, 0), codec=fc.name if learned else "pca-v1",
                                  data=encode(j, budget))
                       for j in chosen]
            # No method name here: every byte of the in-pixel tier goes to face codes.
            blob = encode_payload(Payload(tier="robust", image_size=(w, h), faces=records),
                                  compact=True, **keys.crypto_kwargs())
            if len(blob) <= capacity:
                sizes = [0] * len(faces)
                for j, r in zip(chosen, records, strict=True):
                    sizes[j] = len(r.data)
                return blob, sizes
            budget -= (len(blob) - capacity) // n + 1
    return None, [0] * len(faces)


#: The robust tier's face code: "auto" (the learned code when its model ships and the
#: code bytes per face are in the range where it beats PCA, ``learned_code.BEST_BELOW``;
#: else PCA),
#: "learned" (``payload.learned_code``; an error if the model is missing) or "pca"
#: (``payload.facecode``: no learned weights, e.g. where the learned model's training
#: data terms do not suit).
ROBUST_CODES = ("auto", "learned", "pca")


#: Bytes of a robust payload that are not face code (public-key sealing; 20 with a
#: passphrase) and per face record (index, geometry, lengths): to estimate, from a
#: layout's capacity, the code bytes each face would get.
ROBUST_OVERHEAD = 42
RECORD_OVERHEAD = 15


#: The shortest face code the pipeline settles for before it tries a denser layout: the
#: codec's 32-component level, a coarse face (what a 250 px photo carried before the
#: masking). Below it a denser layout is worth its lower robustness.
MIN_CODE_BYTES = 15


def choose_robust(host: np.ndarray, original: np.ndarray, faces: list[tuple[int, Face]],
                  keys: SealKeys, robust_code: str = "auto"
                  ) -> tuple[bytes | None, list[int], str | None]:
    """The robust payload, per-face code sizes and layout for ``host`` (the anonymised
    image that will carry it; ``original`` gives the face codes).

    Layouts are tried most robust first (``robust.LAYOUTS``), each at the capacity the
    host offers invisibly (``robust.image_capacity``): the first that gives every face at
    least ``MIN_CODE_BYTES`` wins; else the one coding the most faces, then the largest
    smallest code (earlier layouts win ties). (None, zeros, None) when nothing fits.
    ``robust_code``: see ``ROBUST_CODES``.
    """
    from refacex.stego import robust

    best: tuple[bytes | None, list[int], str | None] = (None, [0] * len(faces), None)

    def rank(sizes: list[int]) -> tuple[int, int]:
        coded = [s for s in sizes if s]
        return len(coded), min(coded, default=0)

    for layout in robust.LAYOUTS:
        capacity = robust.image_capacity(host, layout)
        if capacity == 0:
            continue
        learned = robust_code == "learned" or (
            robust_code == "auto" and learned_code.available()
            and (capacity - ROBUST_OVERHEAD) // max(1, len(faces)) - RECORD_OVERHEAD
            < learned_code.BEST_BELOW)
        blob, sizes = build_robust_payload(original, faces, keys, capacity,
                                           host if learned else None)
        if blob is None:
            continue
        if min(sizes) >= MIN_CODE_BYTES:
            return blob, sizes, layout
        if rank(sizes) > rank(best[1]):
            best = (blob, sizes, layout)
    return best


def robust_status(layout: str | None, sizes: list[int]) -> str:
    """``AnonymizeResult.robust_status`` for a choice of ``choose_robust``."""
    coded = sum(1 for s in sizes if s)
    if layout is None or coded == 0:
        return "none, image too small"
    if coded < len(sizes):
        return f"{layout}, {coded} of {len(sizes)} faces (image too small)"
    return layout


def anonymize(image: np.ndarray, keys: SealKeys, method: str = "swap", strength: float = 1.0,
              tiers: tuple[str, ...] = TIERS, fallback: str | None = None,
              confidence: float = CONFIDENCE, method_options: dict | None = None,
              low_confidence: str = "blur", robust_code: str = "auto") -> AnonymizeResult:
    """Anonymise every face of ``image`` (BGR uint8) and prepare the recovery payloads.

    Detections under ``confidence`` get a second opinion: confirmed faces get ``method``,
    clear non-faces are left alone, and plausible-but-unconfirmed ones get
    ``low_confidence``: "blur" (default: protects a face without pasting a face on
    hair or a shirt), "swap" (the method, as for faces) or "skip" (left as they are).
    ``fallback="blur"`` is the older spelling of ``low_confidence="blur"``.
    """
    if robust_code not in ROBUST_CODES:
        raise ValueError(f"unknown robust code {robust_code!r}; choose from {ROBUST_CODES}")
    if robust_code == "learned" and not learned_code.available():
        raise ValueError("the learned robust code's model is not installed (refacex/data/"
                         "recovery_*.onnx); use robust_code='pca'")
    unknown = set(tiers) - set(TIERS)
    if unknown:
        raise ValueError(f"unknown tier(s) {sorted(unknown)}; choose from {TIERS}")
    t = {}
    t0 = time.perf_counter()
    if fallback == "blur":
        low_confidence = "blur"
    action_for(NOT_FACE, low_confidence)  # validates low_confidence before any work
    fa = analyzer()
    anonymizer = get_method(method, strength=strength, **(method_options or {}))
    faces = _detector(LOW_FLOOR).detect(image)
    t["detect"] = (time.perf_counter() - t0) * 1e3
    if not faces:
        raise NoFaceError("no face found: nothing to anonymise (no output written)")
    t0 = time.perf_counter()
    judge = confirmer() if confidence == CONFIDENT else FaceConfirmer(confident=confidence)
    decisions = judge.confirm_all(image, faces)
    actions = [action_for(d.verdict, low_confidence) for d in decisions]
    t["confirm"] = (time.perf_counter() - t0) * 1e3
    if all(d.verdict == NOT_FACE for d in decisions):
        raise NoFaceError(f"no face found: {len(faces)} detection(s), none a face on a "
                          "second look (no output written)")
    t0 = time.perf_counter()
    wants_embedding = anonymizer.replaces_identity
    for f, act in zip(faces, actions, strict=True):
        if act != "leave":
            fa.describe(image, f, landmarks=True, pose=False,
                        recognizers=("sface",) if wants_embedding and act == "method" else ())
    t["align"] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    out = image.copy()
    reports: list[FaceReport] = []
    edited: list[tuple[int, Face, FaceContext]] = []  # (report index, face, context)
    blur = BlurAnonymizer()
    for i, (f, dec, act) in enumerate(zip(faces, decisions, actions, strict=True)):
        ctx = FaceContext.for_face(f, image.shape[:2], donor_key=keys.donor_key)
        rep = FaceReport(i, [round(float(v), 1) for v in f.box], round(f.score, 3), "",
                         decision=dec.to_dict())
        if act == "method":
            anonymizer.apply(out, ctx)
            rep.status, rep.donor = "anonymized", ctx.info.get("donor")
            rep.privacy_risk = ctx.info.get("privacy_risk")
        elif act == "blur":
            blur.apply(out, ctx)
            rep.status = "fallback-blur"
        else:
            rep.status = "not-face-left" if dec.verdict == NOT_FACE else "uncertain-left"
            reports.append(rep)
            continue
        edited.append((i, f, ctx))
        reports.append(rep)
    t["anonymize"] = (time.perf_counter() - t0) * 1e3

    result = AnonymizeResult(image=out, faces=reports, detected=faces, timings_ms=t)
    if not edited:
        return result
    h, w = image.shape[:2]
    if "vault" in tiers:
        t0 = time.perf_counter()
        records = []
        for i, _f, ctx in edited:
            x, y, rw, rh = ctx.rect
            records.append(FaceRecord(index=i, affine=ctx.matrix,
                                      crop_size=256, rect=ctx.rect, codec="png",
                                      data=_png(image[y:y + rh, x:x + rw])))
        result.vault_payload = Payload(tier="vault", image_size=(w, h), faces=records,
                                       method=method)
        result.keys = keys
        t["vault"] = (time.perf_counter() - t0) * 1e3
    if "robust" in tiers:
        from refacex.stego import robust

        t0 = time.perf_counter()
        todo = [(i, f) for i, f, _ in edited]
        blob, sizes, layout = choose_robust(out, image, todo, keys, robust_code)
        result.robust_status = robust_status(layout, sizes)
        if blob is not None and layout is not None:
            result.image = robust.embed(out, blob, dense=layout)
            result.robust_dense = layout != "normal"
            result.robust_bytes = len(blob)
            for (i, _f, _ctx), size in zip(edited, sizes, strict=True):
                reports[i].robust_code_bytes = size
            result.robust_faces = sum(1 for s in sizes if s)
        t["robust"] = (time.perf_counter() - t0) * 1e3
    return result


def seal_vault(result: AnonymizeResult, encoded: bytes) -> bytes | None:
    """The sealed (and, with a site key, signed) vault for the output file ``encoded``,
    bound to that file's decoded face regions; None when the run kept no vault."""
    if result.vault_payload is None or result.keys is None:
        return None
    payload = result.vault_payload
    payload.binding = image_binding(decode_image(encoded, name="output"),
                                    [f.rect for f in payload.faces])
    return encode_payload(payload, compact=False, **result.keys.crypto_kwargs())


def _encode(result: AnonymizeResult, suffix: str, quality: int) -> tuple[bytes, bytes | None]:
    """(the output file's bytes, the sealed vault); the vault is attached to the bytes
    when the format has a slot for it."""
    from refacex.stego import vault

    data = encode_image(result.image, suffix, quality)
    blob = seal_vault(result, data)
    if blob is not None and vault.supports(suffix):
        data = vault.attach(data, blob)
    return data, blob


def encode_output(result: AnonymizeResult, suffix: str, quality: int = 95) -> bytes:
    """The output file's bytes; the vault goes inside when the format has a slot for it."""
    return _encode(result, suffix, quality)[0]


def save(result: AnonymizeResult, path: Path, quality: int = 95) -> list[Path]:
    """Write the output atomically (plus a ``.refacex`` sidecar if the format has no slot)."""
    from refacex.stego import vault

    written = [path]
    data, blob = _encode(result, path.suffix, quality)
    if blob is not None and not vault.supports(path.suffix):
        vault.write_sidecar(path, blob)
        written.append(vault.sidecar_path(path))
    write_bytes_atomic(path, data)
    return written
