"""Bytes into the worker: base64 and URL inputs, their byte and pixel limits.

Everything here is a pure function of its arguments (the settings are passed in), so it can be
tested without the model. Errors are :mod:`vton_core.errors` types whose messages name the field and never
echo a URL's query string, a server path or image data.
"""
from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import logging
import re
import time
import warnings
from urllib.parse import urlsplit

from PIL import Image

from vton_core.errors import ImageTooLarge, InvalidImage, InvalidInput, VTONError, client_text
from vton_core.images import check_dimensions
from worker.schema import ImageRef

log = logging.getLogger("cpvton.worker")

#: ``data:image/png;base64,`` and friends (optional parameters); group 1 is the media type.
_DATA_URI = re.compile(r"^data:([\w.+/-]*)(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
#: Formats accepted for input images, checked from the header before decoding (an allowlist:
#: Pillow's rarer readers, e.g. EPS through Ghostscript, are never reached by client bytes).
#: JPEG includes MPO (phone cameras); animated GIF/WebP are read as their first frame.
INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_B64_ALPHABET = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_WHITESPACE = re.compile(r"\s+")
#: Chunk size for streamed downloads.
_CHUNK_BYTES = 64 * 1024
_USER_AGENT = "cpvton-runpod-worker/1.0"
#: Longest URL written to the log (after redaction).
MAX_LOGGED_URL = 300

class FetchFailed(VTONError):
    """A ``*_url`` input could not be downloaded (HTTP error, timeout, unreachable host)."""

    code = "FETCH_FAILED"


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def _strip_b64(text: str) -> str:
    """Remove a ``data:`` URI prefix and whitespace; map the URL-safe alphabet to the standard."""
    body = _DATA_URI.sub("", text.strip(), count=1)
    return _WHITESPACE.sub("", body).replace("-", "+").replace("_", "/")


def _decoded_length(body: str) -> int:
    """Bytes that the base64 ``body`` (prefix and whitespace stripped) decodes to, without
    decoding; padding does not count, so padded and unpadded forms of the same bytes agree."""
    return len(body.rstrip("=")) * 3 // 4


def encoded_size(ref: ImageRef) -> int:
    """Bytes the base64 text of ``ref`` decodes to, without decoding."""
    if ref.b64 is None:
        return 0
    return _decoded_length(_strip_b64(ref.b64))


def decode_base64(ref: ImageRef, *, max_bytes: int) -> bytes:
    """Decode ``ref.b64`` (raw or data URI) to bytes, refusing it above ``max_bytes`` first.

    A data URI must declare an ``image/*`` media type (or none); the bytes themselves decide the
    format (``image/jpeg`` holding a PNG is fine), within :data:`INPUT_FORMATS`.
    """
    match = _DATA_URI.match((ref.b64 or "").strip())
    if match and match.group(1) and not match.group(1).lower().startswith("image/"):
        raise InvalidImage("data URI media type is not image/*", field=ref.field)
    body = _strip_b64(ref.b64 or "")
    size = _decoded_length(body)
    if size > max_bytes:
        raise ImageTooLarge(f"{size} bytes exceeds the limit of {max_bytes} bytes",
                            field=ref.field)
    body = body.rstrip("=")
    if not body or len(body) % 4 == 1 or not _B64_ALPHABET.match(body):
        raise InvalidImage("not valid base64", field=ref.field)
    try:
        data = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage("not valid base64", field=ref.field) from None
    if not data:
        raise InvalidImage("decodes to no data", field=ref.field)
    return data


def image_size(data: bytes, *, field: str, max_pixels: int) -> tuple:
    """(width, height) read from the image header; refuses non-images and images above the limit.

    Only the header is parsed: the pixel limit holds before any pixel data is decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=INPUT_FORMATS) as im:
                width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge("image dimensions are too large", field=field) from None
    except Exception:
        raise InvalidImage("not a decodable image", field=field) from None
    check_dimensions(width, height, field=field, max_pixels=max_pixels)
    return width, height


def redact_url(url: str) -> str:
    """``scheme://host/path`` with no credentials, query string or fragment (safe to log)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<malformed url>"
    return client_text(f"{parts.scheme}://{host}{port}{parts.path}", MAX_LOGGED_URL)


def _literal_address_refused(host: str) -> bool:
    """True when ``host`` is an IP literal that is not globally routable (our own first check)."""
    from runpod.serverless.utils import rp_ssrf

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return rp_ssrf._ssrf_protection_enabled() and not rp_ssrf.is_safe_address(host)


def fetch_url(ref: ImageRef, *, timeout_s: float, max_bytes: int) -> bytes:
    """Download ``ref.url`` with the runpod SDK's SSRF-safe getter, within time and size limits.

    The SDK resolves the host, refuses loopback, private, link-local (cloud metadata), CGNAT,
    reserved and multicast addresses, pins the connection to the checked address and checks
    every redirect hop again. Its escape hatch ``RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS=true`` is
    for tests against a loopback server only. ``timeout_s`` bounds the whole download.
    """
    from runpod.serverless.utils import rp_ssrf

    field, url = ref.field, ref.url or ""
    host = urlsplit(url).hostname or ""
    if _literal_address_refused(host):
        raise InvalidInput("address not allowed (loopback, private or link-local)",
                           field=field)
    deadline = time.monotonic() + timeout_s
    try:
        response = rp_ssrf.safe_get(url, stream=True, timeout=timeout_s, max_bytes=max_bytes,
                                    headers={"User-Agent": _USER_AGENT})
    except rp_ssrf.SSRFError as err:
        text = str(err)
        if "size cap" in text:
            raise ImageTooLarge(f"download exceeds {max_bytes} bytes", field=field) from None
        if "non-public address" in text:
            raise InvalidInput("address not allowed (loopback, private or link-local)",
                               field=field) from None
        if "could not resolve" in text or "no addresses" in text:
            raise FetchFailed("host could not be resolved", field=field) from None
        if "redirect" in text:
            raise FetchFailed("too many or invalid redirects", field=field) from None
        raise FetchFailed("URL refused by the download policy", field=field) from None
    except Exception as err:  # requests' connection errors and timeouts
        log.info("download failed field=%s url=%s error=%s", field, redact_url(url),
                 type(err).__name__)
        if _is_timeout(err):
            raise FetchFailed(f"download took longer than {timeout_s:g} s",
                              field=field) from None
        raise FetchFailed(f"download failed ({type(err).__name__})", field=field) from None
    with response:
        if response.status_code >= 400:
            raise FetchFailed(f"server answered HTTP {response.status_code}", field=field)
        data = _read_body(response, field=field, deadline=deadline, timeout_s=timeout_s,
                          max_bytes=max_bytes)
    if not data:
        raise InvalidImage("download is empty", field=field)
    return data


def _is_timeout(err: BaseException) -> bool:
    import requests
    import urllib3
    return isinstance(err, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError))


def _read_body(response, *, field: str, deadline: float, timeout_s: float, max_bytes: int) -> bytes:
    """The response body, within ``max_bytes`` and before ``deadline`` (``time.monotonic``).

    Each socket read waits at most the time left, and returns what has arrived (``read1``), so a
    server that stalls or trickles one byte at a time cannot hold the worker past the deadline.
    The size is counted after content decoding, so a compressed bomb stops at ``max_bytes`` too.
    """
    raw = response.raw
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    read = getattr(raw, "read1", None) or raw.read
    chunks, total = [], 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchFailed(f"download took longer than {timeout_s:g} s", field=field)
        if sock is not None:
            try:
                sock.settimeout(max(remaining, 0.01))
            except OSError:
                sock = None
        try:
            chunk = read(_CHUNK_BYTES, decode_content=True)
        except Exception as err:  # socket timeout, reset, bad encoding, ...
            if _is_timeout(err) or time.monotonic() >= deadline:
                raise FetchFailed(f"download took longer than {timeout_s:g} s",
                                  field=field) from None
            raise FetchFailed(f"download failed ({type(err).__name__})",
                              field=field) from None
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise ImageTooLarge(f"download exceeds {max_bytes} bytes", field=field)
        chunks.append(chunk)


def load_bytes(ref: ImageRef, *, max_bytes: int, url_timeout_s: float, url_max_bytes: int) -> bytes:
    """The encoded bytes of one image input, from base64 or from its URL."""
    if ref.url is not None:
        return fetch_url(ref, timeout_s=url_timeout_s, max_bytes=url_max_bytes)
    return decode_base64(ref, max_bytes=max_bytes)
