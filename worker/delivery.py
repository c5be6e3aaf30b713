"""Delivery of encoded results: base64 inline, or S3 URLs when the response would be too large."""
from __future__ import annotations

import base64
import uuid
from typing import Optional

from vton_core.errors import VTONError


class ResponseTooLarge(VTONError):
    """The encoded response exceeds MAX_RESPONSE_BYTES and no bucket is configured."""

    code = "RESPONSE_TOO_LARGE"


def b64_len(n_bytes: int) -> int:
    """Length of the base64 text of ``n_bytes`` bytes."""
    return (n_bytes + 2) // 3 * 4


def upload_bytes(data: bytes, *, job_id: str, name: str, fmt: str) -> str:
    """Upload one encoded image with the runpod SDK's S3 helper and return its (presigned) URL.

    The SDK reads BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY.
    """
    from runpod.serverless.utils import rp_upload  # imported lazily: it configures logging

    file_name = f"{name}-{uuid.uuid4().hex[:8]}.{'jpg' if fmt == 'jpeg' else fmt}"
    return rp_upload.upload_in_memory_object(file_name, data, prefix=str(job_id))


def deliver(encoded: list, *, job_id: str, max_response_bytes: int,
            bucket_endpoint_url: Optional[str]) -> tuple:
    """Turn encoded images into response values: base64 inline, or S3 URLs when too large.

    ``encoded`` holds ``(name, bytes, fmt)`` triples. Returns ``("inline" | "url", values)``
    with ``values`` in the same order. Raises :class:`ResponseTooLarge` when the inline response
    would exceed ``max_response_bytes`` and no bucket is configured.
    """
    total = sum(b64_len(len(data)) for _, data, _ in encoded)
    if total <= max_response_bytes:
        return "inline", [base64.b64encode(data).decode("ascii") for _, data, _ in encoded]
    if not bucket_endpoint_url:
        raise ResponseTooLarge(
            f"the response would be {total} bytes, over MAX_RESPONSE_BYTES="
            f"{max_response_bytes}; set BUCKET_ENDPOINT_URL on the worker to receive URLs, or "
            "ask for output_format jpeg, output_size model or fewer items", field="output")
    return "url", [upload_bytes(data, job_id=job_id, name=name, fmt=fmt)
                   for name, data, fmt in encoded]
