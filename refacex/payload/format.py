"""The versioned binary recovery payload: how to undo an anonymisation.

Layout (byte-exact description in docs/payload-format.md)::

    envelope   "RFX" | version (major << 4 | minor) | tier      5 bytes, clear, authenticated
    sealed     crypto header | AEAD ciphertext                   see refacex.payload.crypto

The envelope is passed to the AEAD as associated data, and the crypto header is
authenticated by the AEAD too, so no clear byte can change unnoticed. The plaintext is a
sequence of tag-length-value records; readers skip tags they do not know, which is how the
format grows (new record types → minor version bump). Anything an old reader cannot safely
ignore needs a new major version, which old readers refuse with ``UnsupportedPayloadError``.

The payload is not self-delimiting (the ciphertext runs to the end of the blob): the
carrier (file trailer, PNG chunk, in-pixel code) stores its length.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from refacex.errors import (
    NoPayloadError,
    PayloadError,
    TamperedPayloadError,
    UnsupportedPayloadError,
)
from refacex.payload import crypto
from refacex.payload.sitekeys import SiteKey, SitePublic

MAGIC = b"RFX"
FORMAT_MAJOR = 1
# 1.1: compact AES-256-GCM-64 crypto modes (0x0f, 0xf0). 1.2: image binding and site
# signature records, the authenticated compact mode (0xc3), face count moved inside.
FORMAT_MINOR = 2
ENVELOPE_LEN = len(MAGIC) + 3  # magic, version, tier, reserved (face count before 1.2)

TIERS: dict[str, int] = {"vault": 1, "robust": 2}
_TIER_NAMES = {v: k for k, v in TIERS.items()}

# Top-level record tags (plaintext).
TAG_METHOD = 1
TAG_IMAGE_SIZE = 2
TAG_FACE = 3
TAG_EXTRA = 4
TAG_FACE_COMPACT = 5  # robust tier: no rect, no mask, data runs to the record's end
TAG_BINDING = 6  # digest of the anonymised image this payload belongs to (vault)
TAG_SIGNATURE = 7  # site id (8) + Ed25519 signature (64); always the last record

#: Signed message: this context, the envelope, then every plaintext byte before the
#: signature record.
SIGNATURE_CONTEXT = b"refacex payload signature v1\0"
#: Sanity bounds on decoded numbers (a forged or buggy payload must not make recovery
#: allocate or loop without limit).
MAX_IMAGE_SIDE = 1 << 17
MAX_FACES = 4096

# Face sub-record tags (after the fixed part of a FACE record).
FTAG_AFFINE_F64 = 1
FTAG_AFFINE_SIM_Q8 = 2
FTAG_AFFINE_F32 = 3
FTAG_MASK = 4

#: Codec names <-> the small ids stored in FACE records. Ids are never reused.
CODECS: dict[str, int] = {"png": 1, "webp-lossless": 2, "jpeg": 3, "pca-v1": 4,
                          "learned-v1": 5}

#: Largest inverse-map error (image pixels, over the crop square) accepted from the compact
#: similarity encoding before falling back to 6 x float32.
SIM_MAX_ERROR_PX = 0.25
_Q = 8.0  # compact similarity: 1/8 pixel steps

_EXTRA_BYTES, _EXTRA_STR, _EXTRA_INT, _EXTRA_FLOAT = 0, 1, 2, 3

ExtraValue = bytes | str | int | float


def register_codec(name: str, codec_id: int) -> None:
    """Add a codec id (for new face codecs, e.g. learned codes); ids must never be reused."""
    if codec_id < 0:
        raise ValueError("codec ids are non-negative")
    if name in CODECS:
        if CODECS[name] != codec_id:
            raise ValueError(f"codec {name!r} is already registered as {CODECS[name]}")
        return
    if codec_id in CODECS.values():
        raise ValueError(f"codec id {codec_id} is already taken")
    CODECS[name] = codec_id


@dataclass(eq=False)
class FaceRecord:
    """One anonymised face and what is needed to restore it.

    ``affine`` maps image coordinates to the ``crop_size`` x ``crop_size`` aligned crop;
    ``rect`` is (x, y, w, h) of the image region the anonymiser changed; ``data`` is the
    face content in ``codec`` (lossless pixels of ``rect`` in the vault tier, a compact code
    in the robust tier); ``mask`` optionally holds the blend mask (e.g. a PNG).
    """

    index: int
    affine: np.ndarray
    crop_size: int
    rect: tuple[int, int, int, int]
    codec: str
    data: bytes
    mask: bytes | None = None


@dataclass(eq=False)
class Payload:
    """Everything needed to undo one image's anonymisation.

    ``extra`` holds small named values (str/int/float/bytes) for things later releases need
    without a new record type; unknown names are carried through untouched.
    """

    tier: str
    image_size: tuple[int, int]
    faces: list[FaceRecord] = field(default_factory=list)
    method: str = ""
    extra: dict[str, ExtraValue] = field(default_factory=dict)
    #: Digest of the anonymised image's face regions (``refacex.payload.binding``).
    binding: bytes | None = None
    #: Who made it, as established by ``decode_payload``: "site:<id>" (a trusted site's
    #: signature or authenticated seal verified), "untrusted-site:<id>" (signed by a site
    #: not trusted), "passphrase" (the shared secret authenticates), "unsigned".
    provenance: str = ""
    #: (site id, signature, signed plaintext length) as read; internal to decoding.
    signature: tuple[bytes, bytes, int] | None = field(default=None, repr=False)


# ----------------------------------------------------------------------------- primitives


def put_uvarint(out: bytearray, n: int) -> None:
    """LEB128: 7 bits per byte, high bit = more. Values < 128 take one byte."""
    if n < 0:
        raise ValueError(f"uvarint must be non-negative, got {n}")
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def put_svarint(out: bytearray, n: int) -> None:
    """Zigzag then LEB128, so small negative numbers stay short."""
    put_uvarint(out, (n << 1) if n >= 0 else ((-n << 1) - 1))


def put_record(out: bytearray, tag: int, value: bytes) -> None:
    put_uvarint(out, tag)
    put_uvarint(out, len(value))
    out += value


class _Cursor:
    """Reader over authenticated plaintext: any overrun is a malformed (buggy) payload."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Malformed("record runs past its end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uvarint(self) -> int:
        n = shift = 0
        for _ in range(10):
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7
        raise _Malformed("varint too long")

    def svarint(self) -> int:
        z = self.uvarint()
        return (z >> 1) if not z & 1 else -((z + 1) >> 1)

    def record(self) -> tuple[int, bytes]:
        tag = self.uvarint()
        return tag, self.take(self.uvarint())


class _Malformed(Exception):
    """Internal: plaintext structure error (turned into PayloadError by decode_payload)."""


# --------------------------------------------------------------------------------- affine


def _check_affine(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.shape != (2, 3) or not np.all(np.isfinite(a)):
        raise ValueError("affine must be a finite 2x3 matrix")
    if abs(np.linalg.det(a[:, :2])) < 1e-12:
        raise ValueError("affine is singular")
    return a


def _invert_affine(a: np.ndarray) -> np.ndarray:
    lin_inv = np.linalg.inv(a[:, :2])
    return np.hstack([lin_inv, -lin_inv @ a[:, 2:3]])


def _crop_corners(crop_size: int) -> np.ndarray:
    s = float(crop_size)
    return np.array([[0, 0, 1], [s, 0, 1], [0, s, 1], [s, s, 1]], dtype=np.float64).T


def _sim_encode(a: np.ndarray, crop_size: int) -> tuple[int, int, int, int]:
    """Quantise as (crop centre in image px, image vector spanning the crop width) x 8.

    Storing the inverse map's geometry in image pixels bounds the image-space error by a
    fixed amount (at most ~0.15 px over the crop) whatever the image or face size.
    """
    inv = _invert_affine(a)
    s = float(crop_size)
    c = inv @ np.array([s / 2, s / 2, 1.0])
    u = inv[:, 0] * s
    return (round(c[0] * _Q), round(c[1] * _Q), round(u[0] * _Q), round(u[1] * _Q))


def _sim_decode(q: Sequence[int], crop_size: int) -> np.ndarray:
    cx, cy, ux, uy = (v / _Q for v in q)
    s = float(crop_size)
    lin_inv = np.array([[ux, -uy], [uy, ux]]) / s
    if abs(np.linalg.det(lin_inv)) < 1e-18:
        raise _Malformed("degenerate compact similarity")
    lin = np.linalg.inv(lin_inv)
    t = np.array([s / 2, s / 2]) - lin @ np.array([cx, cy])
    return np.hstack([lin, t[:, None]])


def affine_error_px(a: np.ndarray, b: np.ndarray, crop_size: int) -> float:
    """Largest distance (image px) between where ``a`` and ``b`` put the crop's corners."""
    corners = _crop_corners(crop_size)
    return float(
        np.max(np.linalg.norm(_invert_affine(a) @ corners - _invert_affine(b) @ corners, axis=0))
    )


def _encode_affine(a: np.ndarray, crop_size: int, compact: bool) -> tuple[int, bytes]:
    if not compact:
        return FTAG_AFFINE_F64, struct.pack("<6d", *a.ravel())
    q = _sim_encode(a, crop_size)
    try:
        err = affine_error_px(a, _sim_decode(q, crop_size), crop_size)
    except (_Malformed, np.linalg.LinAlgError):
        err = math.inf
    if err <= SIM_MAX_ERROR_PX:
        buf = bytearray()
        for v in q:
            put_svarint(buf, v)
        return FTAG_AFFINE_SIM_Q8, bytes(buf)
    # Not a similarity (shear, reflection, anisotropic scale): 6 x float32 is still < 0.01 px.
    return FTAG_AFFINE_F32, struct.pack("<6f", *a.ravel())


def _decode_affine(tag: int, value: bytes, crop_size: int) -> np.ndarray:
    if tag in (FTAG_AFFINE_F64, FTAG_AFFINE_F32):
        fmt = "<6d" if tag == FTAG_AFFINE_F64 else "<6f"
        if len(value) != struct.calcsize(fmt):
            raise _Malformed("affine record has the wrong length")
        a = np.array(struct.unpack(fmt, value), dtype=np.float64).reshape(2, 3)
        with np.errstate(all="ignore"):
            det = np.linalg.det(a[:, :2]) if np.all(np.isfinite(a)) else 0.0
        if not np.isfinite(det) or abs(det) < 1e-12:
            raise _Malformed("affine is not finite or singular")
        return a
    cur = _Cursor(value)
    q = [cur.svarint() for _ in range(4)]
    if not cur.done():
        raise _Malformed("affine record has trailing bytes")
    return _sim_decode(q, crop_size)


# ---------------------------------------------------------------------------- plaintext


def _encode_face(face: FaceRecord, compact: bool) -> bytes:
    if face.codec not in CODECS:
        raise ValueError(f"unknown codec {face.codec!r}; register it in CODECS first")
    if face.crop_size <= 0:
        raise ValueError("crop_size must be positive")
    x, y, w, h = (int(v) for v in face.rect)
    if min(x, y, w, h) < 0:
        raise ValueError(f"rect {face.rect} must be non-negative (clip it to the image)")
    affine = _check_affine(face.affine)
    buf = bytearray()
    for v in (int(face.index), int(face.crop_size), x, y, w, h, CODECS[face.codec]):
        put_uvarint(buf, v)
    put_uvarint(buf, len(face.data))
    buf += face.data
    put_record(buf, *_encode_affine(affine, int(face.crop_size), compact))
    if face.mask is not None:
        put_record(buf, FTAG_MASK, bytes(face.mask))
    return bytes(buf)


def _encode_face_compact(face: FaceRecord) -> bytes | None:
    """7 bytes smaller than ``_encode_face`` for what the robust tier stores (no rect, no
    mask, similarity geometry): every byte here is a byte of face code lost."""
    if tuple(int(v) for v in face.rect) != (0, 0, 0, 0) or face.mask is not None:
        return None
    tag, geom = _encode_affine(_check_affine(face.affine), int(face.crop_size), True)
    if tag != FTAG_AFFINE_SIM_Q8:
        return None
    buf = bytearray()
    for v in (int(face.index), int(face.crop_size), CODECS[face.codec]):
        put_uvarint(buf, v)
    return bytes(buf) + geom + bytes(face.data)


def _decode_face_compact(value: bytes) -> FaceRecord:
    cur = _Cursor(value)
    index, crop_size, codec_id = (cur.uvarint() for _ in range(3))
    q = [cur.svarint() for _ in range(4)]
    if crop_size <= 0:
        raise _Malformed("face crop size is zero")
    names = {v: k for k, v in CODECS.items()}
    return FaceRecord(index=index, affine=_sim_decode(q, crop_size), crop_size=crop_size,
                      rect=(0, 0, 0, 0), codec=names.get(codec_id, f"unknown-{codec_id}"),
                      data=value[cur.pos:])


def _decode_face(value: bytes) -> FaceRecord:
    cur = _Cursor(value)
    index, crop_size, x, y, w, h, codec_id = (cur.uvarint() for _ in range(7))
    data = cur.take(cur.uvarint())
    affine_rec: tuple[int, bytes] | None = None
    mask: bytes | None = None
    while not cur.done():
        tag, val = cur.record()
        if tag in (FTAG_AFFINE_F64, FTAG_AFFINE_SIM_Q8, FTAG_AFFINE_F32):
            if affine_rec is not None:
                raise _Malformed("face has two affine records")
            affine_rec = (tag, val)
        elif tag == FTAG_MASK:
            mask = val
        # any other tag: a newer minor version's field; skip it
    if affine_rec is None:
        raise _Malformed("face has no affine record")
    if crop_size <= 0:
        raise _Malformed("face crop size is zero")
    names = {v: k for k, v in CODECS.items()}
    return FaceRecord(
        index=index,
        affine=_decode_affine(*affine_rec, crop_size),
        crop_size=crop_size,
        rect=(x, y, w, h),
        codec=names.get(codec_id, f"unknown-{codec_id}"),
        data=data,
        mask=mask,
    )


def _encode_extra(name: str, value: ExtraValue) -> bytes:
    buf = bytearray()
    key = name.encode("utf-8")
    put_uvarint(buf, len(key))
    buf += key
    if isinstance(value, bool) or not isinstance(value, bytes | bytearray | str | int | float):
        raise ValueError(f"extra {name!r}: unsupported value type {type(value).__name__}")
    if isinstance(value, bytes | bytearray):
        buf.append(_EXTRA_BYTES)
        buf += value
    elif isinstance(value, str):
        buf.append(_EXTRA_STR)
        buf += value.encode("utf-8")
    elif isinstance(value, int):
        buf.append(_EXTRA_INT)
        put_svarint(buf, value)
    else:
        buf.append(_EXTRA_FLOAT)
        buf += struct.pack("<d", value)
    return bytes(buf)


def _decode_extra(value: bytes) -> tuple[str, ExtraValue] | None:
    cur = _Cursor(value)
    name = cur.take(cur.uvarint()).decode("utf-8")
    kind = cur.take(1)[0]
    rest = cur.take(len(value) - cur.pos)
    if kind == _EXTRA_BYTES:
        return name, rest
    if kind == _EXTRA_STR:
        return name, rest.decode("utf-8")
    if kind == _EXTRA_INT:
        c = _Cursor(rest)
        return name, c.svarint()
    if kind == _EXTRA_FLOAT:
        if len(rest) != 8:
            raise _Malformed("float extra has the wrong length")
        return name, struct.unpack("<d", rest)[0]
    return None  # value kind from a newer writer: skip this extra


def encode_plaintext(payload: Payload, *, compact: bool) -> bytes:
    """The TLV plaintext, unsigned (``encode_payload`` appends the signature record);
    exposed for tests and for capacity planning."""
    w, h = (int(v) for v in payload.image_size)
    if w <= 0 or h <= 0:
        raise ValueError(f"image_size {payload.image_size} must be positive")
    out = bytearray()
    if payload.method:
        put_record(out, TAG_METHOD, payload.method.encode("utf-8"))
    size = bytearray()
    put_uvarint(size, w)
    put_uvarint(size, h)
    put_record(out, TAG_IMAGE_SIZE, bytes(size))
    for face in payload.faces:
        small = _encode_face_compact(face) if compact else None
        if small is not None:
            put_record(out, TAG_FACE_COMPACT, small)
        else:
            put_record(out, TAG_FACE, _encode_face(face, compact))
    for name, value in payload.extra.items():
        put_record(out, TAG_EXTRA, _encode_extra(name, value))
    if payload.binding is not None:
        put_record(out, TAG_BINDING, bytes(payload.binding))
    return bytes(out)


def decode_plaintext(plaintext: bytes, tier: str) -> Payload:
    """Parse TLV plaintext; unknown tags are skipped (that is what makes minor bumps safe)."""
    try:
        cur = _Cursor(plaintext)
        method = ""
        image_size: tuple[int, int] | None = None
        faces: list[FaceRecord] = []
        extra: dict[str, ExtraValue] = {}
        binding: bytes | None = None
        signature: tuple[bytes, bytes, int] | None = None
        while not cur.done():
            start = cur.pos
            tag, value = cur.record()
            if signature is not None:
                raise _Malformed("record after the signature")
            if tag == TAG_SIGNATURE:
                if len(value) != 8 + 64:
                    raise _Malformed("signature record has the wrong length")
                signature = (value[:8], value[8:], start)
            elif tag == TAG_BINDING:
                binding = value
            elif tag == TAG_METHOD:
                method = value.decode("utf-8")
            elif tag == TAG_IMAGE_SIZE:
                c = _Cursor(value)
                image_size = (c.uvarint(), c.uvarint())
            elif tag in (TAG_FACE, TAG_FACE_COMPACT):
                if len(faces) >= MAX_FACES:
                    raise _Malformed(f"more than {MAX_FACES} faces")
                faces.append(_decode_face(value) if tag == TAG_FACE
                             else _decode_face_compact(value))
            elif tag == TAG_EXTRA:
                item = _decode_extra(value)
                if item is not None:
                    extra[item[0]] = item[1]
        if image_size is None:
            raise _Malformed("no image size record")
        if not (0 < image_size[0] <= MAX_IMAGE_SIDE and 0 < image_size[1] <= MAX_IMAGE_SIDE):
            raise _Malformed(f"image size {image_size} out of range")
    except (_Malformed, UnicodeDecodeError, np.linalg.LinAlgError) as exc:
        # The AEAD verified these bytes, so this is a writer bug, not tampering.
        raise PayloadError(
            f"payload content is malformed ({exc}); it was written by a faulty encoder"
        ) from None
    return Payload(tier=tier, image_size=image_size, faces=faces, method=method, extra=extra,
                   binding=binding, signature=signature)


# ------------------------------------------------------------------------------ envelope


@dataclass(frozen=True)
class _Envelope:
    major: int
    minor: int
    tier: str | None  # None: unknown tier id from a newer minor version
    tier_id: int


def _parse_envelope(blob: bytes) -> _Envelope:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise TypeError("payload must be bytes")
    blob = bytes(blob)
    head = blob[: len(MAGIC)]
    if not head or head != MAGIC[: len(head)]:
        raise NoPayloadError("no refacex payload here (magic bytes missing)")
    if len(blob) < ENVELOPE_LEN:
        raise TamperedPayloadError("refacex payload is truncated")
    version, tier_id = blob[len(MAGIC)], blob[len(MAGIC) + 1]
    major, minor = version >> 4, version & 0x0F
    if major == 0:
        raise TamperedPayloadError("refacex payload header is corrupt (version 0)")
    if major > FORMAT_MAJOR:
        raise UnsupportedPayloadError(
            f"payload format {major}.{minor} is newer than this refacex reads "
            f"({FORMAT_MAJOR}.x); upgrade refacex"
        )
    tier = _TIER_NAMES.get(tier_id)
    if tier is None and minor <= FORMAT_MINOR:
        raise TamperedPayloadError(f"refacex payload header is corrupt (unknown tier {tier_id})")
    return _Envelope(major, minor, tier, tier_id)


def _unknown_mode(env: _Envelope, exc: crypto.UnknownModeError) -> PayloadError:
    """An unknown crypto mode is a newer writer only if the minor version is newer."""
    if env.minor > FORMAT_MINOR:
        return UnsupportedPayloadError(
            f"{exc}; written by a newer refacex ({env.major}.{env.minor})"
        )
    return TamperedPayloadError("refacex payload header is corrupt (unknown encryption mode)")


def encode_payload(
    payload: Payload,
    *,
    recipients: Sequence[X25519PublicKey] = (),
    passphrase: bytes | None = None,
    compact: bool | None = None,
    site: SiteKey | None = None,
) -> bytes:
    """Serialise and seal ``payload`` for ``recipients`` or a ``passphrase`` (exactly one).

    ``compact`` (default: True for the robust tier) selects the compact crypto modes (first
    recipient only) and the quantised similarity for the affine. ``site`` says who made
    it: full modes get an Ed25519 signature record *inside* the ciphertext (so the site is
    not visible to the public); the compact public-key mode is sealed in the
    authenticated mode instead (no room for 64 bytes). Compact passphrase payloads carry
    no site proof: the passphrase itself authenticates.
    """
    if payload.tier not in TIERS:
        raise ValueError(f"tier must be one of {sorted(TIERS)}, got {payload.tier!r}")
    if compact is None:
        compact = payload.tier == "robust"
    # The fourth byte held the face count before 1.2; it is 0 now and the count is only
    # inside the ciphertext (docs/security.md: what is public).
    envelope = MAGIC + bytes([(FORMAT_MAJOR << 4) | FORMAT_MINOR, TIERS[payload.tier], 0])
    plaintext = encode_plaintext(payload, compact=compact)
    sender = None
    if site is not None and compact and recipients:
        sender = site.agreement_key
    elif site is not None and not compact:
        sig = site.sign(SIGNATURE_CONTEXT + envelope + plaintext)
        rec = bytearray()
        put_record(rec, TAG_SIGNATURE, site.public.site_id + sig)
        plaintext += bytes(rec)
    sealed = crypto.seal(plaintext, recipients=recipients, passphrase=passphrase, aad=envelope,
                         compact=compact, sender=sender)
    return envelope + sealed


def decode_payload(
    blob: bytes,
    *,
    private_key: X25519PrivateKey | None = None,
    passphrase: bytes | None = None,
    trusted: Sequence[SitePublic] = (),
) -> Payload:
    """Verify, decrypt and parse a payload from ``encode_payload``.

    ``trusted``: site public keys whose signatures (and authenticated seals) are checked;
    the result's ``provenance`` says what was established. Deciding whether to *use* an
    unsigned payload is the caller's policy (``refacex.recover``); a signature by a trusted
    site that does not verify is ``TamperedPayloadError`` here.

    Raises ``NoPayloadError`` (not a payload), ``UnsupportedPayloadError`` (newer major
    version), ``WrongKeyError``, ``UntrustedPayloadError`` (an authenticated seal no
    trusted site made), ``TamperedPayloadError`` or ``PayloadError``.
    """
    env = _parse_envelope(blob)
    blob = bytes(blob)
    envelope = blob[:ENVELOPE_LEN]
    trusted = list(trusted)
    try:
        plaintext, sender = crypto.open_sealed_from(
            blob[ENVELOPE_LEN:],
            private_key=private_key,
            passphrase=passphrase,
            aad=envelope,
            senders=[t.x25519_key for t in trusted],
        )
    except crypto.UnknownModeError as exc:
        raise _unknown_mode(env, exc) from None
    if env.tier is None:  # authenticated, but a tier this release does not know
        raise UnsupportedPayloadError(f"payload tier {env.tier_id} is newer than this refacex")
    payload = decode_plaintext(plaintext, env.tier)
    if sender is not None:
        payload.provenance = f"site:{trusted[sender].site_id.hex()}"
    elif payload.signature is not None:
        payload.provenance = _check_signature(payload.signature, envelope, plaintext, trusted)
    else:
        payload.provenance = "passphrase" if passphrase is not None else "unsigned"
    return payload


def _check_signature(signature: tuple[bytes, bytes, int], envelope: bytes, plaintext: bytes,
                     trusted: Sequence[SitePublic]) -> str:
    site_id, sig, signed_len = signature
    for site in trusted:
        if site.site_id == site_id:
            if site.verify(sig, SIGNATURE_CONTEXT + envelope + plaintext[:signed_len]):
                return f"site:{site_id.hex()}"
            raise TamperedPayloadError(
                f"payload signature by trusted site {site_id.hex()} does not verify: forged "
                "or altered")
    return f"untrusted-site:{site_id.hex()}"


def inspect_payload(blob: bytes) -> dict[str, Any]:
    """What anyone can read without a key: never face data (the face count is visible).

    Returns format version, tier, encryption mode, recipient count and key ids (or KDF
    cost), and sizes. A newer major version is reported (``supported: False``) rather than
    raised, since inspecting is how a user finds out which release they need.
    """
    try:
        env = _parse_envelope(blob)
    except UnsupportedPayloadError:
        v = bytes(blob)[len(MAGIC)]
        return {"format": "refacex", "version": f"{v >> 4}.{v & 15}", "supported": False}
    try:
        info = crypto.describe(bytes(blob)[ENVELOPE_LEN:])
    except crypto.UnknownModeError as exc:
        raise _unknown_mode(env, exc) from None
    out = {
        "format": "refacex",
        "version": f"{env.major}.{env.minor}",
        "supported": True,
        "tier": env.tier or f"unknown-{env.tier_id}",
        **info,
        "total_bytes": len(blob),
    }
    if (env.major, env.minor) < (1, 2):  # older writers put the face count in the clear
        out["faces"] = bytes(blob)[len(MAGIC) + 2]
    return out
