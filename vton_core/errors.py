"""Typed errors shared by the model, the preprocessing and the worker.

Every error that a caller can cause carries a stable ``code``, the input ``field`` it concerns
(``None`` when it concerns no single input) and a ``message`` written for the client, without the
field. The text a client sees, ``"<CODE>: <field>: <message>"``, is built in one place
(:meth:`VTONError.client_message`); a batch item's error names its full field path through
:meth:`VTONError.with_field`. Messages never contain file-system paths of the server,
tracebacks or image data. ``CheckpointError`` is the exception: it is an operator's error and
names the path.

:meth:`VTONError.client_message` also passes the text through :func:`client_text`: whatever a
client sent and we echo (a field name, say) comes back as printable, valid UTF-8 of bounded
length, so the response can always be sent. A ``CheckpointError``'s client text is a fixed
sentence; its path goes to the log only.
"""
from __future__ import annotations

import copy
import unicodedata

#: Longest client message (characters); longer ones are cut with an ellipsis.
MAX_CLIENT_TEXT = 1000
#: Longest echoed client-supplied name (a field name) in characters.
MAX_ECHOED_NAME = 64
#: Unicode categories dropped from client text: controls, formats (bidi overrides, zero-width
#: characters), surrogates, private use, unassigned code points, line and paragraph separators.
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def client_text(text: object, limit: int = MAX_CLIENT_TEXT) -> str:
    """``text`` made safe to return and to log: valid UTF-8, printable, at most ``limit`` chars.

    Every character in :data:`_UNSAFE_CATEGORIES` (lone surrogates, controls such as newlines,
    bidi overrides) becomes ``?``; a longer text is cut and ends with ``…``.
    """
    s = str(text)
    clean = "".join("?" if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in s)
    return clean if len(clean) <= limit else clean[:limit - 1] + "…"


def echoed_name(name: object) -> str:
    """A client-supplied name (a JSON key) as it may appear in a message or a ``field``."""
    return client_text(name if isinstance(name, str) else repr(name), MAX_ECHOED_NAME)


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
        """``"<CODE>: <field>: <message>"``, the form the worker returns to clients (see
        :func:`client_text`)."""
        return client_text(f"{self.code}: {self}")

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
    """A checkpoint file is missing, unreadable or not in the official format.

    Its message names the path for the operator's log; clients get :data:`CLIENT_TEXT` only.
    """

    code = "CHECKPOINT_ERROR"
    #: What a client sees: no server path, no file name.
    CLIENT_TEXT = ("the worker's model checkpoints are missing or invalid; the operator has the "
                   "details in the worker log")

    def client_message(self) -> str:
        return client_text(f"{self.code}: {self.CLIENT_TEXT}")


class JobCancelled(VTONError):
    """The job was cancelled or timed out on RunPod; its work stopped at the next stage."""

    code = "CANCELLED"
