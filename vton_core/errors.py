"""Typed errors shared by the model, the preprocessing and the worker.

Every error that a caller can cause carries a stable ``code`` (what the handler returns as
``"<CODE>: <message>"``) and, where it applies, the input ``field`` it concerns. Messages are
written for the client: they never contain file-system paths of the server, tracebacks or image
data. ``CheckpointError`` is the exception: it is an operator's error and names the path.
"""
from __future__ import annotations


class VTONError(Exception):
    """Base class: an error with a stable code and an optional input field name."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def client_message(self) -> str:
        """``"<CODE>: <message>"``, the form the worker returns to clients."""
        return f"{self.code}: {self.message}"


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
