"""The worker process's logging: one format and level (LOG_LEVEL) for our lines and the runpod
SDK's, which are stripped of payloads.

The SDK logs through ``RunPodLogger``, which prints to stdout at a level of its own
(``RUNPOD_LOG_LEVEL``, default DEBUG) and writes whole jobs into the log: "Retrieved local job"
(the input, photos included), "Handler output" and "run_job return" (the output, result images
included), "Job result" at INFO. :func:`route_sdk_logging` sends every SDK line to the Python
logger ``runpod`` instead, so that ``LOG_LEVEL`` decides what is printed, and removes payloads
first (:func:`redact`): those lines keep their label and say how long the payload was.
"""
from __future__ import annotations

import logging
import re
import sys

from vton_core.errors import client_text

#: SDK messages that carry a whole job input or output after this label.
PAYLOAD_LABELS = ("Retrieved local job:", "Handler output:", "run_job return:", "Job result:",
                  "Stream output:", "Async Generator output:", "Generator output:",
                  "Response content is not valid JSON.")
#: A run of base64 text this long is image data in any other message (about 150 bytes).
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{200,}={0,2}")
#: RunPodLogger's level names → ``logging`` levels ("TIP" is its hint for developers).
SDK_LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
              "TIP": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}
#: Longest SDK line passed on (characters), after redaction.
MAX_LINE_CHARS = 2000

log = logging.getLogger("runpod")


def redact(message: object) -> str:
    """An SDK log message without payloads: after a :data:`PAYLOAD_LABELS` label only the
    payload's length is kept, base64 runs elsewhere are replaced, and the line is bounded."""
    text = str(message)
    for label in PAYLOAD_LABELS:
        at = text.find(label)
        if at >= 0:
            rest = len(text) - at - len(label)
            return f"{text[:at + len(label)]} <{rest} characters of job data not logged>"
    text = _BASE64_RUN.sub(lambda m: f"<{len(m.group())} characters of base64 not logged>", text)
    return client_text(text, MAX_LINE_CHARS)


def _log(message, message_level: str = "INFO", job_id=None) -> None:
    level = SDK_LEVELS.get(str(message_level).upper(), logging.INFO)
    if not log.isEnabledFor(level):
        return
    prefix = f"{client_text(job_id, 128)} | " if job_id else ""
    log.log(level, "%s%s", prefix, redact(message))


def route_sdk_logging() -> None:
    """Send the SDK's log lines (every module shares one ``RunPodLogger``) to the ``runpod``
    logger, redacted. Idempotent; call it after ``logging`` is configured."""
    from runpod.serverless.modules.rp_logger import RunPodLogger

    RunPodLogger().log = _log


def configure_logging(level: str) -> None:
    """One line per record on stderr at ``level`` (LOG_LEVEL), the SDK's lines included."""
    logging.basicConfig(level=level, stream=sys.stderr, force=True,   # replaces the SDK's own
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("cpvton", "runpod"):
        logging.getLogger(name).setLevel(level)
    route_sdk_logging()
