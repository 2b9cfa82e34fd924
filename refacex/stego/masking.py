"""Perceptual masking for the robust channel: where the mark may go, and how strong.

The eye sees a change of one grey level on a flat area, and misses several on hair,
fabric or foliage (contrast masking: a pattern near a texture of similar scale is hidden
by it). QIM (``robust.py``) moves every carrying coefficient to its lattice, i.e. the
same strength everywhere, which is what made the mark a visible blocky texture on walls,
white backgrounds and shirts. Here the mark follows the texture, and decoding stays blind:

* **Pixel gain** (``pixel_gains``). The change the embedder computes for a canonical
  block is multiplied, pixel by pixel at full resolution, by a gain that is 0 where the
  local activity (``visibility.activity``) is under ``QUIET_ACTIVITY`` and 1 from
  ``FULL_ACTIVITY`` on; the embedder's closed loop then reaches the block's target with
  the change concentrated on its textured pixels (at most ``NORM_CAP`` times the usual
  amplitude there). The faint pilot gets the same gain, scaled so that its total energy
  is what it was (it only moves from flat to textured areas). Flat pixels are left
  exactly as they were.
* **Which blocks carry** (``block_strength``). A block carries only if it has texture of
  its own at canonical resolution (``BLOCK_TEXTURE`` grey levels RMS in its non-carrying
  DCT coefficients) and enough textured pixels for the gain above; otherwise it is left
  alone. The target move is also capped at ``MOVE_CAP`` (of the lattice's 8): the last
  grey levels of the farthest moves cost the most energy and buy the least margin.
* **Blind decoding** (``unmarked_weight``). A block the embedder left alone still holds
  the picture's own coefficients, which read as random bits: noise for the decoder. It
  recognises such blocks from the received image alone, by the same texture measure
  (the mark adds texture of its own to every block it marks: > ~1.1 RMS measured after
  JPEG 50, noise and resizing, vs < ~1.2 in unmarked blocks), and erases them (soft value
  0) instead of counting them. The weight is only a gain on soft values, so an image
  marked before this masking existed still decodes (``robust.locate`` retries without
  the weights when they erased anything).
* **Capacity** follows: only carrying blocks count (``robust.image_capacity``), so a
  photo with a large flat background carries fewer bytes at the same robustness.
"""

from __future__ import annotations

import cv2
import numpy as np

from refacex.stego.visibility import activity

#: Activity (grey levels RMS) under which a pixel is never changed; ``visibility``'s flat
#: patches are those under ``FLAT_ACTIVITY`` (the same 1.0) at every pixel.
QUIET_ACTIVITY = 1.0
#: Pixels this close (px) to a quiet one are as quiet as it.
QUIET_MARGIN = 2
#: Activity from which a pixel takes the full change.
FULL_ACTIVITY = 2.5
#: A block carries only with at least this much texture (canonical grey levels, RMS per
#: non-carrying DCT coefficient).
BLOCK_TEXTURE = 0.5
#: Largest amplification of a block's change onto its textured pixels; a block whose
#: textured pixels cannot reach half of its target at this amplification is left alone.
NORM_CAP = 2.0
MIN_STRENGTH = 0.5
#: Largest QIM move (canonical DCT units; the lattice step is 16, a move at most 8). A move
#: of 6 still leaves the coefficient on the right side of the decision boundary (4).
MOVE_CAP = 5.5
#: Decoder: received block texture (divided by the gain) under ``UNMARKED_TEXTURE[0]``:
#: erased; over ``[1]``: full weight; linear between.
UNMARKED_TEXTURE = (0.8, 1.3)
#: Largest pilot amplitude gain (the pilot's energy moves from flat to textured areas).
PILOT_GAIN_MAX = 1.5


def pixel_gains(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gain of the QIM change, gain of the pilot), full resolution, float32."""
    act = activity(y)
    ramp = (act - QUIET_ACTIVITY) / (FULL_ACTIVITY - QUIET_ACTIVITY)
    gain = np.clip(ramp, 0.0, 1.0).astype(np.float32)
    # A flat area's edge is flat too: the gain there is the lowest within QUIET_MARGIN px
    # (a mark right beside a flat area shows on it).
    k = 2 * QUIET_MARGIN + 1
    gain = cv2.erode(gain, np.ones((k, k), np.uint8))
    # The pilot: a little smoother (its spectral peak should stay narrow), still exactly 0
    # on quiet pixels, and rescaled to the unmasked pilot's total energy.
    pilot = np.clip(cv2.GaussianBlur(gain, (0, 0), 2.0), 0.0, 1.0) * (gain > 0)
    energy = float((pilot * pilot).sum())
    if energy > 0:
        pilot *= min(PILOT_GAIN_MAX, float(np.sqrt(pilot.size / energy)))
    return gain, pilot.astype(np.float32)


def block_strength(texture: np.ndarray, block_gain: np.ndarray) -> np.ndarray:
    """Fraction (0, or MIN_STRENGTH..1) of its QIM move each canonical block gets.

    ``texture``: the host block's own texture (see ``BLOCK_TEXTURE``); ``block_gain``: the
    mean pixel gain over the block.
    """
    reach = block_gain * NORM_CAP
    a = np.where(reach < MIN_STRENGTH, 0.0, np.minimum(1.0, reach))
    return np.where(texture < BLOCK_TEXTURE, 0.0, a)


def unmarked_weight(texture: np.ndarray, gain: float) -> np.ndarray:
    """Decoder's weight per block (0: looks unmarked, erase; 1: count fully)."""
    lo, hi = UNMARKED_TEXTURE
    return np.clip((texture / max(gain, 1e-6) - lo) / (hi - lo), 0.0, 1.0)
