"""The one interface every anonymisation method implements.

A method edits faces one at a time, in place, inside the face's *edit region*: the
canonical anonymiser crop (``CROP_SIZE`` px, ``CROP_PADDING`` context) mapped back to the
image. Keeping all methods inside that region is what lets the vault restore any method's
output exactly (it stores the original pixels of the region) and lets the robust tier
describe every face with the same geometry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from refacex.faces.align import align_matrix, crop_region
from refacex.faces.types import Face

#: Canonical anonymiser crop: 256 px with 25 % context on each side of the ArcFace box.
CROP_SIZE = 256
CROP_PADDING = 0.25


@dataclass
class FaceContext:
    """Everything a method may use about one face (landmarks are always filled)."""

    face: Face
    matrix: np.ndarray  # image -> canonical crop, 2x3
    rect: tuple[int, int, int, int]  # x, y, w, h of the edit region in the image
    donor_key: bytes | None = None  # keyed selection of donor identities
    info: dict = field(default_factory=dict)  # method fills e.g. {"donor": "d07"}
    #: Donor to use (bank index) instead of the keyed choice: a video track keeps the
    #: donor its first keyframe chose, so one person keeps one identity (refacex.video).
    donor_index: int | None = None

    @classmethod
    def for_face(cls, face: Face, shape_hw: tuple[int, int],
                 donor_key: bytes | None = None) -> FaceContext:
        m = align_matrix(face.kps, CROP_SIZE, CROP_PADDING)
        return cls(face=face, matrix=m, rect=crop_region(m, CROP_SIZE, shape_hw),
                   donor_key=donor_key)


class Anonymizer(ABC):
    """Replace or hide the identity of one face; must write only inside ``ctx.rect``."""

    name: str
    #: True if the method replaces the identity with another one (vs. destroying detail).
    replaces_identity: bool = False

    @abstractmethod
    def apply(self, img: np.ndarray, ctx: FaceContext) -> None:
        """Anonymise ``ctx.face`` in ``img`` (BGR uint8), in place."""
