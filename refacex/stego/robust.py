"""A robust, invisible in-pixel channel that survives JPEG, resizing, crops and gain changes.

Design (and why):

* **Where the bits live.** Only the luminance is touched (the same offset is added to B, G
  and R, so chroma is unchanged). The image is resampled (Gaussian anti-alias + Lanczos) to
  a *canonical* resolution of about half the original size, taken from a fixed ladder of
  side lengths, because what survives a 0.5x downscale followed by JPEG lives at low
  frequencies of that resolution. Bits are embedded by quantisation-index modulation (QIM)
  on 9 low-frequency 8x8 DCT coefficients of the canonical image: QIM does not suffer from
  interference by the picture itself (unlike additive spread spectrum), which is what makes
  tens of bytes fit in a 250x250 photo.
* **Full resolution stays sharp.** The change is computed at canonical resolution,
  upsampled and *added* to the original. The embedder runs a closed loop (resample the
  marked uint8 image again, correct towards fixed targets), so rounding, clipping and the
  up/down-sampling mismatch do not leave coefficients off their lattice.
* **Invisible: the mark follows the texture** (``masking.py``). Flat pixels (walls, sky,
  white backgrounds, smooth shirts) are not changed at all, blocks without texture of
  their own carry nothing, the change of a carrying block goes onto its textured pixels,
  and the decoder erases blocks that look unmarked (blind: from the received image
  alone). PSNR >= 42 dB and, on flat areas, no more texture than a JPEG 90 re-encode
  (``visibility.py``); what a photo carries invisibly is :func:`image_capacity`.
* **Resynchronisation, four routes, cheapest first.**
  0. *As-is* (neither resized nor cropped: re-encoded, metadata stripped, brightness,
     noise): the embedder's own canonical grids for the received size, both layouts;
     tens of ms.
  1. *Pilot route* (crops + any scale; needs roughly 0.5 MP or more): a faint,
     key-independent pilot ``A cos(2 pi x/8) cos(2 pi y/8)`` (period = DCT block) is added
     at canonical resolution, and the picture's own content in a narrow band around it is
     removed ("channel clearing"). Its spectral peaks give the scale of a resized/cropped
     copy (coarse FFT peak, then a phase-drift refinement to ~0.02 %); its phase gives the
     sub-pixel block-grid position (half-period ambiguity resolved by trying both). The
     whole-block offset of a crop is found by correlating known *sync* bits, which sit at
     positions hashed from *absolute* block coordinates.
  2. *Ladder route* (resized but not cropped; any size): the decoder tries the ladder's
     canonical sizes directly (plus +-0.5 px for the rounding of resized sizes), scoring
     each by sync correlation. This rescues small photos whose pilot is too faint.
  3. *Crop route* (cropped but not resized; up to 0.8 MP; either layout): a crop keeps
     the original's pixel grid, so the scale is one of a known list (the original's own
     canonical/original ratio, for an original up to 12 % larger), and at that scale the
     grid phase is one a whole-pixel crop can leave. At a known scale the faint pilot's
     *phase* is still readable even where its spectral peak is not; a sub-pixel search
     around it on a central window, then the whole image's payload-independent QIM
     lattice fit, rank coarse scales; every exact scale near the best is then tried with
     the phase snapped to a whole-pixel crop. Tried last: a cropped copy takes 3-5 s to
     decode in all at 250x250-640x480 (``benchmarks/bench_robust.py``).
* **Brightness/contrast.** A global gain scales every AC coefficient; it is estimated blind
  by maximising the fit of the coefficients to the (payload-independent) half-step QIM
  lattice. Additive brightness does not touch AC coefficients. Blocks with clipped pixels
  are erased (soft value 0) in extra hypotheses.
* **Coding.** Coded bits are spread over the coefficients by a multiplicative permutation
  of the raster index (equal repetition for every bit; soft values are summed), then a K=7
  rate-1/2 convolutional code with soft Viterbi decoding and a CRC-32 over the frame (which
  also covers the header fields). The frame size is the smallest rung of a ladder of levels
  that fits the data, so short payloads get more repetition, i.e. more robustness; level and
  grid width are announced in a repeated 16-bit header.

``capacity_bytes`` is proportional to area: it keeps 1.5 (small photos) to 2.5 (large
photos) coefficients per coded bit of the *carrying* blocks (:func:`image_capacity`
counts only those; ``capacity_bytes`` is the bound when every block carries). Shorter
payloads are markedly more robust. A *dense* layout (canonical side 0.6 instead of 0.5
of the original: ~45 % more bytes) is there for small photos that would otherwise carry
no face code; it gives up surviving downscaling combined with JPEG. The *fine* layout
(the photo's own resolution, ~3.6x the bytes) goes further for photos of ~200-280 px: it
survives JPEG 75 but not JPEG 50 nor downscaling. The decoder needs no flag: the as-is,
ladder and crop routes find every layout.

Known limits: crops combined with resizing are not survived below ~1 MP; on 250x250
photos crop plus JPEG needs a payload below capacity (~80 %); JPEG quality 30 and
combined downscale+JPEG succeed only with payloads well below capacity; a photo whose
bright areas clip under +20 % brightness keeps less margin (those areas are often the
flat ones that carry nothing); rotation is not handled.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from refacex.errors import NoPayloadError
from refacex.stego import masking
from refacex.stego.ecc import coded_length, conv_encode, viterbi_decode

__all__ = ["LAYOUTS", "Located", "capacity_bytes", "embed", "extract", "image_capacity",
           "locate"]

BLOCK = 8
#: Low-frequency DCT coefficients (row freq, column freq) carrying bits. (2, 2) is left out
#: because the pilot's energy sits there.
COEFS: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1), (0, 3), (3, 0),
)  # fmt: skip
#: QIM step on orthonormal DCT coefficients of the canonical image (grey levels).
DELTA = 16.0
#: Pilot amplitude (grey levels at canonical resolution).
PILOT_AMP = 1.3
PILOT_PERIOD = BLOCK
#: Width (canonical px) of the Gaussian that defines the host band cleared around the pilot.
CLEAR_SIGMA = 128.0
#: Share of the host's pilot-band content the embedder removes ("channel clearing"):
#: all of it cost ~0.8 of the MSE on small textured photos (~0.7 dB of PSNR); 60 % keeps
#: the pilot's phase readable for the pilot and crop routes (none of it did not).
CLEAR_FRACTION = 0.6
#: Fractions of coefficient positions used for sync bits and for the level header.
F_SYNC = 0.10
F_HDR = 0.05
N_HDR = 16
#: Coefficients per coded bit for the advertised capacity: 1.5 for small photos (whose
#: "resized, not cropped" decoding route is very accurate), rising smoothly to 2.5 for
#: large ones, whose crop-tolerant pilot route has a higher raw bit-error rate.
MIN_REPEAT = 1.5
MAX_REPEAT = 2.5
REPEAT_BLOCKS = 3600.0
#: Frame ladder (max data bytes per level); a frame adds 2 length bytes and a CRC-32.
LEVELS: tuple[int, ...] = tuple(int(round(8 * 1.2**k)) for k in range(36))
FRAME_OVERHEAD = 6
CANON_FRACTION = 0.5  # canonical side / original side
#: The denser layout's canonical fraction. A 250x250 photo then carries 86 bytes instead
#: of 59 (room for a face code even in public-key mode), still surviving JPEG 50, 0.5x-2x
#: resizing, +-20 % brightness/contrast and border crops, but not downscaling combined
#: with JPEG; the ladder route decodes it unchanged (its sizes span 0.18-1.3x the
#: received image), the crop route tries its scales too.
DENSE_FRACTION = 0.6
#: The *fine* layout: the canonical image is the photo itself (~3.6x the normal layout's
#: bytes), for photos under ~280 px whose flat areas leave too little room for even the
#: shortest face code on the other layouts. It survives JPEG 75, upscaling, border crops
#: and brightness/contrast, not JPEG 50 nor downscaling (its carriers are the photo's
#: own 8x8 frequencies, which those remove). The decoder tries it as-is, on the ladder
#: and, for received images up to ``FINE_CROP_PIXELS``, on the crop route.
FINE_FRACTION = 1.0
#: Canonical fraction of each layout, most robust first (the order the pipeline tries).
LAYOUTS: dict[str, float] = {"normal": CANON_FRACTION, "dense": DENSE_FRACTION,
                             "fine": FINE_FRACTION}
#: The fine layout's carriers sit at the photo's own 8x8 frequencies, where JPEG 75
#: quantises hardest: it keeps 1.5x the repetition (measured: a 160 px photo filled at
#: the others' rate lost its payload to JPEG 75).
FINE_REPEAT = 1.5
#: Least repetition for a masked payload (``image_capacity``; ``MIN_REPEAT`` otherwise): a
#: masked mark is weaker per block (capped moves, partial strengths, an erased neighbour
#: here and there), which small photos, filled at the least repetition, cannot afford
#: (measured: a 250 px photo at 1.5 lost border crops and JPEG 50 on the dense layout).
MASKED_MIN_REPEAT = 1.75
CANON_MAX = 1200  # longest canonical side (keeps extraction time bounded for huge photos)
EMBED_ITERS = 6
#: Anti-alias Gaussian (canonical pixels) applied before every resampling to canonical.
AA_SIGMA = 0.5


# ----------------------------------------------------------------------------- helpers


def _luma(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32)
    return 0.114 * f[..., 0] + 0.587 * f[..., 1] + 0.299 * f[..., 2]


#: Canonical side lengths. A fixed ladder (about 4 % steps) rather than "exactly half the
#: original": when an image is resized but not cropped, the decoder can then try the few
#: ladder sizes directly, which works even where the pilot is too faint (small photos).
SIDE_LADDER: tuple[int, ...] = tuple(sorted({int(round(16 * 1.04**k)) for k in range(110)}))


def _ladder_side(n: float) -> int:
    """Largest ladder side <= n (the smallest rung if n is below it)."""
    best = SIDE_LADDER[0]
    for v in SIDE_LADDER:
        if v <= n:
            best = v
    return best


Layout = bool | str  # a layout name (``LAYOUTS``); False/True: "normal"/"dense"


def _layout_name(layout: Layout) -> str:
    name = ("dense" if layout else "normal") if isinstance(layout, bool) else layout
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {list(LAYOUTS)}")
    return name


def _canonical_shape(h: int, w: int, dense: Layout = False) -> tuple[int, int]:
    s = min(LAYOUTS[_layout_name(dense)], CANON_MAX / max(h, w))
    return _ladder_side(h * s), _ladder_side(w * s)


def _dct_matrix(n: int = BLOCK) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float64)


_D = _dct_matrix()
_CU = np.array([c[0] for c in COEFS])
_CV = np.array([c[1] for c in COEFS])
# Basis images of the chosen coefficients, (m, 8, 8).
_BASIS = np.einsum("ci,cj->cij", _D[_CU], _D[_CV])
#: The same as a (64, m) matrix: block pixels in raster order -> coefficients.
_BASIS_MAT = np.ascontiguousarray(_BASIS.reshape(len(COEFS), BLOCK * BLOCK).T)


def _block_coefs(a: np.ndarray, nby: int, nbx: int) -> np.ndarray:
    """Chosen DCT coefficients of each 8x8 block: shape (nby, nbx, m).

    One matrix product (BLAS) rather than an einsum: the crop route calls this ~10^4
    times per image."""
    blocks = a[: nby * BLOCK, : nbx * BLOCK].reshape(nby, BLOCK, nbx, BLOCK).swapaxes(1, 2)
    return blocks.reshape(nby, nbx, BLOCK * BLOCK).astype(np.float64) @ _BASIS_MAT


def _coefs_tex(a: np.ndarray, nby: int, nbx: int) -> tuple[np.ndarray, np.ndarray]:
    """``_block_coefs`` and each block's own texture: the RMS of its AC DCT coefficients
    other than the carriers (what ``masking`` gates the mark on, and what tells the
    decoder a block was left unmarked), from the same reshaped blocks."""
    blocks = a[: nby * BLOCK, : nbx * BLOCK].reshape(nby, BLOCK, nbx, BLOCK).swapaxes(1, 2)
    blocks = blocks.reshape(nby, nbx, BLOCK * BLOCK).astype(np.float64)
    v = blocks @ _BASIS_MAT
    ac = blocks.var(axis=2) * (BLOCK * BLOCK)
    rest = np.maximum(ac - (v * v).sum(axis=2), 0.0)
    return v, np.sqrt(rest / (BLOCK * BLOCK - 1 - len(COEFS)))


def _blocks_from_coefs(delta: np.ndarray) -> np.ndarray:
    """Pixel-domain image (nby*8, nbx*8) of coefficient changes ``delta`` (nby, nbx, m)."""
    nby, nbx, _ = delta.shape
    pix = np.einsum("yxc,cij->yixj", delta, _BASIS)
    return pix.reshape(nby * BLOCK, nbx * BLOCK)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (vectorised): a fixed, key-independent hash."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


@dataclass
class _Layout:
    """Role of every coefficient position, from a hash of its absolute block coordinates."""

    role: np.ndarray  # 0 data, 1 sync, 2 header
    sync_sign: np.ndarray  # +1/-1 expected soft sign at sync positions, 0 elsewhere
    hdr_index: np.ndarray  # header bit index at header positions


def _layout(by0: int, bx0: int, nby: int, nbx: int) -> _Layout:
    m = len(COEFS)
    by = np.arange(by0, by0 + nby, dtype=np.uint64)[:, None, None]
    bx = np.arange(bx0, bx0 + nbx, dtype=np.uint64)[None, :, None]
    c = np.arange(m, dtype=np.uint64)[None, None, :]
    h = _mix((by << np.uint64(40)) | (bx << np.uint64(20)) | (c << np.uint64(4)) | np.uint64(5))
    u = (h >> np.uint64(11)).astype(np.float64) / 2.0**53
    role = np.where(u < F_SYNC, 1, np.where(u < F_SYNC + F_HDR, 2, 0)).astype(np.int8)
    sbit = ((h >> np.uint64(5)) & np.uint64(1)).astype(np.float64)
    sync_sign = np.where(role == 1, 1.0 - 2.0 * sbit, 0.0)
    hdr_index = ((h >> np.uint64(7)) % np.uint64(N_HDR)).astype(np.int64)
    return _Layout(role, sync_sign, hdr_index)


def _header_bits(level_index: int, nbx: int) -> np.ndarray:
    """16 header bits: ladder level (6 bits) and the original grid width in blocks (10)."""
    v = (level_index & 0x3F) | ((nbx & 0x3FF) << 6)
    return np.array([(v >> i) & 1 for i in range(N_HDR)], dtype=np.uint8)


def _data_index(by0: int, bx0: int, nby: int, nbx: int, nbx_orig: int, n: int) -> np.ndarray:
    """Coded-bit index of each position: a multiplicative permutation of the raster index.

    Raster order over the original grid (width ``nbx_orig`` blocks) makes every coded bit
    appear equally often (random hashing would leave e^-r of them with no copy at all at
    an average repetition r); multiplying by a large odd constant coprime with ``n``
    scatters consecutive coded bits over the whole image, so a crop or a damaged region
    erases bits spread along the code, which the Viterbi decoder handles well.
    """
    m = len(COEFS)
    by = np.arange(by0, by0 + nby, dtype=np.int64)[:, None, None]
    bx = np.arange(bx0, bx0 + nbx, dtype=np.int64)[None, :, None]
    c = np.arange(m, dtype=np.int64)[None, None, :]
    raster = (by * nbx_orig + bx) * m + c
    a = 40503
    while np.gcd(a, n) != 1:
        a += 2
    return (raster % n * a + 7919) % n


def _n_coded(level_bytes: int) -> int:
    return coded_length(8 * (level_bytes + FRAME_OVERHEAD))


def _n_blocks(h: int, w: int, dense: Layout = False) -> tuple[int, int]:
    hc, wc = _canonical_shape(h, w, dense)
    return hc // BLOCK, wc // BLOCK


def _data_positions(h: int, w: int, dense: Layout = False) -> float:
    nby, nbx = _n_blocks(h, w, dense)
    return nby * nbx * len(COEFS) * (1.0 - F_SYNC - F_HDR)


def _repeat(nby: int, nbx: int, layout: Layout = False, least: float = MIN_REPEAT) -> float:
    r = MIN_REPEAT + (MAX_REPEAT - MIN_REPEAT) * min(1.0, nby * nbx / REPEAT_BLOCKS)
    return max(r, least) * (FINE_REPEAT if _layout_name(layout) == "fine" else 1.0)


def _capacity(carrying: float, nby: int, nbx: int, layout: Layout = False,
              least: float = MIN_REPEAT) -> int:
    """Largest ladder level whose coded frame gets ``_repeat`` coefficients per coded bit
    (at least ``least``) from ``carrying`` blocks' data positions (0 if none fits)."""
    avail = carrying * len(COEFS) * (1.0 - F_SYNC - F_HDR)
    repeat = _repeat(nby, nbx, layout, least)
    best = 0
    for lv in LEVELS:
        if _n_coded(lv) * repeat <= avail:
            best = lv
    return best


def capacity_bytes(height: int, width: int, dense: Layout = False) -> int:
    """Payload bytes an image of this size carries at most (after ECC and framing).

    Grows with area: the largest ladder level whose coded frame still gets at least
    ``MIN_REPEAT`` coefficients per coded bit when *every* block carries. ``dense``: a
    layout name (``LAYOUTS``) or True for "dense" (see ``DENSE_FRACTION``,
    ``FINE_FRACTION``), for small photos that otherwise carry nothing useful. What a
    given photo carries *invisibly* is :func:`image_capacity` (flat areas carry nothing);
    ``embed`` accepts up to this bound (beyond the invisible capacity with the uniform,
    visible mark of before the masking).
    """
    nby, nbx = _n_blocks(height, width, dense)
    return _capacity(nby * nbx, nby, nbx, dense)


def _frame_bits(data: bytes, level: int, nbx: int) -> np.ndarray:
    body = len(data).to_bytes(2, "big") + data + bytes(level - len(data))
    crc = zlib.crc32(_crc_prefix(LEVELS.index(level), nbx) + body).to_bytes(4, "big")
    frame = np.frombuffer(body + crc, dtype=np.uint8)
    return np.unpackbits(frame)


def _crc_prefix(level_index: int, nbx: int) -> bytes:
    """Header fields covered by the CRC, so a wrong level or grid width never decodes."""
    return bytes([level_index]) + nbx.to_bytes(2, "big")


def _pilot(hc: int, wc: int) -> np.ndarray:
    y = np.arange(hc, dtype=np.float32)[:, None]
    x = np.arange(wc, dtype=np.float32)[None, :]
    t = 2 * np.pi / PILOT_PERIOD
    return (PILOT_AMP * np.cos(t * y) * np.cos(t * x)).astype(np.float32)


def _pilot_band(c: np.ndarray) -> np.ndarray:
    """The host's own content in narrow bands around the pilot's four frequencies.

    The embedder subtracts it ("clears the channel") so that the decoder's scale and phase
    estimates are not biased by the picture itself: without this, a 250x250 photo's own
    texture at the pilot frequency outweighs a pilot faint enough to keep PSNR >= 40 dB.
    The cost is tiny, because little picture energy falls into such narrow bands.
    """
    hc, wc = c.shape
    sigma = CLEAR_SIGMA
    out = np.zeros((hc, wc), np.float32)
    # The demodulated signal is smooth (sigma >= 16 px), so filter it at 1/4 resolution.
    q = 4
    small = (max(1, wc // q), max(1, hc // q))
    for demod in _carriers(hc, wc):  # exp(-i t (x + y)), exp(-i t (x - y))
        carrier = np.conj(demod)
        z = c * demod
        out_z = []
        for part in (z.real, z.imag):
            lo = cv2.resize(part.astype(np.float32), small, interpolation=cv2.INTER_AREA)
            lo = cv2.GaussianBlur(lo, (0, 0), sigma / q)
            out_z.append(cv2.resize(lo, (wc, hc), interpolation=cv2.INTER_LINEAR))
        out += (2 * (out_z[0] + 1j * out_z[1]) * carrier).real.astype(np.float32)
    return out


def _qim(v: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Nearest point of the lattice ``DELTA*Z + bit*DELTA/2`` to each value."""
    step = DELTA
    off = bits * (step / 2.0)
    return np.round((v - off) / step) * step + off


def _apply(img: np.ndarray, dy: np.ndarray) -> np.ndarray:
    out = img.astype(np.float32)
    out += dy[..., None]
    # In place: the embedder calls this once per iteration on the full-size image.
    return np.clip(np.rint(out, out=out), 0, 255, out=out).astype(np.uint8)


# ----------------------------------------------------------------------------- embed


def _target_bits(nby: int, nbx: int, data: bytes) -> np.ndarray:
    """The bit (0/1, as float) every coefficient position must carry."""
    level = next(lv for lv in LEVELS if lv >= len(data))
    coded = conv_encode(_frame_bits(data, level, nbx))
    lay = _layout(0, 0, nby, nbx)
    n = len(coded)
    idx = _data_index(0, 0, nby, nbx, nbx, n)
    hdr = _header_bits(LEVELS.index(level), nbx)
    return np.where(
        lay.role == 0,
        coded[idx],
        np.where(lay.role == 1, (lay.sync_sign < 0).astype(np.uint8), hdr[lay.hdr_index]),
    ).astype(np.float64)


def _block_mean(a: np.ndarray, nby: int, nbx: int) -> np.ndarray:
    return a[: nby * BLOCK, : nbx * BLOCK].reshape(nby, BLOCK, nbx, BLOCK).mean(axis=(1, 3))


@dataclass
class _Plan:
    """What ``embed`` will do to one image on one layout (see ``masking``)."""

    shape: tuple[int, int]  # canonical (hc, wc)
    host: np.ndarray  # the unmarked canonical luma
    v0: np.ndarray  # its carrier coefficients (nby, nbx, m)
    texture: np.ndarray  # each block's own texture (``_coefs_tex``)
    strength: np.ndarray  # fraction of its QIM move each block gets (nby, nbx)
    gain: np.ndarray  # full-resolution gain of the QIM change
    pilot_gain: np.ndarray  # full-resolution gain of the pilot
    block_gain: np.ndarray  # mean ``gain`` over each block (nby, nbx)

    @property
    def carrying(self) -> float:
        return float(self.strength.sum())


def _plan(img: np.ndarray, dense: Layout) -> _Plan:
    """The invisible plan: textured blocks carry, flat pixels are never changed."""
    h, w = img.shape[:2]
    hc, wc = _canonical_shape(h, w, dense)
    nby, nbx = hc // BLOCK, wc // BLOCK
    y = _luma(img)
    host = _to_canonical(y, hc, wc)
    v0, tex = _coefs_tex(host, nby, nbx)
    gain, pilot_gain = masking.pixel_gains(y)
    gb = _block_mean(cv2.resize(gain, (wc, hc), interpolation=cv2.INTER_AREA), nby, nbx)
    strength = masking.block_strength(tex, gb)
    return _Plan((hc, wc), host, v0, tex, strength, gain, pilot_gain, gb)


def _uniform(plan: _Plan) -> _Plan:
    """The plan of the mark before the masking: every block, every pixel, full moves. For
    a payload beyond the invisible capacity (callers that size payloads with
    ``capacity_bytes``, e.g. video keyframes): as robust as before, and as visible."""
    ones = np.ones_like(plan.gain)
    return replace(plan, strength=np.ones_like(plan.strength), gain=ones, pilot_gain=ones,
                   block_gain=np.ones_like(plan.block_gain))


def image_capacity(img: np.ndarray, dense: Layout = False) -> int:
    """Payload bytes this photo carries *invisibly* on this layout (``masking``): only its
    textured blocks count, so a photo with a flat background carries less than
    ``capacity_bytes`` of its size, at the same robustness. What the pipeline sizes
    face codes by."""
    plan = _plan(img, dense)
    nby, nbx = plan.strength.shape
    return _capacity(plan.carrying, nby, nbx, dense, MASKED_MIN_REPEAT)


def _up(dc: np.ndarray, w: int, h: int) -> np.ndarray:
    """Canonical change -> full resolution: the decoder's anti-alias Gaussian first (the
    adjoint of its resampling, so no energy goes where the decoder would not look, and
    block edges are softened), then a linear upsample."""
    return cv2.resize(cv2.GaussianBlur(dc, (0, 0), AA_SIGMA), (w, h),
                      interpolation=cv2.INTER_LINEAR)


def embed(img: np.ndarray, data: bytes, dense: Layout = False) -> np.ndarray:
    """Return a copy of BGR uint8 ``img`` carrying ``data`` (ValueError if it does not fit).

    ``dense``: the layout (``LAYOUTS``; True means "dense"): "dense" has ~45 % more
    capacity and is less robust to downscaling combined with JPEG, "fine" (small photos)
    more still, robust to JPEG 75 but not to downscaling. The decoder needs no flag.

    The mark follows the texture (``masking``): flat pixels are not changed. A payload
    up to :func:`image_capacity` is invisible; a larger one (up to
    :func:`capacity_bytes`) gets the uniform mark of before: as robust, and as visible.
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError("embed expects a BGR uint8 image of shape (H, W, 3)")
    h, w = img.shape[:2]
    cap = capacity_bytes(h, w, dense)
    if cap == 0:
        raise ValueError(f"image {w}x{h} is too small for the robust channel")
    if len(data) > cap:
        raise ValueError(f"payload of {len(data)} bytes exceeds capacity {cap} for {w}x{h}")
    plan = _plan(img, dense)
    hc, wc = plan.shape
    nby, nbx = plan.strength.shape
    invisible = _capacity(plan.carrying, nby, nbx, dense, MASKED_MIN_REPEAT)
    uniform = len(data) > invisible
    if uniform:
        plan = _uniform(plan)
    bits = _target_bits(nby, nbx, bytes(data))
    cap = DELTA / 2 if uniform else masking.MOVE_CAP
    move = np.clip(_qim(plan.v0, bits) - plan.v0, -cap, cap)
    target = plan.v0 + plan.strength[..., None] * move
    # The loop's correction for a block is divided by the block's mean pixel gain, so it
    # converges to the target with the change put on the block's textured pixels.
    norm = np.where(plan.strength > 0,
                    1.0 / np.maximum(plan.block_gain, 1.0 / masking.NORM_CAP), 0.0)
    # The pilot, masked like the rest, and "channel clearing": every pass, what the pilot
    # band holds beyond the masked pilot's own share (the host's texture and the QIM
    # changes' at the pilot frequency) is removed where the mask allows.
    pilot = plan.pilot_gain * _up(_pilot(hc, wc), w, h)
    pilot_band = _pilot_band(_to_canonical(pilot, hc, wc))
    clear_gain = (1.0 if uniform else CLEAR_FRACTION) * np.minimum(plan.pilot_gain, 1.0)
    side = pilot.copy()
    dq = np.zeros((hc, wc), np.float32)
    out = img
    for _ in range(EMBED_ITERS):
        canon = _to_canonical(_luma(out), hc, wc)
        side -= clear_gain * _up(_pilot_band(canon) - pilot_band, w, h)
        v = _block_coefs(canon, nby, nbx)
        dq[: nby * BLOCK, : nbx * BLOCK] += _blocks_from_coefs(
            (target - v) * norm[..., None]).astype(np.float32)
        out = _apply(img, plan.gain * _up(dq, w, h) + side)
    return out


# ----------------------------------------------------------------------------- extract


def _peak_candidates(y: np.ndarray, n: int = 3) -> list[tuple[float, float]]:
    """Coarse pilot frequencies (fx, fy) in cycles/pixel from the whitened spectrum."""
    h, w = y.shape
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    f = np.fft.rfft2((y - y.mean()) * win)
    mag = np.abs(f).astype(np.float32)
    k = 15
    # Whitening: divide by the local mean magnitude so a sinusoid stands out of 1/f content.
    norm = cv2.blur(np.fft.fftshift(mag, axes=0), (k, k))
    white = np.fft.fftshift(mag, axes=0) / (norm + 1e-6)
    white = np.fft.ifftshift(white, axes=0)
    fy_all = np.fft.fftfreq(h)
    fx_all = np.arange(w // 2 + 1) / w
    iy_pos = np.arange(1, h // 2)
    s = white[iy_pos] + white[(-iy_pos) % h]  # (+,+) and (+,-) peaks together
    fy = fy_all[iy_pos][:, None]
    fx = fx_all[None, :]
    ok = (fx >= 1 / 90) & (fx <= 1 / 6.4) & (fy >= 1 / 90) & (fy <= 1 / 6.4)
    ok &= (fx / np.maximum(fy, 1e-9) < 1.08) & (fx / np.maximum(fy, 1e-9) > 0.92)
    s = np.where(ok, s, 0.0)
    out = []
    for _ in range(n):
        iy, ix = np.unravel_index(int(np.argmax(s)), s.shape)
        if s[iy, ix] <= 0:
            break

        def _par(a: float, b: float, c: float) -> float:
            den = a - 2 * b + c
            return 0.0 if den == 0 else 0.5 * (a - c) / den

        dy = _par(s[iy - 1, ix], s[iy, ix], s[iy + 1, ix]) if 0 < iy < s.shape[0] - 1 else 0
        dx = _par(s[iy, ix - 1], s[iy, ix], s[iy, ix + 1]) if 0 < ix < s.shape[1] - 1 else 0
        out.append(((ix + dx) / w, (iy_pos[iy] + dy) / h))
        s[max(0, iy - 3) : iy + 4, max(0, ix - 3) : ix + 4] = 0
    return out


@lru_cache(maxsize=8)
def _carriers(hc: int, wc: int) -> tuple[np.ndarray, np.ndarray]:
    """The pilot's two complex carriers on an (hc, wc) grid (cached: the crop route
    demodulates many canonical images of a handful of sizes)."""
    t = 2 * np.pi / PILOT_PERIOD
    ey = np.exp(-1j * t * np.arange(hc))[:, None].astype(np.complex64)
    ex = np.exp(-1j * t * np.arange(wc))[None, :].astype(np.complex64)
    return ex * ey, ex * np.conj(ey)


def _demod(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cc = c - cv2.GaussianBlur(c, (0, 0), 6)
    e1, e2 = _carriers(*c.shape)
    return cc * e1, cc * e2


def _resample(y: np.ndarray, kx: float, ky: float) -> np.ndarray:
    """Resample to canonical resolution (``k`` = canonical px per source px) with a fixed
    Gaussian anti-alias filter of ``AA_SIGMA`` canonical pixels.

    Why the explicit filter: QIM needs the decoder to reproduce the embedder's coefficients
    to a fraction of a step. With a plain area/linear resize the canonical image would
    contain aliased fine texture whose value depends on the exact resampling kernel and
    phase (i.e. on whatever resizing the image went through); after a Gaussian that removes
    everything above half the canonical Nyquist frequency, only stable low-frequency content
    remains.
    """
    if max(kx, ky) < 1:
        src = cv2.GaussianBlur(y, (0, 0), sigmaX=AA_SIGMA / kx, sigmaY=AA_SIGMA / ky)
        return cv2.resize(src, (0, 0), fx=kx, fy=ky, interpolation=cv2.INTER_LANCZOS4)
    up = cv2.resize(y, (0, 0), fx=kx, fy=ky, interpolation=cv2.INTER_LANCZOS4)
    return cv2.GaussianBlur(up, (0, 0), AA_SIGMA)


def _to_canonical(y: np.ndarray, hc: int, wc: int) -> np.ndarray:
    """Resample a whole image onto a (hc, wc) canonical grid (edges aligned)."""
    h, w = y.shape
    kx, ky = wc / w, hc / h
    if max(kx, ky) < 1:
        src = cv2.GaussianBlur(y, (0, 0), sigmaX=AA_SIGMA / kx, sigmaY=AA_SIGMA / ky)
        return cv2.resize(src, (wc, hc), interpolation=cv2.INTER_LANCZOS4)
    up = cv2.resize(y, (wc, hc), interpolation=cv2.INTER_LANCZOS4)
    return cv2.GaussianBlur(up, (0, 0), AA_SIGMA)


def _refine(y: np.ndarray, kx: float, ky: float) -> tuple[float, float, np.ndarray]:
    """Refine the received->canonical scale from the pilot phase drift across the image."""
    c = _resample(y, kx, ky)
    for _ in range(3):
        z1, z2 = _demod(c)
        hc, wc = c.shape
        hx, hy = wc // 2, hc // 2
        # phase difference between right and left halves, and bottom and top halves
        px = np.angle(z1[:, hx:].sum() * np.conj(z1[:, :hx].sum())) + np.angle(
            z2[:, hx:].sum() * np.conj(z2[:, :hx].sum())
        )
        py = np.angle(z1[hy:].sum() * np.conj(z1[:hy].sum())) - np.angle(
            z2[hy:].sum() * np.conj(z2[:hy].sum())
        )
        t = 2 * np.pi / PILOT_PERIOD
        ex = px / 2 / (t * hx)
        ey = py / 2 / (t * hy)
        kx *= 1 + ex
        ky *= 1 + ey
        c = _resample(y, kx, ky)
        if abs(ex) < 2e-5 and abs(ey) < 2e-5:
            break
    return kx, ky, c


def _estimate_gain(v: np.ndarray) -> float:
    """Global gain of the AC coefficients, found blind from the half-step QIM lattice.

    Every marked coefficient lies on ``(DELTA/2) * Z`` whatever its bit, so the gain that
    best re-aligns the received coefficients with that lattice is the contrast change (or
    the attenuation by resampling/JPEG). Coarse search, then a fine one around the best.
    """
    a = np.abs(v.reshape(-1))
    a = a[a > DELTA * 0.75]
    if a.size < 20:
        return 1.0
    if a.size > 6000:
        a = a[:: a.size // 6000 + 1]

    def fit(gains: np.ndarray) -> np.ndarray:
        return np.cos(4 * np.pi * a[None, :] / (gains[:, None] * DELTA)).mean(axis=1)

    coarse = np.arange(0.7, 1.36, 0.01)
    g0 = float(coarse[int(np.argmax(fit(coarse)))])
    fine = np.arange(g0 - 0.012, g0 + 0.0121, 0.002)
    f = fit(fine)
    i = int(np.argmax(f))
    if 0 < i < len(fine) - 1:
        den = f[i - 1] - 2 * f[i] + f[i + 1]
        if den != 0:
            return float(fine[i] + 0.5 * (f[i - 1] - f[i + 1]) / den * 0.002)
    return float(fine[i])


def _sat_weight(mask_c: np.ndarray | None, nby: int, nbx: int) -> np.ndarray | float:
    """0 for blocks touching clipped (near 0 or 255) pixels, else 1.

    A brightness/contrast change clips highlights or shadows; QIM values there are
    garbage, and erasing them (soft value 0) is far better than feeding wrong bits.
    """
    if mask_c is None:
        return 1.0
    m = mask_c[: nby * BLOCK, : nbx * BLOCK].reshape(nby, BLOCK, nbx, BLOCK).mean(axis=(1, 3))
    return (m < 0.02).astype(np.float64)[..., None]


def _unsaturated(v: np.ndarray, wsat: np.ndarray | float) -> np.ndarray:
    """Coefficients of blocks free of clipping (all of them when nothing is clipped)."""
    if isinstance(wsat, np.ndarray) and wsat.sum() >= 20:
        return v[wsat[..., 0] > 0]
    return v


def _soft(v: np.ndarray, gain: float) -> np.ndarray:
    t = v / (gain * DELTA)
    frac = np.abs(t - np.round(t))  # 0 near a "0" point, 0.5 near a "1" point
    return (0.25 - frac) * 4.0


#: Share of blocks the unmarked-block weights must touch before a candidate also keeps
#: its unweighted soft values (for images marked before ``masking``: see ``locate``).
RAW_FALLBACK_SHARE = 0.02


def _soft_pair(v: np.ndarray, gain: float, tex: np.ndarray,
               wsat: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Soft values with blocks that look unmarked erased (``masking.unmarked_weight``),
    and the same without that erasure when it changed anything worth a retry."""
    raw = _soft(v, gain) * wsat
    u = masking.unmarked_weight(tex, gain)
    if (u < 1).mean() <= RAW_FALLBACK_SHARE:
        return raw, None
    return raw * u[..., None], raw


@dataclass
class _Candidate:
    z: float
    soft: np.ndarray
    by0: int
    bx0: int
    uncropped: bool = False
    ctx: tuple | None = None  # pilot-route geometry, for _polish
    #: ``soft`` without the unmarked-block erasure (None when it erased next to nothing):
    #: what a mark made before ``masking`` needs.
    raw: np.ndarray | None = None
    #: How the received image maps onto the canonical grid: received px x -> canonical
    #: px u_c = (x + 0.5) * k - 0.5 (the resampling), then grid coordinate
    #: u_a = (u_c - o) / s; block (0, 0) of ``soft`` is the original's block (by0, bx0).
    #: As (kx, ky, sx, sy, ox, oy).
    geom: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 0.0, 0.0)

    def to_canonical(self) -> np.ndarray:
        """2x3 affine: received image px -> the *original's* canonical px."""
        kx, ky, sx, sy, ox, oy = self.geom
        return np.array([
            [kx / sx, 0.0, ((0.5 * kx - 0.5 - ox) / sx) + BLOCK * self.bx0],
            [0.0, ky / sy, ((0.5 * ky - 0.5 - oy) / sy) + BLOCK * self.by0],
        ])


def _best_shift(soft: np.ndarray, raw: np.ndarray | None = None) -> _Candidate:
    nby, nbx, _ = soft.shape
    ky_max = int(np.ceil(0.12 * nby)) + 1
    kx_max = int(np.ceil(0.12 * nbx)) + 1
    lay = _layout(0, 0, nby + ky_max, nbx + kx_max)
    best = _Candidate(-1e9, soft, 0, 0)
    for ky in range(ky_max + 1):
        for kx in range(kx_max + 1):
            ss = lay.sync_sign[ky : ky + nby, kx : kx + nbx]
            num = float((soft * ss).sum())
            den = float(np.sqrt((soft * soft * (ss != 0)).sum()) + 1e-9)
            z = num / den
            if z > best.z:
                best = _Candidate(z, soft, ky, kx, raw=raw)
    return best


def _decode(cand: _Candidate, uncropped: bool = False) -> tuple[bytes, int] | None:
    """Decode one synchronisation hypothesis: (data, the original grid's width in blocks),
    or None unless a frame passes its CRC."""
    soft = cand.soft
    nby, nbx, _ = soft.shape
    lay = _layout(cand.by0, cand.bx0, nby, nbx)
    is_hdr = lay.role == 2
    hs = np.bincount(lay.hdr_index[is_hdr], weights=soft[is_hdr], minlength=N_HDR)
    hard = (hs < 0).astype(np.int64)
    nbx_hdr = int(sum(int(hard[6 + i]) << i for i in range(10)))
    widths = [cand.bx0 + nbx] if uncropped else []
    if nbx_hdr not in widths and nbx_hdr >= cand.bx0 + nbx:
        widths.append(nbx_hdr)
    if not widths:
        widths = [cand.bx0 + nbx]
    n_data = int((lay.role == 0).sum())
    scores = []
    for li, lv in enumerate(LEVELS):
        n = _n_coded(lv)
        if n > 1.6 * n_data:  # could not have fitted even in an uncropped original
            break
        sign = 1.0 - 2.0 * _header_bits(li, 0)[:6]
        scores.append((float((hs[:6] * sign).sum()), li, lv))
    scores.sort(reverse=True)
    is_data = lay.role == 0
    dsoft = soft[is_data]
    tried = 0
    for _, li, lv in scores[:3]:
        n = _n_coded(lv)
        for nbx_orig in widths:
            if tried >= 4:
                return None
            tried += 1
            idx = _data_index(cand.by0, cand.bx0, nby, nbx, nbx_orig, n)[is_data]
            acc = np.bincount(idx, weights=dsoft, minlength=n)
            bits = viterbi_decode(acc, 8 * (lv + FRAME_OVERHEAD))
            frame = np.packbits(bits).tobytes()
            body, crc = frame[:-4], frame[-4:]
            if zlib.crc32(_crc_prefix(li, nbx_orig) + body).to_bytes(4, "big") != crc:
                continue
            length = int.from_bytes(body[:2], "big")
            if length > lv:
                continue
            return body[2 : 2 + length], nbx_orig
    return None


def _pilot_phases(c: np.ndarray) -> list[tuple[float, float]]:
    """Block-grid phase (ox, oy) of canonical image ``c`` read from the pilot, and the
    same shifted by half a period (the pilot's cos*cos cannot tell them apart)."""
    z1, z2 = _demod(c)
    a = -PILOT_PERIOD * np.angle(z1.sum()) / (2 * np.pi)
    b = -PILOT_PERIOD * np.angle(z2.sum()) / (2 * np.pi)
    xb, yb = (a + b) / 2, (a - b) / 2
    half = PILOT_PERIOD / 2
    return [(xb % PILOT_PERIOD, yb % PILOT_PERIOD),
            ((xb + half) % PILOT_PERIOD, (yb + half) % PILOT_PERIOD)]


def _shift(c: np.ndarray, ox: float, oy: float, interp: int = cv2.INTER_CUBIC) -> np.ndarray:
    """``c`` moved so that its block grid's origin (ox, oy) lands on (0, 0)."""
    m = np.float32([[1, 0, ox], [0, 1, oy]])
    return cv2.warpAffine(c, m, c.shape[::-1], flags=interp | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _grid_coefs(c: np.ndarray, ox: float, oy: float) -> np.ndarray | None:
    """Block coefficients of every whole block of ``c`` when its grid starts at (ox, oy);
    None if fewer than 2x2 blocks fit."""
    hc, wc = c.shape
    nby, nbx = int((hc - oy) // BLOCK), int((wc - ox) // BLOCK)
    if nby < 2 or nbx < 2:
        return None
    return _block_coefs(_shift(c, ox, oy), nby, nbx)


def _grid_candidate(c: np.ndarray, kx: float, ky: float, ox: float, oy: float,
                    sat: np.ndarray | None) -> _Candidate | None:
    """The hypothesis "canonical image ``c`` (the received image resampled at kx, ky) has
    its block grid at (ox, oy)", scored by sync correlation over whole-block shifts."""
    hc, wc = c.shape
    nby, nbx = int((hc - oy) // BLOCK), int((wc - ox) // BLOCK)
    if nby < 2 or nbx < 2:
        return None
    v, tex = _coefs_tex(_shift(c, ox, oy), nby, nbx)
    wsat: np.ndarray | float = 1.0
    if sat is not None:
        wsat = _sat_weight(_shift(_resample(sat, kx, ky), ox, oy, cv2.INTER_LINEAR), nby, nbx)
    g = _estimate_gain(_unsaturated(v, wsat))
    cand = _best_shift(*_soft_pair(v, g, tex, wsat))
    cand.ctx = (c, ox, oy, g, wsat)
    cand.geom = (kx, ky, 1.0, 1.0, ox, oy)
    return cand


def _pilot_route(y: np.ndarray, sat: np.ndarray | None) -> list[_Candidate]:
    """Hypotheses from the pilot: works after crops, needs a big enough image."""
    cands: list[_Candidate] = []
    for fx, fy in _peak_candidates(y):
        kx, ky = fx * PILOT_PERIOD, fy * PILOT_PERIOD
        kx, ky, c = _refine(y, kx, ky)
        if min(c.shape) < 2 * BLOCK:
            continue
        for ox, oy in _pilot_phases(c):
            cand = _grid_candidate(c, kx, ky, ox, oy, sat)
            if cand is not None:
                cands.append(cand)
        if cands and max(cd.z for cd in cands) > 12:
            break
    cands.sort(key=lambda cd: -cd.z)
    if cands and cands[0].z >= Z_MIN and cands[0].ctx is not None:
        polished = _polish(cands[0])
        # The pilot's scale is biased by the host's own content at its frequency (the
        # masked pilot is uneven, its band only partly cleared): 0.1-0.2 % on t1 after a
        # 2 % crop, a pixel of drift across the grid. One resampling at the polished scale
        # and a second polish remove it (``_regrid``).
        found = sorted([polished, *_regrid(y, polished, sat)], key=lambda cd: -cd.z)
        cands[:0] = [cd for cd in found if cd.z > cands[0].z]
    return cands


def _crop_scales(h: int, w: int) -> list[tuple[dict[float, int], dict[float, int]]]:
    """The received->canonical scales (ky, kx) a *cropped, not resized* image can have,
    one pair per layout (normal, dense, and fine for images up to ``FINE_CROP_PIXELS``),
    each ``{scale: largest crop in px}``.

    Cropping keeps the original's pixel grid, so the scale is the original's own
    ``canonical side / original side`` for an original up to ``CROP_MAX`` larger per axis:
    a short, exactly known list (the ladder rounds the canonical side). The crop at each
    (original side - received side) bounds the grid phases possible there.
    """
    layouts = []
    for name in LAYOUTS:
        if name == "fine" and h * w > FINE_CROP_PIXELS:
            continue
        out: list[dict[float, int]] = []
        for axis, n in ((0, h), (1, w)):
            ks: dict[float, int] = {}
            for n0 in range(n, int(n / (1.0 - CROP_MAX)) + 1):
                f = n0 / n
                side = _canonical_shape(round(h * f), round(w * f), name)[axis]
                n_orig = round((h, w)[axis] * f)
                k = side / n_orig
                ks[k] = max(ks.get(k, 0), n_orig - n)
            out.append(ks)
        layouts.append((out[0], out[1]))
    return layouts


def _snap_phase(o: float, k: float, max_crop: int) -> float | None:
    """The grid phase nearest ``o`` that a crop of a whole number of pixels (0 to
    ``max_crop``) leaves at exact scale ``k`` (``-crop * k`` mod 8), or None if none is
    within ``CROP_SNAP`` px: at the true scale the phase is known exactly, not estimated."""
    phases = (-np.arange(max_crop + 1) * k) % BLOCK
    d = np.abs((phases - o + BLOCK / 2) % BLOCK - BLOCK / 2)
    i = int(np.argmin(d))
    return float(phases[i]) if d[i] <= CROP_SNAP else None


def _thin(ks: list[float]) -> list[float]:
    """Representatives of sorted scales ``ks`` such that every scale lies within a relative
    ``CROP_SCALE_SPACING / 2`` of one (greedy interval cover)."""
    half = CROP_SCALE_SPACING / 2
    picked: list[float] = []
    i = 0
    while i < len(ks):
        j = i
        while j + 1 < len(ks) and ks[j + 1] <= ks[i] * (1 + half):
            j += 1
        picked.append(ks[j])
        i = j + 1
        while i < len(ks) and ks[i] <= ks[j] * (1 + half):
            i += 1
    return picked


def _cubic_matrices(n_out: int, n_in: int, starts: np.ndarray) -> np.ndarray:
    """(len(starts), n_out, n_in): for each start, the matrix sampling a signal at
    ``start + j`` with OpenCV's bicubic kernel (a = -0.75), indices clamped at the ends;
    one axis of a sub-pixel shift."""
    a = -0.75
    p = starts[:, None] + np.arange(n_out)[None, :]
    i0 = np.floor(p).astype(int)
    t = p - i0
    t1, t2 = t + 1, 1 - t
    w0 = ((a * t1 - 5 * a) * t1 + 8 * a) * t1 - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * t2 - (a + 3)) * t2 * t2 + 1
    m = np.zeros((len(starts), n_out, n_in))
    s, j = np.indices(p.shape)
    for k, wk in enumerate((w0, w1, w2, 1 - w0 - w1 - w2)):
        np.add.at(m, (s, j, np.clip(i0 - 1 + k, 0, n_in - 1)), wk)
    return m


def _window_phase(c: np.ndarray, steps: np.ndarray) -> tuple[float, float] | None:
    """Block-grid phase (ox, oy) of canonical image ``c`` that best fits the QIM lattice on
    a central window, searched around the pilot's phase; None if ``c`` is too small.

    The window is short enough that a scale a little off drifts by only a fraction of a
    pixel across it, so the phase is right near the centre even where the scale is not.
    Shift and block DCT are both separable, so the whole (dx, dy) search is a few small
    matrix products (the crop route runs this ~10^2 times per image).
    """
    hc, wc = c.shape
    n = min(CROP_WINDOW_BLOCKS, hc // BLOCK - 2, wc // BLOCK - 2)
    if n < 2:
        return None
    y0 = (hc // 2 - n * BLOCK // 2) // BLOCK * BLOCK
    x0 = (wc // 2 - n * BLOCK // 2) // BLOCK * BLOCK
    # (one block of margin each side: the sub-pixel shifts read just outside)
    win = c[y0 - BLOCK: y0 + (n + 2) * BLOCK, x0 - BLOCK: x0 + (n + 2) * BLOCK]
    win = win.astype(np.float64)
    dct = np.kron(np.eye(n), _D[:4])  # block DCT, frequencies 0..3: (4n, 8n)
    best = (-1.0, 0.0, 0.0)
    for px, py in _pilot_phases(c):
        oxs, oys = (px + steps) % BLOCK, (py + steps) % BLOCK
        nx, ny = len(oxs), len(oys)
        # Stacked into two plain matrix products (one BLAS call each: many small batched
        # products are far slower, worst with BLAS threads competing for the cores).
        ax = (dct @ _cubic_matrices(n * BLOCK, win.shape[1], BLOCK + oxs)).reshape(nx * 4 * n, -1)
        ay = (dct @ _cubic_matrices(n * BLOCK, win.shape[0], BLOCK + oys)).reshape(ny * 4 * n, -1)
        coefs = ay @ (win @ ax.T)  # (ny * 4n, nx * 4n)
        v = coefs.reshape(ny, n, 4, nx, n, 4).transpose(0, 3, 1, 4, 2, 5)  # (ny, nx, by, bx, u, v)
        v = v[..., _CU, _CV].reshape(ny * nx, -1)
        keep = np.abs(v) > 0.75 * DELTA
        fit = (np.cos(4 * np.pi * v / DELTA) * keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1)
        i = int(np.argmax(fit))
        if fit[i] > best[0]:
            best = (float(fit[i]), float(oxs[i % nx]), float(oys[i // nx]))
    return best[1], best[2]


def _carry_phase(o: float, k: float, k2: float, n: int) -> float:
    """Grid phase at scale ``k2`` of the grid that has phase ``o`` at scale ``k``, pinned
    at the middle of a received axis of ``n`` px (where ``_window_phase`` measured it)."""
    u = (n / 2 + 0.5) * k - 0.5
    line = o + BLOCK * np.floor((u - o) / BLOCK)  # the grid line just before the middle
    x = (line + 0.5) / k - 0.5  # ... in received pixels
    return float(((x + 0.5) * k2 - 0.5) % BLOCK)


def _crop_route(y: np.ndarray, sats: list[np.ndarray | None],
                near: tuple[float, float] | None = None) -> list[_Candidate]:
    """Hypotheses "cropped, not resized", for photos too small for the pilot's scale peak.

    The scale is then one of a known list (``_crop_scales``). Coarse stage: on a thinned
    list, the pilot's phase (weak, but at a known scale far easier to read than its
    spectral peak), refined by ``_window_phase``, gives each scale's block-grid phase, and
    the whole image's payload-independent QIM lattice fit ranks them. Fine stage: around
    the best few, every exact scale is tried with the grid pinned where the window found
    it, snapped to a phase a whole-pixel crop can leave (``_snap_phase``): a true
    hypothesis is then exact. The best are also refined by ``_polish`` and ``_regrid``
    (kept as further candidates, in case the image was not only cropped).

    ``near`` (kx, ky): only the scales within ``CROP_NEAR`` of the pilot's estimate. For
    large photos, whose pilot finds the scale to ~0.2 % (biased by the host's own content
    at the pilot frequency, which leaves a pixel of drift across a 1 MP grid: measured,
    t1 after a 2 % crop decoded 4 times in 10 from the pilot route alone), the exact
    scales of a crop near it are a handful: the route costs a few resamplings there.
    """
    h, w = y.shape
    steps = np.arange(-CROP_PHASE_RANGE, CROP_PHASE_RANGE + 1e-9, CROP_PHASE_STEP)
    coarse: list[tuple[float, float, float, float, float, int]] = []
    layouts = _crop_scales(h, w)
    if near is not None:
        layouts = [tuple({k: c for k, c in ks.items() if abs(k / k0 - 1.0) <= CROP_NEAR}
                         for ks, k0 in ((kys, near[1]), (kxs, near[0])))
                   for kys, kxs in layouts]
    for li, (kys, kxs) in enumerate(layouts):
        for ky in _thin(sorted(kys)):
            for kx in _thin(sorted(kxs)):
                c = _resample(y, kx, ky)
                phase = _window_phase(c, steps)
                v = None if phase is None else _grid_coefs(c, *phase)
                if v is not None:
                    coarse.append((_lattice_fit(v, 1.0), kx, ky, *phase, li))
    coarse.sort(key=lambda t: -t[0])
    fine: dict[tuple[float, float], tuple[float, float, float, np.ndarray]] = {}
    for _fit, kx, ky, ox, oy, li in coarse[:1 if near else CROP_POLISH]:
        kys, kxs = layouts[li]
        span = CROP_SCALE_SPACING / 2 + 1e-9  # the scales ``_thin`` let this one stand for
        ky_list = [k for k in kys if abs(k / ky - 1.0) <= span]
        kx_list = [k for k in kxs if abs(k / kx - 1.0) <= span]
        if near is not None:  # large photo: one axis at a time, then the best few pairs
            kx_list = _best_axis_scales(y, kx_list, kxs, (kx, ox), (ky, oy), 1)
            ky_list = _best_axis_scales(y, ky_list, kys, (ky, oy), (kx, ox), 0)
        for ky2 in ky_list:
            for kx2 in kx_list:
                if (kx2, ky2) in fine:
                    continue
                ox2 = _snap_phase(_carry_phase(ox, kx, kx2, w), kx2, kxs[kx2])
                oy2 = _snap_phase(_carry_phase(oy, ky, ky2, h), ky2, kys[ky2])
                if ox2 is None or oy2 is None:
                    continue
                c = _resample(y, kx2, ky2)
                v = _grid_coefs(c, ox2, oy2)
                if v is not None:
                    fine[(kx2, ky2)] = (_lattice_fit(v, 1.0), ox2, oy2, c)
    ranked = sorted(fine.items(), key=lambda t: -t[1][0])
    cands: list[_Candidate] = []
    for (kx, ky), (_fit, ox, oy, c) in ranked[:CROP_POLISH]:
        cand = _grid_candidate(c, kx, ky, ox, oy, None)
        if cand is None:
            continue
        polished = _polish(cand)
        found = [cand, polished, *_regrid(y, polished, None)]
        cands += found
        # Erasure variants at the best unpolished geometry (clipped blocks set to 0).
        plain = max((cd for cd in found if cd.geom[2:4] == (1.0, 1.0)), key=lambda cd: cd.z)
        kx2, ky2, _sx, _sy, ox2, oy2 = plain.geom
        for sat in sats:
            if sat is not None:
                variant = _grid_candidate(_resample(y, kx2, ky2), kx2, ky2, ox2, oy2, sat)
                cands += [] if variant is None else [variant]
    cands.sort(key=lambda cd: -cd.z)
    return cands


def _best_axis_scales(y: np.ndarray, ks: list[float], maxcrop: dict[float, int],
                      this: tuple[float, float], other: tuple[float, float], axis: int,
                      keep: int = 3) -> list[float]:
    """The ``keep`` exact scales of one axis (``axis``: 1 = x, 0 = y) whose snapped grid
    fits the QIM lattice best, the other axis held at its coarse (scale, phase): on a
    large photo this ranks ~10 scales per axis with ~10 resamplings instead of ~100 for
    every pair, and a scale slightly off on the other axis lowers every fit alike."""
    (k0, o0), (k_other, o_other) = this, other
    n = y.shape[axis]
    scored = []
    for k in ks:
        o = _snap_phase(_carry_phase(o0, k0, k, n), k, maxcrop[k])
        if o is None:
            continue
        kx, ky, ox, oy = (k, k_other, o, o_other) if axis == 1 else (k_other, k, o_other, o)
        v = _grid_coefs(_resample(y, kx, ky), ox, oy)
        if v is not None:
            scored.append((_lattice_fit(v, 1.0), k))
    scored.sort(reverse=True)
    return [k for _f, k in scored[:keep]]


def _warp(c: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``c`` sampled at u_c = m @ (u_a, 1) (m: 2x3, grid -> c)."""
    hc, wc = c.shape
    return cv2.warpAffine(c, m.astype(np.float32), (wc, hc),
                          flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _warp_coefs(c: np.ndarray, m: np.ndarray, nby: int, nbx: int) -> np.ndarray:
    """Block coefficients of ``c`` sampled at u_c = m @ (u_a, 1) (m: 2x3, grid -> c)."""
    return _block_coefs(_warp(c, m), nby, nbx)


def _lattice_fit(v: np.ndarray, g: float) -> float:
    a = v.reshape(-1)
    a = a[np.abs(a) > 0.75 * DELTA]
    return float(np.cos(4 * np.pi * a / (g * DELTA)).mean()) if a.size else 0.0


def _polish(cand: _Candidate) -> _Candidate:
    """Fine-tune the pilot's geometry (offset and scale per axis) by pattern search on the
    payload-independent lattice fit.

    The pilot alone leaves errors of a few hundredths of a pixel per hundred pixels, which
    after a crop (less image, noisier pilot) are enough to push the raw bit-error rate to
    10-20 %; QIM itself is a far sharper registration target.
    """
    assert cand.ctx is not None
    c, ox, oy, g, wsat = cand.ctx
    hc, wc = c.shape
    nby, nbx = cand.soft.shape[:2]
    nby = min(nby, int((hc - oy) // BLOCK) - 1)
    nbx = min(nbx, int((wc - ox) // BLOCK) - 1)
    if nby < 2 or nbx < 2:
        return cand
    # Scale about the grid's centre, not its corner: then a scale step does not also
    # shift the centre, and the four parameters can be searched one at a time.
    cx, cy = nbx * BLOCK / 2, nby * BLOCK / 2

    def matrix(q: np.ndarray) -> np.ndarray:
        return np.array([[1 + q[2], 0.0, ox + q[0] - q[2] * cx],
                         [0.0, 1 + q[3], oy + q[1] - q[3] * cy]])

    p = np.zeros(4)
    steps = np.array([0.2, 0.2, 8e-4, 8e-4])
    best = _lattice_fit(_warp_coefs(c, matrix(p), nby, nbx), g)
    for _ in range(4):
        improved = True
        while improved:
            improved = False
            for i in range(4):
                for d in (-1.0, 1.0):
                    q = p.copy()
                    q[i] += d * steps[i]
                    f = _lattice_fit(_warp_coefs(c, matrix(q), nby, nbx), g)
                    if f > best:
                        best, p, improved = f, q, True
        steps /= 2
    m = matrix(p)
    v, tex = _coefs_tex(_warp(c, m), nby, nbx)
    w = wsat[:nby, :nbx] if isinstance(wsat, np.ndarray) else wsat
    out = _best_shift(*_soft_pair(v, _estimate_gain(_unsaturated(v, w)), tex, w))
    out.geom = (cand.geom[0], cand.geom[1], m[0, 0], m[1, 1], m[0, 2], m[1, 2])
    return out


def _regrid(y: np.ndarray, cand: _Candidate, sat: np.ndarray | None) -> list[_Candidate]:
    """Resample ``y`` once more, directly at the polished scale, and polish again.

    ``_polish`` works on an already resampled image, so its result carries two
    interpolations and a scale error from the hypothesis grid; one clean resampling at the
    refined scale removes both (worth several sync standard deviations after crops).
    """
    kx, ky, sx, sy, ox, oy = cand.geom
    kx2, ky2 = kx / sx, ky / sy
    c = _resample(y, kx2, ky2)
    ox2 = ((0.5 + ox) / sx - 0.5) % BLOCK
    oy2 = ((0.5 + oy) / sy - 0.5) % BLOCK
    fresh = _grid_candidate(c, kx2, ky2, ox2, oy2, sat)
    return [] if fresh is None else [fresh, _polish(fresh)]


def _sync_z(soft: np.ndarray) -> float:
    nby, nbx, _ = soft.shape
    ss = _layout(0, 0, nby, nbx).sync_sign
    return float((soft * ss).sum() / (np.sqrt((soft * soft * (ss != 0)).sum()) + 1e-9))


def _ladder_route(y: np.ndarray, sat: list[np.ndarray | None]) -> list[_Candidate]:
    """Hypotheses "resized but not cropped": try the canonical ladder sizes directly.

    Needs no pilot, so it rescues small photos (e.g. 250x250 after JPEG or resizing) whose
    pilot is too faint to locate. Every candidate canonical size (both sides on the
    ladder, aspect ratio kept within 6 %) is scored by sync correlation at block shift 0;
    the best two are then refined over +-0.5 px of the received size, because resizing
    rounds the output size and a quarter-pixel drift already hurts QIM.
    """
    h, w = y.shape
    # Scoring only ranks the sizes, so for strong reductions it may start from a 2x
    # area-downsampled copy (4x fewer pixels to filter); the final pass uses full ``y``.
    half = cv2.resize(y, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    scored: list[tuple[float, int, int]] = []
    for wc in SIDE_LADDER:
        if not 0.18 * w <= wc <= 1.3 * w:
            continue
        for hc in SIDE_LADDER:
            if abs(hc / wc - h / w) > 0.06 * h / w or hc < 2 * BLOCK or wc < 2 * BLOCK:
                continue
            if h * w <= SMALL_PIXELS:  # cheap: also score the +-0.5 px size roundings
                z = -1e9
                for d in (-0.5, 0.0, 0.5):
                    c = _resample(y, wc / (w + d), hc / (h + d))[:hc, :wc]
                    if c.shape == (hc, wc):
                        z = max(z, _ladder_z(c))
                scored.append((z, hc, wc))
                continue
            scored.append((_ladder_z(_to_canonical(half if wc < 0.4 * w else y, hc, wc)),
                           hc, wc))
    scored.sort(reverse=True)
    cands: list[_Candidate] = []
    for rank, (z0, hc, wc) in enumerate(scored[:2]):
        if rank > 0 and z0 < LADDER_Z_MIN:  # runner-up only when it looks plausible
            continue
        nby, nbx = hc // BLOCK, wc // BLOCK
        best_v: tuple[np.ndarray, np.ndarray] | None = None
        best_z = -1e9
        best_k = (1.0, 1.0)
        for dw in (-0.5, -0.25, 0.0, 0.25, 0.5):
            for dh in (-0.5, -0.25, 0.0, 0.25, 0.5):
                c = _resample(y, wc / (w + dw), hc / (h + dh))[:hc, :wc]
                if c.shape != (hc, wc):
                    continue
                vt = _coefs_tex(c, nby, nbx)
                z = _sync_z(_soft_pair(vt[0], _estimate_gain(vt[0]), vt[1])[0])
                if z > best_z:
                    best_z, best_v, best_k = z, vt, (wc / (w + dw), hc / (h + dh))
        if best_v is not None:
            cands += _uncropped_candidates(*best_v, (hc, wc), best_k, sat)
    cands.sort(key=lambda cd: -cd.z)
    return cands


def _ladder_z(c: np.ndarray) -> float:
    """Sync correlation of canonical image ``c`` with its grid at 0 (ranks ladder sizes)."""
    v, tex = _coefs_tex(c, c.shape[0] // BLOCK, c.shape[1] // BLOCK)
    return _sync_z(_soft_pair(v, _estimate_gain(v), tex)[0])


def _uncropped_candidates(v: np.ndarray, tex: np.ndarray, shape: tuple[int, int],
                          k: tuple[float, float],
                          sat: list[np.ndarray | None]) -> list[_Candidate]:
    """Candidates for the whole canonical grid ``v`` (block coefficients of the received
    image resampled at ``k`` = (kx, ky) to ``shape``, grid at 0; ``tex`` its blocks'
    texture): one per clipping mask, whose clipped blocks (pushed to 0/255 by a
    brightness change) are erased."""
    nby, nbx = v.shape[:2]
    out = []
    for mask in sat:
        wsat = _sat_weight(None if mask is None else _to_canonical(mask, *shape), nby, nbx)
        soft, raw = _soft_pair(v, _estimate_gain(_unsaturated(v, wsat)), tex, wsat)
        out.append(_Candidate(_sync_z(soft), soft, 0, 0, uncropped=True, raw=raw,
                              geom=(*k, 1.0, 1.0, 0.0, 0.0)))
    return out


def _as_is_route(y: np.ndarray, sat: list[np.ndarray | None]) -> list[_Candidate]:
    """Hypothesis "neither resized nor cropped": the embedder's own canonical grids (every
    layout, resampled exactly as ``embed`` does), at no search cost. Re-encoding, stripped
    metadata, brightness and noise, the commonest handling, leave the size alone; the
    search routes cost 0.2-5 s (``benchmarks/bench_robust.py``)."""
    h, w = y.shape
    cands: list[_Candidate] = []
    for shape in dict.fromkeys(_canonical_shape(h, w, name) for name in LAYOUTS):
        hc, wc = shape
        if min(hc, wc) >= 2 * BLOCK:
            v, tex = _coefs_tex(_to_canonical(y, hc, wc), hc // BLOCK, wc // BLOCK)
            cands += _uncropped_candidates(v, tex, shape, (wc / w, hc / h), sat)
    cands.sort(key=lambda cd: -cd.z)
    return cands


#: Minimum sync correlation (in standard deviations) worth trying to decode.
Z_MIN = 4.5
#: Minimum sync correlation of a ladder size (before sub-pixel refinement) worth refining.
LADDER_Z_MIN = 3.0
#: Received images up to this many pixels get a finer (3x dearer) ladder scoring.
SMALL_PIXELS = 200_000
#: Crop route: largest crop (fraction of the original side, all borders together), the
#: relative spacing of the scale hypotheses tried, and how many of them get polished.
CROP_MAX = 0.12
CROP_SCALE_SPACING = 0.004
CROP_POLISH = 4
#: Crop route: sub-pixel search (canonical px) around the pilot's phase, on a central
#: window of this many blocks per side: 120 px, across which a scale off by half the
#: coarse spacing drifts by ~0.12 px at the edges; as many blocks as possible, because a
#: small photo's phase estimate is noisy (a 250x250 photo uses its whole 13-block grid).
CROP_PHASE_RANGE = 0.75
CROP_PHASE_STEP = 0.25
CROP_WINDOW_BLOCKS = 15
#: Crop route: farthest (canonical px) a measured grid phase may be from one a whole-pixel
#: crop leaves, for that scale to stay a hypothesis.
CROP_SNAP = 0.35
#: Largest received image (pixels) the crop route runs on: above it the pilot is strong
#: enough, and the route's cost (a cropped 640x480 copy: 4-5 s to decode) grows with area.
CROP_ROUTE_PIXELS = 800_000
#: Above it, the crop route tries only the scales within this relative distance of the
#: pilot route's best estimate (a few, instead of every scale a 12 % crop can leave).
CROP_NEAR = 0.003
#: Largest received image (pixels) for which the crop route also tries the fine layout,
#: which only photos under ~280 px use (a 400x400 crop of one: its scales are ~1).
FINE_CROP_PIXELS = 160_000


def _candidates(img: np.ndarray, quick: bool = False) -> Iterator[_Candidate]:
    """Synchronisation hypotheses, lazily, cheapest first: as-is, pilot, ladder, crop
    (``quick``: the first two only, which find same-size and resized copies of ~1 MP and
    up in well under a second)."""
    y = img.astype(np.float32) if img.ndim == 2 else _luma(img)
    luma_clip = ((y >= 250) | (y <= 3)).astype(np.float32)
    masks: list[np.ndarray | None] = [None]
    if luma_clip.mean() > 0.01:
        masks.append(luma_clip)
    if img.ndim == 3:
        chan_clip = ((img.max(axis=2) >= 253) | (y <= 3)).astype(np.float32)
        if chan_clip.mean() > 0.01:
            masks.append(chan_clip)
    yield from _as_is_route(y, masks)
    pilot = _pilot_route(y, masks[1] if len(masks) > 1 else None)
    yield from pilot[:3]
    if quick:
        return
    yield from _ladder_route(y, masks)
    if y.size <= CROP_ROUTE_PIXELS:
        yield from _crop_route(y, masks)
    elif pilot:  # larger photos: the exact crop scales near the pilot's estimate
        kx, ky, sx, sy, _ox, _oy = pilot[0].geom
        yield from _crop_route(y, masks, near=(kx / sx, ky / sy))


@dataclass(frozen=True)
class Located:
    """A decoded payload and where the received image sits on the original's grid."""

    data: bytes
    #: 2x3 affine, received image px -> the original's canonical px.
    to_canonical: np.ndarray
    #: Width of the original's canonical grid in blocks (from the frame header): tells
    #: which layout (``LAYOUTS``) the embedder used.
    grid_width: int

    def to_original(self, width: int, height: int) -> np.ndarray:
        """2x3 affine, received image px -> px of the original (``width`` x ``height``,
        known from the decrypted payload)."""
        layout = next((name for name in LAYOUTS
                       if _n_blocks(height, width, name)[1] == self.grid_width), "normal")
        hc, wc = _canonical_shape(height, width, layout)
        kx, ky = wc / width, hc / height
        canon = np.array([[kx, 0.0, 0.5 * kx - 0.5], [0.0, ky, 0.5 * ky - 0.5], [0, 0, 1.0]])
        return (np.linalg.inv(canon) @ np.vstack([self.to_canonical, [0.0, 0.0, 1.0]]))[:2]


def locate(img: np.ndarray, quick: bool = False) -> Located:
    """Decode the payload and the geometry the decoder found (resize, crop offset).

    Recovery uses the geometry to put faces back exactly where they were even after a
    crop: the synchronisation is far more precise than re-detecting anonymised faces.
    ``quick`` tries only the cheap hypotheses (``refacex inspect``'s default: an ordinary
    photo is answered fast; resized small photos and crops need the full search).
    Raises ``NoPayloadError`` like :func:`extract`.
    """
    try:
        # Degenerate hypotheses divide by zero now and then: numpy's warnings about it are
        # noise on the user's terminal, the hypothesis is simply dropped.
        with np.errstate(all="ignore"):
            for cand in _candidates(img, quick):
                if cand.z < Z_MIN:
                    continue
                found = _decode(cand, cand.uncropped)
                if found is None and cand.raw is not None:  # a mark from before masking
                    found = _decode(replace(cand, soft=cand.raw), cand.uncropped)
                if found is not None:
                    return Located(found[0], cand.to_canonical(), found[1])
    except (cv2.error, ValueError, ZeroDivisionError, FloatingPointError):
        # A degenerate synchronisation hypothesis on an unmarked or mangled image (e.g. a
        # scale estimate that leaves no pixels): that is "no payload", never a crash.
        pass
    raise NoPayloadError("no robust payload found in this image (or it was damaged too much)")


def extract(img: np.ndarray, quick: bool = False) -> bytes:
    """Return the bytes embedded by :func:`embed`, or raise ``NoPayloadError``."""
    return locate(img, quick).data
