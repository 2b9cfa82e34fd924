"""Anonymisation methods behind one interface (``Anonymizer.apply(img, ctx)``).

``get_method(name)`` is the router; the CLI's ``--method`` takes these names.
"""

from __future__ import annotations

from refacex.anonymize.base import CROP_PADDING, CROP_SIZE, Anonymizer, FaceContext
from refacex.anonymize.baselines import BlurAnonymizer, MaskAnonymizer, PixelateAnonymizer


def _swap(strength: float = 1.0, **options) -> Anonymizer:
    from refacex.anonymize.swap import SwapAnonymizer

    return SwapAnonymizer(strength=strength, **options)


METHODS = {
    "blur": BlurAnonymizer,
    "pixelate": PixelateAnonymizer,
    "mask": lambda strength=1.0: MaskAnonymizer(),
    "swap": _swap,
}


def get_method(name: str, strength: float = 1.0, **options) -> Anonymizer:
    """The method called ``name``; ``options`` go to its constructor (e.g. swap's
    ``verify=False``)."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name](strength=strength, **options)


__all__ = ["CROP_PADDING", "CROP_SIZE", "METHODS", "Anonymizer", "FaceContext", "get_method"]
