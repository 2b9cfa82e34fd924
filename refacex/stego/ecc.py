"""Error correction for the robust channel: a K=7 rate-1/2 convolutional code.

Why a convolutional code and not Reed-Solomon: the robust channel's decoder produces
*soft* decisions (how close each received coefficient lies to the lattice of a 0 or a 1),
and a soft-decision Viterbi decoder gains roughly 2 dB over hard-decision decoding. Errors
after JPEG/resizing are spread pseudo-randomly over the frame by the position hashing in
``robust.py``, so there are no long bursts that would favour a byte-oriented RS code.

The code is the NASA/CCSDS standard (generators 133 and 171 octal, constraint length 7),
terminated with six zero tail bits so the decoder knows the final state.
Implemented with numpy: the Viterbi loop is over time steps only; the 64 states are
handled as vectors, so a 4000-bit frame decodes in a few tens of milliseconds.
"""

from __future__ import annotations

import numpy as np

K = 7
N_STATES = 1 << (K - 1)
G1 = 0o133
G2 = 0o171
TAIL = K - 1


def _parity(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    out = np.zeros_like(x)
    while np.any(x):
        out ^= x & 1
        x >>= 1
    return out


# Transition tables. State = last K-1 input bits, newest bit in the MSB position.
_states = np.arange(N_STATES, dtype=np.int64)
# Register for input bit b from state s: (b << (K-1)) | s  (newest bit at MSB).
_REG0 = _states
_REG1 = (1 << (K - 1)) | _states
_OUT0 = np.stack([_parity(_REG0 & G1), _parity(_REG0 & G2)], axis=1)  # (64, 2)
_OUT1 = np.stack([_parity(_REG1 & G1), _parity(_REG1 & G2)], axis=1)
_NEXT0 = _REG0 >> 1
_NEXT1 = _REG1 >> 1
# Predecessors of each next state: ns = (b << 5) | (s >> 1) -> s = ((ns << 1) & 63) | lsb.
_ns = np.arange(N_STATES)
_PRED_A = ((_ns << 1) & (N_STATES - 1)) | 0
_PRED_B = ((_ns << 1) & (N_STATES - 1)) | 1
_IN_BIT = _ns >> (K - 2)  # input bit that leads into ns
_OUT_A = np.where(_IN_BIT[:, None] == 1, _OUT1[_PRED_A], _OUT0[_PRED_A])  # (64, 2)
_OUT_B = np.where(_IN_BIT[:, None] == 1, _OUT1[_PRED_B], _OUT0[_PRED_B])
# Signs (+1 for a coded 0, -1 for a coded 1) used to correlate with soft values.
_SIGN_A = (1 - 2 * _OUT_A).astype(np.float64)
_SIGN_B = (1 - 2 * _OUT_B).astype(np.float64)


def coded_length(n_bits: int) -> int:
    """Number of coded bits for ``n_bits`` information bits (tail included)."""
    return 2 * (n_bits + TAIL)


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """Encode a 0/1 array; returns ``coded_length(len(bits))`` 0/1 values (uint8)."""
    bits = np.concatenate([np.asarray(bits, dtype=np.int64), np.zeros(TAIL, np.int64)])
    # Register value at step t: bits[t] at MSB, bits[t-1] ... bits[t-6] below.
    padded = np.concatenate([np.zeros(K - 1, np.int64), bits])
    reg = np.zeros(len(bits), dtype=np.int64)
    for j in range(K):  # bit t-j at position (K-1-j)
        reg |= padded[K - 1 - j : K - 1 - j + len(bits)] << (K - 1 - j)
    out = np.empty((len(bits), 2), dtype=np.uint8)
    out[:, 0] = _parity(reg & G1)
    out[:, 1] = _parity(reg & G2)
    return out.reshape(-1)


def viterbi_decode(soft: np.ndarray, n_bits: int) -> np.ndarray:
    """Soft-decision Viterbi decoding.

    ``soft`` holds one value per coded bit: positive means "probably 0", negative
    "probably 1", zero means erased; magnitudes are reliabilities. Returns ``n_bits``
    decoded information bits (uint8). The trellis starts and ends in state 0.
    """
    steps = n_bits + TAIL
    s = np.asarray(soft, dtype=np.float64).reshape(steps, 2)
    metric = np.full(N_STATES, -1e18)
    metric[0] = 0.0
    decisions = np.empty((steps, N_STATES), dtype=bool)
    bm_a_all = s @ _SIGN_A.T  # (steps, 64): branch metric from predecessor A
    bm_b_all = s @ _SIGN_B.T
    for t in range(steps):
        ma = metric[_PRED_A] + bm_a_all[t]
        mb = metric[_PRED_B] + bm_b_all[t]
        choose_b = mb > ma
        decisions[t] = choose_b
        metric = np.where(choose_b, mb, ma)
    state = 0
    out = np.empty(steps, dtype=np.uint8)
    for t in range(steps - 1, -1, -1):
        out[t] = state >> (K - 2)
        state = int(_PRED_B[state] if decisions[t, state] else _PRED_A[state])
    return out[:n_bits]
