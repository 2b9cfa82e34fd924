"""Quality mode of the photoreal swap: re-render the keyed donor with the face's own head
pose, mouth and eye opening before it is warped in.

Why: the shipped donors are near-frontal, mostly closed-mouth faces; warping one onto a
turned, laughing or squinting face stretches its texture (a smeared cheek, teeth-less
lips). MobileStyleGAN's style space has near-linear directions for these attributes
(fitted by ``scripts/build_gan_donors.py`` on the bank's own measurements:
``directions``, ``direction_attrs``), so the donor's style ``w`` is moved by the measured
difference and rendered again — the same person (of nobody), posed like the face.

Costs: OpenVINO (the ``[donors]`` extra) and the 32 MB synthesis network from the
``random-face`` wheel (fetched on first use), and ~1 s per render on two cores; renders
are cached per (donor, rounded target). Licence: MobileStyleGAN imitates NVIDIA's
StyleGAN2-FFHQ, whose licence is NON-COMMERCIAL (README, model table).
"""

from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np

from refacex.anonymize.base import CROP_PADDING, CROP_SIZE
from refacex.anonymize.donors import GanDonorBank
from refacex.errors import RefacexError
from refacex.faces.align import transform_points, warp_face
from refacex.faces.analysis import FaceAnalyzer
from refacex.models.cache import ensure

#: Largest edit per attribute (beyond it the linear direction stops holding identity).
_MAX_EDIT = {"yaw": 25.0, "pitch": 15.0, "mouth_open": 0.4, "eye_open": 0.15,
             "p_male": 0.0, "age": 0.0}
#: Working size of the rendered face (the 1024 px output is reduced first).
_RENDER_SIZE = 512


class DonorRenderer:
    """Renders bank donors re-posed and re-expressed (see the module docstring)."""

    def __init__(self, bank: GanDonorBank, threads: int = 2, cache_size: int = 32) -> None:
        if bank.directions is None or bank.styles is None:
            raise RefacexError("this donor bank carries no styles/directions to render from")
        try:
            import openvino as ov
        except ImportError as exc:
            raise RefacexError(
                "--render-donors needs OpenVINO: pip install 'refacex[donors]'") from exc
        xml, weights = ensure("mobilestylegan_xml"), ensure("mobilestylegan_bin")
        core = ov.Core()
        self._net = core.compile_model(core.read_model(model=str(xml), weights=str(weights)),
                                       "CPU", {"INFERENCE_NUM_THREADS": threads})
        self.bank = bank
        self._analyzer = FaceAnalyzer(score_threshold=0.5)
        self._cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray] | None] = OrderedDict()
        self._cache_size = cache_size

    def edit(self, k: int, target: dict[str, float]) -> np.ndarray:
        """Attribute change (``bank.direction_attrs`` order) that takes donor ``k`` to
        ``target``, each clamped to ``_MAX_EDIT``; attributes absent from ``target``
        are not edited."""
        have = self.bank.donor_attributes(k)
        delta = []
        for name in self.bank.direction_attrs:
            d = float(target[name] - have[name]) if name in target else 0.0
            lim = _MAX_EDIT.get(name, 0.0)
            delta.append(float(np.clip(d, -lim, lim)))
        return np.array(delta, np.float32)

    def render(self, k: int, target: dict[str, float]) -> tuple[np.ndarray, np.ndarray] | None:
        """(canonical crop, its 68 landmarks) of donor ``k`` edited towards ``target``, or
        None when the edited render has no clear face (the caller keeps the stored one)."""
        delta = self.edit(k, target)
        key = (k, *np.round(delta, 2).tolist())
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        w = self.bank.styles[k] + delta @ self.bank.directions
        out = self._net(w[None].astype(np.float32))[0][0]
        img = np.clip((np.clip(out, -1, 1) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        img = cv2.resize(img.transpose(1, 2, 0)[:, :, ::-1], (_RENDER_SIZE, _RENDER_SIZE),
                         interpolation=cv2.INTER_AREA)
        faces = self._analyzer.detector.detect(img)
        result = None
        if faces:
            face = max(faces, key=lambda f: f.box[2] * f.box[3])
            if face.score >= 0.8:
                lm = self._analyzer.landmarker.predict(img, face)
                al = warp_face(img, face.kps, CROP_SIZE, CROP_PADDING)
                result = (al.crop, transform_points(al.matrix, lm).astype(np.float32))
        self._cache[key] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result
