"""``refacex demo``: run the main job on the bundled sample photos.

The samples are real photos taken from registry packages at install time (never
committed): insightface's group photo ``t1.jpg`` and ``Tom_Hanks_54745.png``, and
scikit-image's astronaut.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from refacex.faces import Face, FaceAnalyzer
from refacex.faces.recognizers import fingerprint
from refacex.io.images import read_image, write_bytes_atomic, write_image
from refacex.models import SAMPLES, resolve
from refacex.models.registry import DEMO_SAMPLES


def annotate(img: np.ndarray, faces: list[Face]) -> np.ndarray:
    """Draw boxes, 5 points, 68 landmarks and pose on a copy of ``img``."""
    vis = img.copy()
    thick = max(1, round(max(img.shape[:2]) / 600))
    for i, f in enumerate(faces):
        x, y, w, h = (int(round(v)) for v in f.box)
        cv2.rectangle(vis, (x, y), (x + w, y + h), (0, 200, 0), thick)
        if f.landmarks is not None:
            for p in f.landmarks:
                cv2.circle(vis, (int(p[0]), int(p[1])), thick, (255, 200, 0), -1)
        for p in f.kps:
            cv2.circle(vis, (int(p[0]), int(p[1])), thick + 1, (0, 0, 255), -1)
        label = f"#{i} {f.score:.2f}"
        if f.pose is not None:
            label += f" y{f.pose.yaw:+.0f} p{f.pose.pitch:+.0f} r{f.pose.roll:+.0f}"
        cv2.putText(vis, label, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 255, 255), thick, cv2.LINE_AA)
    return vis


def run_analysis_demo(out_dir: Path, log=print) -> dict:
    """Detect and describe faces on every sample; write annotated images + JSON."""
    analyzer = FaceAnalyzer()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in DEMO_SAMPLES:
        asset = SAMPLES[name]
        img = read_image(resolve(name))
        faces = analyzer.analyze(img, recognizers=("sface", "dlib"))
        write_image(out_dir / f"{Path(asset.filename).stem}_faces.png", annotate(img, faces))
        report[asset.filename] = [
            {**f.to_dict(), "fingerprint": {k: fingerprint(v) for k, v in f.embeddings.items()}}
            for f in faces
        ]
        log(f"{asset.filename}: {len(faces)} face(s)")
    write_bytes_atomic(out_dir / "faces.json", json.dumps(report, indent=2).encode())
    return report
