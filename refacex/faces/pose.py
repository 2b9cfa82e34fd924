"""Head pose (yaw, pitch, roll) from 68 landmarks by PnP against a generic 3D head.

The 14 reference points are a standard mean 3D face (brow corners, eye corners, nose
wings, mouth corners, lower lip, chin) expressed in the camera's axes (x right, y down,
z away from the camera), so a frontal face has the identity rotation. The focal length
is assumed from the face, not the image (25 inter-ocular distances, i.e. a portrait
taken from ~1.6 m): tight crops such as LFW's 250 px faces would otherwise be solved
with an absurdly wide lens and exaggerated perspective.
"""

from __future__ import annotations

import cv2
import numpy as np

from refacex.faces.types import Pose

#: The 14 of the 68 points the PnP pose reads (brows, eye corners, nose wings, mouth, chin).
PNP_POINTS = [17, 21, 22, 26, 36, 39, 42, 45, 31, 35, 48, 54, 57, 8]
_MODEL = -np.array([
    [6.825897, 6.760612, 4.402142], [1.330353, 7.122144, 6.903745],
    [-1.330353, 7.122144, 6.903745], [-6.825897, 6.760612, 4.402142],
    [5.311432, 5.485328, 3.987654], [1.789930, 5.393625, 4.413414],
    [-1.789930, 5.393625, 4.413414], [-5.311432, 5.485328, 3.987654],
    [2.005628, 1.409845, 6.165652], [-2.005628, 1.409845, 6.165652],
    [2.774015, -2.080775, 5.048531], [-2.774015, -2.080775, 5.048531],
    [0.000000, -3.116408, 6.097667], [0.000000, -7.415691, 4.070434],
], dtype=np.float64)


def estimate_pose(landmarks: np.ndarray, shape_hw: tuple[int, int]) -> Pose:
    h, w = shape_hw
    lm = np.asarray(landmarks, np.float64)
    iod = float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))
    f = max(float(max(h, w)), 25.0 * iod)
    cam = np.array([[f, 0, w / 2.0], [0, f, h / 2.0], [0, 0, 1]], np.float64)
    pts = lm[PNP_POINTS]
    ok, rvec, _ = cv2.solvePnP(_MODEL, pts, cam, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return Pose(float("nan"), float("nan"), float("nan"))
    r, _ = cv2.Rodrigues(rvec)
    # R = Rz(roll) @ Ry(yaw) @ Rx(pitch)
    yaw = np.degrees(np.arcsin(-np.clip(r[2, 0], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    return Pose(yaw=float(-yaw), pitch=float(-pitch), roll=float(roll))
