"""refacex — reversible, auditable face anonymisation.

The one-call Python API (defined in ``refacex.api``)::

    refacex.anonymize_image(image, key, ...) -> AnonymizeResult
    refacex.recover_image(image, key, ...) -> RecoverResult

``refacex.anonymize`` and ``refacex.recover`` are the subpackages that do the work (the
methods behind one interface; undoing an anonymisation); no package-level name is bound
to anything but the module of the same name. The CLI (``refacex --help``) is a thin layer
over the same functions.
"""

__version__ = "0.1.0"

# ``refacex.api`` imports only io/ and payload/ at module level (the pipeline and recovery
# inside its functions), so importing it here creates no circle: tests/test_structure.py.
from refacex.api import anonymize_image, recover_image  # noqa: E402

__all__ = ["__version__", "anonymize_image", "recover_image"]
