"""Face-region masks from 68 landmarks.

The mask decides which pixels an anonymiser may change and which the payload must be
able to restore, so it errs on covering the whole identity-bearing region: jaw line,
cheeks and a forehead band above the brows (estimated from the brow-to-nose distance,
since the 68 points stop at the brows).
"""

from __future__ import annotations

import cv2
import numpy as np

from refacex.faces.landmarks import BROW_L, BROW_R, EYE_L, EYE_R, JAW, MOUTH_INNER


def face_hull(lm: np.ndarray, forehead: float = 0.6) -> np.ndarray:
    """Polygon around the face: jaw + brows lifted towards the hairline."""
    lm = np.asarray(lm, np.float32)
    brows = np.vstack([lm[BROW_R], lm[BROW_L]])
    nose_top = lm[27]
    chin = lm[8]
    # "Up" is perpendicular to the eye line, robust to roll.
    eye_vec = lm[45] - lm[36]
    up = np.array([eye_vec[1], -eye_vec[0]], np.float32)
    up /= np.linalg.norm(up) + 1e-9
    if np.dot(up, nose_top - chin) < 0:
        up = -up
    lift = forehead * float(np.linalg.norm(chin - nose_top)) * 0.5
    top = brows + up * lift
    return np.vstack([lm[JAW], top[::-1]]).astype(np.float32)


def face_mask(shape_hw: tuple[int, int], lm: np.ndarray, forehead: float = 0.6) -> np.ndarray:
    """uint8 mask (255 inside the face) of the given image shape."""
    mask = np.zeros(shape_hw, np.uint8)
    hull = cv2.convexHull(face_hull(lm, forehead).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA)
    return mask


def part_mask(shape_hw: tuple[int, int], lm: np.ndarray, dilate: int = 0) -> np.ndarray:
    """Mask of the eyes and the mouth interior — the parts whose motion an identity swap
    must keep from the original (gaze, blinks, teeth, tongue)."""
    mask = np.zeros(shape_hw, np.uint8)
    for part in (EYE_R, EYE_L, MOUTH_INNER):
        cv2.fillPoly(mask, [np.round(lm[part]).astype(np.int32)], 255, lineType=cv2.LINE_AA)
    if dilate > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                          (2 * dilate + 1, 2 * dilate + 1)))
    return mask
