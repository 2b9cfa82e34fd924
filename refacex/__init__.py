"""refacex — reversible, auditable face anonymisation.

The public Python API is re-exported here as the pipeline grows; the CLI
(``refacex --help``) is a thin layer over it.
"""

__version__ = "0.1.0"

# Both names are subpackages whose modules are callable (see anonymize/__init__.py):
# refacex.anonymize(image, key) and refacex.recover(image, key) are the Python API.
from refacex import anonymize, recover  # noqa: E402

__all__ = ["__version__", "anonymize", "recover"]
