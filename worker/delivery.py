"""Delivery of encoded results: base64 inline, or S3 URLs when the response would be too large."""
from __future__ import annotations

import base64
import logging
import time
import uuid
from typing import Optional

from vton_core.errors import VTONError
from worker.encoding import MIME_TYPES
from worker.inputs import redact_url

log = logging.getLogger("cpvton.worker")


class ResponseTooLarge(VTONError):
    """The encoded response exceeds MAX_RESPONSE_BYTES and no bucket is configured."""

    code = "RESPONSE_TOO_LARGE"


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
            raise UploadFailed("uploading the result to the bucket failed "
                               f"({type(err).__name__}); retry the job", field="output") from None
        if not url.lower().startswith(("https://", "http://")):
            raise UploadFailed("the bucket returned no URL", field="output")
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
            f"the response would be {total} bytes, over MAX_RESPONSE_BYTES="
            f"{max_response_bytes}; set BUCKET_ENDPOINT_URL on the worker to receive URLs, or "
            "ask for output_format jpeg, output_size model or fewer items", field="output")
    return "url", upload_all(encoded, job_id=job_id, bucket=bucket)
