"""Bytes in and out of the worker: base64 and URL inputs, limits, encoded outputs, S3 delivery.

Everything here is a pure function of its arguments (the settings are passed in), so it can be
tested without the model. Errors are :mod:`errors` types whose messages name the field and never
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
import uuid
import warnings
from typing import Optional
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageDraw

from api_schema import ImageRef
from errors import ImageTooLarge, InvalidImage, InvalidInput, VTONError, client_text
from images import check_dimensions

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

MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
#: Longest side each output format can hold (PNG's 2^31 - 1 is beyond any accepted input).
FORMAT_MAX_SIDE = {"png": 2**31 - 1, "jpeg": 65_535, "webp": 16_383}

#: Colours of the 20 LIP labels used by CP-VTON's parse maps (palette of the ``parse`` output).
LIP_PALETTE = (
    (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85),
    (0, 119, 221), (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0),
    (0, 0, 255), (51, 170, 221), (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0),
    (255, 170, 0),
)
#: OpenPose COCO-18 limbs (pairs of keypoint indices) drawn on the pose overlay.
POSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
              (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))


class FetchFailed(VTONError):
    """A ``*_url`` input could not be downloaded (HTTP error, timeout, unreachable host)."""

    code = "FETCH_FAILED"


class ResponseTooLarge(VTONError):
    """The encoded response exceeds MAX_RESPONSE_BYTES and no bucket is configured."""

    code = "RESPONSE_TOO_LARGE"


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
        raise InvalidImage(f"{ref.field}: data URI media type is not image/*", field=ref.field)
    body = _strip_b64(ref.b64 or "")
    size = _decoded_length(body)
    if size > max_bytes:
        raise ImageTooLarge(f"{ref.field}: {size} bytes exceeds the limit of {max_bytes} bytes",
                            field=ref.field)
    body = body.rstrip("=")
    if not body or len(body) % 4 == 1 or not _B64_ALPHABET.match(body):
        raise InvalidImage(f"{ref.field}: not valid base64", field=ref.field)
    try:
        data = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{ref.field}: not valid base64", field=ref.field) from None
    if not data:
        raise InvalidImage(f"{ref.field}: decodes to no data", field=ref.field)
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
        raise ImageTooLarge(f"{field}: image dimensions are too large", field=field) from None
    except Exception:
        raise InvalidImage(f"{field}: not a decodable image", field=field) from None
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
        raise InvalidInput(f"{field}: address not allowed (loopback, private or link-local)",
                           field=field)
    deadline = time.monotonic() + timeout_s
    try:
        response = rp_ssrf.safe_get(url, stream=True, timeout=timeout_s, max_bytes=max_bytes,
                                    headers={"User-Agent": _USER_AGENT})
    except rp_ssrf.SSRFError as err:
        text = str(err)
        if "size cap" in text:
            raise ImageTooLarge(f"{field}: download exceeds {max_bytes} bytes", field=field) from None
        if "non-public address" in text:
            raise InvalidInput(f"{field}: address not allowed (loopback, private or link-local)",
                               field=field) from None
        if "could not resolve" in text or "no addresses" in text:
            raise FetchFailed(f"{field}: host could not be resolved", field=field) from None
        if "redirect" in text:
            raise FetchFailed(f"{field}: too many or invalid redirects", field=field) from None
        raise FetchFailed(f"{field}: URL refused by the download policy", field=field) from None
    except Exception as err:  # requests' connection errors and timeouts
        log.info("download failed field=%s url=%s error=%s", field, redact_url(url),
                 type(err).__name__)
        if _is_timeout(err):
            raise FetchFailed(f"{field}: download took longer than {timeout_s:g} s",
                              field=field) from None
        raise FetchFailed(f"{field}: download failed ({type(err).__name__})", field=field) from None
    with response:
        if response.status_code >= 400:
            raise FetchFailed(f"{field}: server answered HTTP {response.status_code}", field=field)
        data = _read_body(response, field=field, deadline=deadline, timeout_s=timeout_s,
                          max_bytes=max_bytes)
    if not data:
        raise InvalidImage(f"{field}: download is empty", field=field)
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
            raise FetchFailed(f"{field}: download took longer than {timeout_s:g} s", field=field)
        if sock is not None:
            try:
                sock.settimeout(max(remaining, 0.01))
            except OSError:
                sock = None
        try:
            chunk = read(_CHUNK_BYTES, decode_content=True)
        except Exception as err:  # socket timeout, reset, bad encoding, ...
            if _is_timeout(err) or time.monotonic() >= deadline:
                raise FetchFailed(f"{field}: download took longer than {timeout_s:g} s",
                                  field=field) from None
            raise FetchFailed(f"{field}: download failed ({type(err).__name__})",
                              field=field) from None
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise ImageTooLarge(f"{field}: download exceeds {max_bytes} bytes", field=field)
        chunks.append(chunk)


def load_bytes(ref: ImageRef, *, max_bytes: int, url_timeout_s: float, url_max_bytes: int) -> bytes:
    """The encoded bytes of one image input, from base64 or from its URL."""
    if ref.url is not None:
        return fetch_url(ref, timeout_s=url_timeout_s, max_bytes=url_max_bytes)
    return decode_base64(ref, max_bytes=max_bytes)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------
PNG_COMPRESS_LEVEL = 1


def check_output_fits(fmt: str, output_size: str, person_size: tuple, *, model_size: tuple) -> None:
    """Refuse, before any work, a result that ``fmt`` cannot hold (``INVALID_INPUT`` naming
    ``output_format``). The result has the person photo's ``(w, h)`` for ``output_size``
    ``"original"``, ``model_size`` otherwise."""
    w, h = person_size if output_size == "original" else model_size
    limit = FORMAT_MAX_SIDE[fmt]
    if max(w, h) > limit:
        raise InvalidInput(f"output_format: {fmt} holds at most {limit} pixels per side and the "
                           f"result would be {w}x{h}; ask for another output_format or "
                           "output_size model", field="output_format")


def encode_image(image: Image.Image, fmt: str, quality: int) -> bytes:
    """Encode a PIL image as ``png`` (lossless), ``jpeg`` or ``webp`` (``quality`` 1-100)."""
    buf = io.BytesIO()
    if fmt == "png":
        # Level 1: 3x faster than zlib's default 6 on a 768x1024 photo (41 vs 137 ms here) for
        # a file ~17 % larger; still lossless.
        image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=quality)
    else:  # guarded by the schema
        raise ValueError(f"unsupported format {fmt}")
    return buf.getvalue()


def to_pil(image) -> Image.Image:
    """A PIL image from a PIL image or an H×W(×C) array (bool, uint8 or float in [0, 1])."""
    if isinstance(image, Image.Image):
        return image
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(a.astype(np.uint8))


def parse_image(parse: np.ndarray) -> Image.Image:
    """A 256×192 label map as a palette PNG: the pixel values are the labels, shown in colour."""
    im = Image.fromarray(np.asarray(parse, dtype=np.uint8), mode="L").convert("P")
    flat = [c for rgb in LIP_PALETTE for c in rgb]
    im.putpalette(flat + [255, 255, 255] * (256 - len(LIP_PALETTE)))
    return im


def pose_overlay(image: Image.Image, keypoints: np.ndarray) -> Image.Image:
    """Draw the 18 keypoints (x, y, confidence; confidence 0 = missing) and limbs on ``image``."""
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    k = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    radius = max(2, round(min(canvas.size) / 80))
    for a, b in POSE_LIMBS:
        if a < len(k) and b < len(k) and k[a, 2] > 0 and k[b, 2] > 0:
            draw.line([(k[a, 0], k[a, 1]), (k[b, 0], k[b, 1])], fill=(0, 255, 0), width=2)
    for x, y, c in k:
        if c > 0:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 0, 0))
    return canvas


def b64_len(n_bytes: int) -> int:
    """Length of the base64 text of ``n_bytes`` bytes."""
    return (n_bytes + 2) // 3 * 4


class UploadFailed(VTONError):
    """The response was too large to return inline and uploading it to the bucket failed."""

    code = "UPLOAD_FAILED"


#: Lifetime of the presigned URLs returned for uploaded images (the runpod SDK's: 7 days).
PRESIGNED_URL_TTL_S = 7 * 24 * 3600


def bucket_name_for(now: Optional[float] = None) -> str:
    """The bucket the runpod SDK's helper uses, and so do we: ``MM-YY`` of the upload date."""
    return time.strftime("%m-%y", time.gmtime(now))


def _s3_client(bucket):
    """A boto3 S3 client for ``bucket`` (:class:`settings.Bucket`) with bounded time: connect
    and read timeouts of ``bucket.timeout_s`` and ``bucket.attempts`` tries per request."""
    import boto3
    from botocore.config import Config
    from runpod.serverless.utils.rp_upload import extract_region_from_url

    config = Config(signature_version="s3v4", connect_timeout=bucket.timeout_s,
                    read_timeout=bucket.timeout_s,
                    retries={"total_max_attempts": bucket.attempts, "mode": "standard"})
    return boto3.session.Session().client(
        "s3", endpoint_url=bucket.endpoint_url, aws_access_key_id=bucket.access_key_id,
        aws_secret_access_key=bucket.secret_access_key,
        region_name=extract_region_from_url(bucket.endpoint_url), config=config)


def upload_all(encoded: list, *, job_id: str, bucket) -> list:
    """Upload ``(name, bytes, fmt)`` triples under ``<job_id>/`` and return presigned URLs.

    Our own client, not the runpod SDK's helper: that one has no time bounds and falls back to
    writing on the local disk. The first failure stops the job's uploads (:class:`UploadFailed`,
    details in the log); a returned URL is always http(s).
    """
    client = _s3_client(bucket)
    name_of_bucket = bucket_name_for()
    urls = []
    for name, data, fmt in encoded:
        key = f"{job_id}/{name}-{uuid.uuid4().hex[:8]}.{'jpg' if fmt == 'jpeg' else fmt}"
        try:
            client.put_object(Bucket=name_of_bucket, Key=key, Body=data,
                              ContentType=MIME_TYPES[fmt])
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": name_of_bucket, "Key": key},
                ExpiresIn=PRESIGNED_URL_TTL_S)
        except Exception as err:  # botocore's timeouts, connection and HTTP errors
            log.warning("upload failed job=%s endpoint=%s error=%s", job_id,
                        redact_url(bucket.endpoint_url), type(err).__name__)
            raise UploadFailed("output: uploading the result to the bucket failed "
                               f"({type(err).__name__}); retry the job", field="output") from None
        if not url.lower().startswith(("https://", "http://")):
            raise UploadFailed("output: the bucket returned no URL", field="output")
        urls.append(url)
    return urls


def deliver(encoded: list, *, job_id: str, max_response_bytes: int, bucket) -> tuple:
    """Turn encoded images into response values: base64 inline, or S3 URLs when too large.

    ``encoded`` holds ``(name, bytes, fmt)`` triples; ``bucket`` is a :class:`settings.Bucket`
    or None. Returns ``("inline" | "url", values)`` with ``values`` in the same order. Raises
    :class:`ResponseTooLarge` when the inline response would exceed ``max_response_bytes`` and
    no bucket is configured, :class:`UploadFailed` when an upload fails.
    """
    total = sum(b64_len(len(data)) for _, data, _ in encoded)
    if total <= max_response_bytes:
        return "inline", [base64.b64encode(data).decode("ascii") for _, data, _ in encoded]
    if bucket is None:
        raise ResponseTooLarge(
            f"output: the response would be {total} bytes, over MAX_RESPONSE_BYTES="
            f"{max_response_bytes}; set BUCKET_ENDPOINT_URL on the worker to receive URLs, or "
            "ask for output_format jpeg, output_size model or fewer items", field="output")
    return "url", upload_all(encoded, job_id=job_id, bucket=bucket)
