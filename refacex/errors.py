"""Exceptions users see.

Every failure a user can cause (bad file, missing model, wrong key, tampered payload)
is a ``RefacexError`` subclass with a one-line message; the CLI prints the message and
exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class RefacexError(Exception):
    """Base class: the message is meant for the user, on one line."""

    exit_code = 2


class ImageError(RefacexError):
    """The input is not a readable image (missing, empty, truncated, not an image, too big)."""


class ModelMissingError(RefacexError):
    """A weight file is absent from the cache or fails its sha256 check."""


class NoFaceError(RefacexError):
    """An operation that needs a face found none."""


class OutputError(RefacexError):
    """The output location cannot be written."""


class PayloadError(RefacexError):
    """Base class for recovery-payload problems."""


class NoPayloadError(PayloadError):
    """The image carries no refacex payload."""


class WrongKeyError(PayloadError):
    """The payload is intact but the key given does not open it."""


class TamperedPayloadError(PayloadError):
    """The payload was modified after it was written (authentication failed)."""


class UntrustedPayloadError(PayloadError):
    """The payload opens but no trusted site made it (unsigned, or signed by a stranger):
    restoring it would paste back whatever a holder of the public key chose."""


class BindingError(PayloadError):
    """The vault is genuine but belongs to another image (its face regions differ)."""


class UnsupportedPayloadError(PayloadError):
    """The payload is from a format version this release does not read."""
