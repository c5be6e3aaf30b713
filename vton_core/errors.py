"""Typed errors shared by the model, the preprocessing and the worker.

Every error that a caller can cause carries a stable ``code``, the input ``field`` it concerns
(``None`` when it concerns no single input) and a ``message`` written for the client, without the
field. The text a client sees, ``"<CODE>: <field>: <message>"``, is built in one place
(:meth:`VTONError.client_message`); a batch item's error names its full field path through
:meth:`VTONError.with_field`. Messages never contain file-system paths of the server,
tracebacks or image data. ``CheckpointError`` is the exception: it is an operator's error and
names the path.
"""
from __future__ import annotations

import copy


class VTONError(Exception):
    """Base class: an error with a stable ``code``, an optional input ``field`` and a ``message``.

    Subclasses fix the code; ``VTONError(message)`` itself is ``INTERNAL``.
    """

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        """``"<field>: <message>"`` (or the message alone when no field applies)."""
        return f"{self.field}: {self.message}" if self.field else self.message

    def client_message(self) -> str:
        """``"<CODE>: <field>: <message>"``, the form the worker returns to clients."""
        return f"{self.code}: {self}"

    def with_field(self, field: str | None) -> "VTONError":
        """The same error (same type and code) about another field, e.g. ``pairs[2].cloth_mask``."""
        other = copy.copy(self)
        other.field = field
        return other


class InvalidInput(VTONError):
    """A field is missing, of the wrong type, or has an unsupported value."""

    code = "INVALID_INPUT"


class InvalidImage(VTONError):
    """Bytes that are not a decodable still image (or a decodable but unusable one)."""

    code = "INVALID_IMAGE"


class ImageTooLarge(VTONError):
    """An image (encoded or decoded) exceeds the configured limits."""

    code = "IMAGE_TOO_LARGE"


class NoPerson(VTONError):
    """No usable person in the person image (none found, too small, or cut off)."""

    code = "NO_PERSON"


class NoCloth(VTONError):
    """No garment found in the cloth image."""

    code = "NO_CLOTH"


class BatchTooLarge(VTONError):
    """More items in one job than the configured limit."""

    code = "BATCH_TOO_LARGE"


class CheckpointError(VTONError):
    """A checkpoint file is missing, unreadable or not in the official format."""

    code = "CHECKPOINT_ERROR"
