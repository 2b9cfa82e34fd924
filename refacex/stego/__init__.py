"""Hiding data in image pixels.

``refacex.stego.robust`` is the robust, invisible channel (survives JPEG, resizing, small
crops and brightness/contrast changes): ``capacity_bytes``, ``embed`` and ``extract``.
"""

from refacex.stego.robust import capacity_bytes, embed, extract

__all__ = ["capacity_bytes", "embed", "extract"]
