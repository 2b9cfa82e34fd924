"""Hiding data in image pixels.

``refacex.stego.robust`` is the robust, invisible channel (survives JPEG, resizing, small
crops and brightness/contrast changes): ``capacity_bytes``, ``image_capacity``, ``embed``
and ``extract``; ``masking`` decides where its mark may go, ``visibility`` measures how
much it shows on flat areas.
"""

from refacex.stego.robust import capacity_bytes, embed, extract, image_capacity

__all__ = ["capacity_bytes", "embed", "extract", "image_capacity"]
