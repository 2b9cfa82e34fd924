"""The fuzz target in CI: 2,400 seeded mutants through inspect, decode and recover, zero
tracebacks (docs/security.md has the counts of a longer run)."""

from __future__ import annotations

import os

from fuzz_payloads import fuzz


def test_no_mutated_payload_raises_anything_but_a_refacex_error():
    n = int(os.environ.get("REFACEX_FUZZ_N", 2400))
    f = fuzz(n, seed=1)
    assert f.cases == n
    assert not f.crashes, f.crashes[0]
    # The mutants really reach the parsers and the restore code, not only the AEAD.
    assert f.by_outcome.get("restored:vault", 0) + f.by_outcome.get("restored", 0) > 0
    assert len(f.by_outcome) >= 4
