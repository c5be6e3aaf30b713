"""A small, dependable client for the CP-VTON+ RunPod endpoint (and for its local dev server).

    from client_example import CPVTONClient
    client = CPVTONClient("your-endpoint-id", api_key="...")          # RunPod
    client = CPVTONClient(base_url="http://127.0.0.1:8000")           # python handler.py --rp_serve_api
    result = client.try_on_sync("person.jpg", "shirt.png")
    result.image.save("tryon.png")

Images can be file paths, bytes, PIL images, or ``http(s)://`` URLs (sent as ``*_url`` inputs
for the worker to download). Results come back as PIL images. Requests are retried with
exponential backoff on 429 and 5xx answers and on connection errors, honouring ``Retry-After``,
for at most ``max_retry_s`` seconds, and a whole call (retries and polling) ends within
``timeout`` seconds; every retry is logged (logger ``cpvton.client``, INFO). The API key is never
logged: it is removed from every log line and exception message.

Its only dependencies are ``requests`` and Pillow: copy this one file into your backend and
``pip install requests pillow`` (from a checkout: ``pip install ".[client]"``).

Command line::

    python client_example.py --endpoint-id ID --person p.jpg --cloth c.png --out result.png
    python client_example.py --base-url http://127.0.0.1:8000 --person p.jpg --cloth c.png --async
    python client_example.py --endpoint-id ID health
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import email.utils
import io
import json
import logging
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

#: What the client needs, and how to get it (said when one is missing).
INSTALL_HINT = "pip install requests pillow"
try:
    import requests
    from PIL import Image, ImageOps
except ModuleNotFoundError as _missing:
    if __name__ != "__main__":
        raise ModuleNotFoundError(f"client_example needs requests and Pillow, and "
                                  f"'{_missing.name}' is not installed: {INSTALL_HINT}",
                                  name=_missing.name) from None
    MISSING_PACKAGE: Optional[str] = _missing.name     # the command line says so after --help
else:
    MISSING_PACKAGE = None

log = logging.getLogger("cpvton.client")

RUNPOD_API = "https://api.runpod.ai/v2"
TERMINAL_STATUSES = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Shortest timeout of one HTTP try (seconds), even when a call's budget is nearly spent.
MIN_TRY_S = 1.0
ImageInput = Union[str, os.PathLike, bytes, bytearray, "Image.Image"]
#: ``garment_resolution`` values the worker takes (vton_core.model_spec.GARMENT_RESOLUTIONS; written
#: out here so that this file needs nothing of the project): "full" draws the garment from its
#: photo at the result's resolution, "model" upscales the 192×256 try-on.
GARMENT_RESOLUTIONS = ("full", "model")
#: test_input.json beside this file: the default person and garment of the command line.
SAMPLE_INPUT = Path(__file__).resolve().parent / "test_input.json"

#: The command line's commands, for ``--help``.
COMMANDS_HELP = """commands:
  try-on     (default) one try-on of --person and --cloth (default: the samples of
             test_input.json beside this file), written to --out (default: tryon.png, tryon.jpg
             or tryon.webp after --format, in the current folder)
  health     worker and job counts of a RunPod endpoint (the local dev server has no /health)
  examples   run the three library examples against the endpoint: a sync try-on, an async one
             with intermediates, and one person with three garments in one job (prints sizes)

every command needs a target: --endpoint-id ID (or $RUNPOD_ENDPOINT_ID) with --api-key (or
$RUNPOD_API_KEY) for RunPod, or --base-url http://127.0.0.1:8000 for the local dev server
(python handler.py --rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port 8000)."""
NO_TARGET = ("no endpoint: give --endpoint-id ID (or set RUNPOD_ENDPOINT_ID) for RunPod, or "
             "--base-url http://127.0.0.1:8000 for the local dev server")
#: File extension of each output format (the default --out is tryon.<extension>).
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class CPVTONError(Exception):
    """A failed request or job. ``code`` is the worker's error code (``INVALID_INPUT``, …),
    ``HTTP_<status>`` for an HTTP failure, or the job status (``TIMED_OUT``, ``CANCELLED``)."""

    def __init__(self, code: str, message: str, *, status: Optional[int] = None,
                 job_id: Optional[str] = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status, self.job_id = code, message, status, job_id

    @classmethod
    def from_error(cls, error: Any, *, job_id: Optional[str] = None) -> "CPVTONError":
        """Split the worker's ``"<CODE>: <message>"`` string."""
        text = str(error)
        code, sep, message = text.partition(": ")
        if sep and code.replace("_", "").isalnum() and code.upper() == code:
            return cls(code, message, job_id=job_id)
        return cls("JOB_FAILED", text, job_id=job_id)


@dataclass
class TryOnResult:
    """One try-on: ``image`` (PIL RGB), ``intermediates`` (name → PIL image, when requested) and
    ``info`` (everything else the worker returned: width, height, timings, weights, …)."""

    image: Image.Image
    intermediates: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def _secret_forms(secret: str) -> tuple:
    """The key as sent and as it may appear in messages (stripped, or escaped by ``repr``)."""
    forms = {secret, secret.strip(), repr(secret)[1:-1], repr(secret.strip())[1:-1]}
    return tuple(sorted((f for f in forms if len(f) >= 4), key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every secret replaced by ``***``."""
    for secret in secrets:
        for form in _secret_forms(secret):
            text = text.replace(form, "***")
    return text


class _RedactKeys(logging.Filter):
    """Remove every client's API key from each record passing through the client's logger
    (one filter for the process, however many clients are made)."""

    def __init__(self):
        super().__init__()
        self.secrets: set = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = redact(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


_REDACTOR = _RedactKeys()
log.addFilter(_REDACTOR)


def encode_image(image: ImageInput) -> str:
    """Base64 text of a path, bytes, PIL image or numpy array (images and arrays are sent as
    PNG; an array is H×W or H×W×3 uint8)."""
    if hasattr(image, "__array_interface__") and not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
    else:
        raise TypeError(f"unsupported image type {type(image).__name__}")
    return base64.b64encode(data).decode("ascii")


def _is_url(image: Any) -> bool:
    return isinstance(image, str) and image.lower().startswith(("http://", "https://"))


def _image_field(name: str, image: ImageInput) -> dict:
    """``{name: base64}`` or ``{name_url: url}``."""
    return {f"{name}_url": image} if _is_url(image) else {name: encode_image(image)}


#: Keys of a pair mapping for ``try_on_batch`` (the model's names) -> the request's field names.
PAIR_KEYS = {"person": "person_image", "cloth": "cloth_image", "parse": "person_parse",
             "pose": "person_pose", "person_mask": "person_mask", "cloth_mask": "cloth_mask"}


def _pair_fields(pair: Any) -> dict:
    """A ``(person, cloth)`` tuple or a mapping of :data:`PAIR_KEYS` as one ``pairs`` item."""
    if isinstance(pair, dict):
        unknown = sorted(set(pair) - set(PAIR_KEYS))
        if unknown or "person" not in pair or "cloth" not in pair:
            raise ValueError(f"a pair mapping needs 'person' and 'cloth' and may have "
                             f"{list(PAIR_KEYS)[2:]} (unknown: {unknown})")
        item = {**_image_field("person_image", pair["person"]),
                **_image_field("cloth_image", pair["cloth"])}
        for key in ("parse", "pose", "person_mask", "cloth_mask"):
            value = pair.get(key)
            if value is None:
                continue
            if key == "pose":        # OpenPose JSON dict, or 18×3 keypoints (list or array)
                item[PAIR_KEYS[key]] = value.tolist() if hasattr(value, "tolist") else value
            else:                    # as the model takes them: a path, bytes, PIL or array
                item[PAIR_KEYS[key]] = encode_image(value)
        return item
    if isinstance(pair, (tuple, list)) and len(pair) == 2:
        return {**_image_field("person_image", pair[0]), **_image_field("cloth_image", pair[1])}
    raise ValueError(f"a pair is a (person, cloth) tuple or a mapping with 'person' and "
                     f"'cloth', not {type(pair).__name__}")


def _garment_resolution(value: Optional[str]) -> Optional[str]:
    """``value`` checked against :data:`GARMENT_RESOLUTIONS` (None passes: the worker's default)."""
    if value is not None and value not in GARMENT_RESOLUTIONS:
        raise ValueError(f"garment_resolution must be one of {', '.join(GARMENT_RESOLUTIONS)}, "
                         f"not {value!r}")
    return value


def decode_image(text: str) -> Image.Image:
    """A PIL image from base64 text (raw or data URI)."""
    if text.startswith("data:"):
        text = text.split(",", 1)[1]
    im = Image.open(io.BytesIO(base64.b64decode(text)))
    im.load()
    return im


class CPVTONClient:
    """Client of the CP-VTON+ worker on RunPod, or of the SDK's local dev server (``base_url``).

    Args:
        endpoint_id: the RunPod endpoint id (ignored when ``base_url`` is given).
        api_key: RunPod API key (sent as a bearer token; never logged).
        base_url: another base URL, e.g. ``http://127.0.0.1:8000`` for
            ``python handler.py --rp_serve_api``.
        timeout: seconds one call may take in all (``try_on_*``, ``health``, ``wait``: its
            requests, their retries and the polling); a call that runs out raises
            :class:`CPVTONError` (``UNAVAILABLE`` while retrying, ``TIMEOUT`` while polling).
        request_timeout: seconds for one HTTP request (at most what is left of ``timeout``).
        max_retry_s: total seconds spent retrying one request on 429/5xx/connection errors
            (at most what is left of ``timeout``).
    """

    def __init__(self, endpoint_id: Optional[str] = None, api_key: Optional[str] = None,
                 base_url: Optional[str] = None, timeout: float = 300.0, *,
                 request_timeout: float = 120.0, max_retry_s: float = 60.0,
                 session: Optional[requests.Session] = None):
        if not base_url and not endpoint_id:
            raise ValueError("give endpoint_id (RunPod) or base_url (local dev server)")
        self.base_url = (base_url or f"{RUNPOD_API}/{endpoint_id}").rstrip("/")
        self.timeout = float(timeout)
        self.request_timeout = float(request_timeout)
        self.max_retry_s = float(max_retry_s)
        self._api_key = api_key or ""
        self._status_method = "GET"          # the dev server's /status is a POST: learnt on 405
        self._calls = threading.local()      # the deadline of the call in progress, per thread
        self.session = session or requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
            _REDACTOR.secrets.add(api_key)

    def __repr__(self) -> str:
        return f"CPVTONClient(base_url={self.base_url!r})"

    def close(self) -> None:
        """Close the HTTP session and forget the API key (the log filter no longer holds it)."""
        self.session.close()
        if self._api_key:
            _REDACTOR.secrets.discard(self._api_key)
            self.session.headers.pop("Authorization", None)
            self._api_key = ""

    def __enter__(self) -> "CPVTONClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- HTTP -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _budget(self) -> Iterator[float]:
        """The deadline (``time.monotonic()``) of the call in progress: ``timeout`` from the
        outermost call on this thread; nested calls share it."""
        outer = getattr(self._calls, "deadline", None)
        if outer is not None:
            yield outer
            return
        self._calls.deadline = time.monotonic() + self.timeout
        try:
            yield self._calls.deadline
        finally:
            self._calls.deadline = None

    def _redact(self, text: str) -> str:
        return redact(text, (self._api_key,)) if self._api_key else text

    @staticmethod
    def _retry_after(response: requests.Response) -> Optional[float]:
        """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
        value = response.headers.get("Retry-After")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError):
                return None

    def _request(self, method: str, path: str, *, json: Any = None) -> dict:
        """One API call with retries; returns the decoded JSON object."""
        with self._budget() as call_deadline:
            return self._request_within(method, path, json, call_deadline)

    def _request_within(self, method: str, path: str, json: Any, call_deadline: float) -> dict:
        url = f"{self.base_url}/{path.lstrip('/')}"
        start = time.monotonic()
        deadline = min(start + self.max_retry_s, call_deadline)
        delay = 0.5
        attempt = 0
        while True:
            attempt += 1
            wait: Optional[float] = None
            # At least a short try even when the budget is spent (the first attempt is made).
            per_try = min(self.request_timeout, max(deadline - time.monotonic(), MIN_TRY_S))
            try:
                response = self.session.request(method, url, json=json, timeout=per_try)
            except (requests.ConnectionError, requests.Timeout) as err:
                reason = f"{type(err).__name__} at {self.base_url}"
                response = None
            except requests.RequestException as err:
                # Not retried (a bad header, URL or body). requests puts header values and URLs
                # into these messages, so only a redacted text leaves, without the chain.
                raise CPVTONError("REQUEST_FAILED", self._redact(
                    f"{method} {path}: {type(err).__name__}: {err}")) from None
            else:
                if response.status_code < 400:
                    try:
                        body = response.json()
                    except ValueError:
                        raise CPVTONError("BAD_RESPONSE", f"{method} {path}: answer is not JSON",
                                          status=response.status_code) from None
                    if not isinstance(body, dict):
                        raise CPVTONError("BAD_RESPONSE", f"{method} {path}: answer is not an "
                                          "object", status=response.status_code)
                    return body
                if response.status_code not in RETRY_STATUSES:
                    raise CPVTONError(f"HTTP_{response.status_code}", self._redact(
                        f"{method} {path}: {response.text[:300]}"), status=response.status_code)
                reason = f"HTTP {response.status_code}"
                wait = self._retry_after(response)
            if wait is None:
                wait = delay * (0.75 + 0.5 * random.random())
                delay = min(delay * 2, 16.0)
            now = time.monotonic()
            if now + wait > deadline:
                status = response.status_code if response is not None else None
                raise CPVTONError("UNAVAILABLE", self._redact(
                    f"{method} {path}: gave up after {attempt} attempt{'s' if attempt > 1 else ''} "
                    f"in {now - start:.1f} s ({reason}); the budget was {deadline - start:.1f} s "
                    f"(timeout={self.timeout:g}, max_retry_s={self.max_retry_s:g})"), status=status)
            log.info("%s %s: attempt %d failed (%s); retrying in %.1f s (%.1f s left)",
                     method, path, attempt, reason, wait, deadline - now)
            time.sleep(wait)

    # -- raw endpoint calls ---------------------------------------------------------------------
    def run(self, payload: dict) -> str:
        """Submit a job (``/run``); returns its id."""
        body = self._request("POST", "/run", json={"input": payload})
        if "id" not in body:
            raise CPVTONError("BAD_RESPONSE", "/run answered without a job id")
        return str(body["id"])

    def status(self, job_id: str) -> dict:
        """``/status/{id}``: GET on RunPod; POST on the local dev server (found on a 405)."""
        try:
            return self._request(self._status_method, f"/status/{job_id}")
        except CPVTONError as err:
            if err.status != 405 or self._status_method == "POST":
                raise
            self._status_method = "POST"
            return self._request("POST", f"/status/{job_id}")

    def wait(self, job_id: str, *, poll_interval: float = 0.5, max_poll_interval: float = 5.0) -> dict:
        """Poll ``/status`` with backoff until the job ends or ``timeout`` passes; returns the
        final status object (``status`` is one of COMPLETED, FAILED, CANCELLED, TIMED_OUT)."""
        with self._budget() as deadline:
            interval = poll_interval
            while True:
                body = self.status(job_id)
                if body.get("status") in TERMINAL_STATUSES:
                    return body
                if time.monotonic() + interval > deadline:
                    raise CPVTONError("TIMEOUT", f"job {job_id} did not finish in {self.timeout:g} s "
                                      f"(last status {body.get('status')})", job_id=job_id)
                time.sleep(interval)
                interval = min(interval * 1.5, max_poll_interval)

    def runsync(self, payload: dict) -> dict:
        """``/runsync``; when RunPod answers before the job ends, polling takes over."""
        with self._budget():
            body = self._request("POST", "/runsync", json={"input": payload})
            if body.get("status") not in TERMINAL_STATUSES and "id" in body:
                body = self.wait(str(body["id"]))
            return body

    def cancel(self, job_id: str) -> dict:
        """``/cancel/{id}`` (RunPod only)."""
        return self._request("POST", f"/cancel/{job_id}")

    def health(self) -> dict:
        """``/health``: worker and job counts (RunPod only: the SDK's local dev server has no
        ``/health``, which raises a :class:`CPVTONError` ``NOT_SUPPORTED`` saying so)."""
        try:
            with self._budget():
                return self._request("GET", "/health")
        except CPVTONError as err:
            if err.status != 404 or self.base_url.startswith(RUNPOD_API):
                raise
            raise CPVTONError("NOT_SUPPORTED", f"{self.base_url} has no /health: the local dev "
                              "server (handler.py --rp_serve_api) serves only /run, /runsync and "
                              "/status; /health exists on RunPod endpoints", status=404) from None

    # -- try-on ---------------------------------------------------------------------------------
    @staticmethod
    def build_input(person: ImageInput, cloth: ImageInput, *,
                    garment_resolution: Optional[str] = None, **options: Any) -> dict:
        """The job input for one person and one garment; ``garment_resolution`` is one of
        :data:`GARMENT_RESOLUTIONS` (None: the worker's default, "full"); ``options`` are passed
        as they are (``output_format``, ``output_size``, ``return_intermediates``,
        ``person_pose``, …)."""
        options["garment_resolution"] = _garment_resolution(garment_resolution)
        payload = {**_image_field("person_image", person), **_image_field("cloth_image", cloth)}
        for name in ("person_parse", "person_mask", "cloth_mask"):
            if name in options and options[name] is not None and not isinstance(options[name], str):
                options[name] = encode_image(options[name])
        payload.update({k: v for k, v in options.items() if v is not None})
        return payload

    def _output(self, body: dict) -> dict:
        job_id = body.get("id")
        status = body.get("status")
        if status == "COMPLETED":
            output = body.get("output")
            if not isinstance(output, dict):
                raise CPVTONError("BAD_RESPONSE", "job completed without an output object",
                                  job_id=job_id)
            return output
        if status == "FAILED":
            raise CPVTONError.from_error(self._redact(str(body.get("error", "job failed"))),
                                         job_id=job_id)
        raise CPVTONError(str(status or "UNKNOWN"), f"job {job_id} ended with status {status}",
                          job_id=job_id)

    def _fetch(self, url: str) -> Image.Image:
        response = requests.get(url, timeout=self.request_timeout)
        response.raise_for_status()
        im = Image.open(io.BytesIO(response.content))
        im.load()
        return im

    def _result(self, item: dict) -> TryOnResult:
        if "result_image" in item:
            image = decode_image(item["result_image"])
        elif "result_image_url" in item:
            image = self._fetch(item["result_image_url"])
        else:
            raise CPVTONError("BAD_RESPONSE", "output has no result_image")
        inter = {k: decode_image(v) for k, v in item.get("intermediates", {}).items()}
        inter.update({k: self._fetch(v) for k, v in item.get("intermediate_urls", {}).items()})
        info = {k: v for k, v in item.items()
                if k not in ("result_image", "intermediates", "intermediate_urls")}
        return TryOnResult(image=image, intermediates=inter, info=info)

    def try_on_sync(self, person: ImageInput, cloth: ImageInput, **options: Any) -> TryOnResult:
        """One try-on through ``/runsync``. Raises :class:`CPVTONError` on failure.
        ``options``: see :meth:`build_input` (``garment_resolution``, ``output_format``, …)."""
        payload = self.build_input(person, cloth, **options)
        with self._budget():
            return self._result(self._output(self.runsync(payload)))

    def try_on_async(self, person: ImageInput, cloth: ImageInput, **options: Any) -> TryOnResult:
        """One try-on through ``/run`` and ``/status`` polling."""
        payload = self.build_input(person, cloth, **options)
        with self._budget():
            job_id = self.run(payload)
            return self._result(self._output(self.wait(job_id)))

    def try_on_batch(self, pairs: Optional[Iterable[Sequence[ImageInput]]] = None, *,
                     person: Optional[ImageInput] = None,
                     cloths: Optional[Iterable[ImageInput]] = None, use_async: bool = False,
                     **options: Any) -> list:
        """Several try-ons in one job, in the forms ``CPVTONPlusModel.try_on_batch`` takes:
        ``pairs=[(person, cloth), …]`` or ``pairs=[{"person": …, "cloth": …, "pose": …}, …]``
        (keys as in :data:`PAIR_KEYS`), or one ``person`` with ``cloths=[…]`` (analysed once).
        Returns a list with a :class:`TryOnResult` or a :class:`CPVTONError` per item, in order
        (one bad item does not fail the others)."""
        if (pairs is None) == (person is None):
            raise ValueError("give either pairs or person and cloths")
        if pairs is not None:
            payload: dict = {"pairs": [_pair_fields(pair) for pair in pairs]}
        else:
            payload = {**_image_field("person_image", person),
                       "cloth_images": [{**_image_field("cloth_image", c)} for c in cloths or ()]}
        options["garment_resolution"] = _garment_resolution(options.get("garment_resolution"))
        payload.update({k: v for k, v in options.items() if v is not None})
        with self._budget():
            body = self.wait(self.run(payload)) if use_async else self.runsync(payload)
        output = self._output(body)
        results = []
        for item in output.get("results", []):
            if item.get("success"):
                results.append(self._result(item))
            else:
                results.append(CPVTONError.from_error(
                    self._redact(str(item.get("error", "item failed"))), job_id=body.get("id")))
        return results


# ------------------------------------------------------------------------------------------------
# Examples (the person photo and garment of test_input.json, beside this file)
# ------------------------------------------------------------------------------------------------
def sample_images() -> tuple:
    """(person, garment) of test_input.json as PIL images (RGB); ``FileNotFoundError`` naming
    the file when this client was copied without it."""
    if not SAMPLE_INPUT.is_file():
        raise FileNotFoundError(f"{SAMPLE_INPUT} not found: give --person and --cloth (the "
                                "samples are test_input.json of the checkout)")
    fields = json.loads(SAMPLE_INPUT.read_text())["input"]
    return tuple(decode_image(fields[name]).convert("RGB") for name in ("person_image", "cloth_image"))


def example_sync(client: CPVTONClient) -> TryOnResult:
    """One synchronous try-on with the sample images."""
    person, cloth = sample_images()
    result = client.try_on_sync(person, cloth, output_format="jpeg")
    print(f"sync: {result.image.size}, timings {result.info.get('timings_ms')}")
    return result


def example_async(client: CPVTONClient) -> TryOnResult:
    """One asynchronous try-on (``/run`` then ``/status`` polling), with intermediates."""
    person, cloth = sample_images()
    result = client.try_on_async(person, cloth, return_intermediates=True)
    print(f"async: {result.image.size}, intermediates {sorted(result.intermediates)}")
    return result


def example_batch(client: CPVTONClient) -> list:
    """One person, the sample garment in three colours, one job."""
    person, cloth = sample_images()
    grey = cloth.convert("L")
    cloths = [ImageOps.colorize(grey, black=color, white=(255, 255, 255))
              for color in ((200, 40, 60), (40, 140, 70), (30, 60, 160))]
    results = client.try_on_batch(person=person, cloths=cloths)
    for i, r in enumerate(results):
        print(f"batch[{i}]: {r if isinstance(r, CPVTONError) else r.image.size}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=COMMANDS_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="try-on",
                        choices=("try-on", "health", "examples"), help="see below (default: try-on)")
    parser.add_argument("--endpoint-id", default=os.environ.get("RUNPOD_ENDPOINT_ID"),
                        help="RunPod endpoint id (default: $RUNPOD_ENDPOINT_ID)")
    parser.add_argument("--api-key", default=os.environ.get("RUNPOD_API_KEY"),
                        help="RunPod API key (default: $RUNPOD_API_KEY)")
    parser.add_argument("--base-url", help="e.g. http://127.0.0.1:8000 (local dev server)")
    parser.add_argument("--person", help="person photo (path or URL); default: test_input.json's")
    parser.add_argument("--cloth", help="garment photo (path or URL); default: test_input.json's")
    parser.add_argument("--out", help="result file (default: tryon.<extension of --format> in the "
                                      "current folder)")
    parser.add_argument("--format", default="png", choices=tuple(EXTENSIONS),
                        help="output_format of the request (default: png)")
    parser.add_argument("--garment-resolution", choices=GARMENT_RESOLUTIONS,
                        help="full: the garment drawn from its photo at the result's resolution; "
                             "model: the 192x256 try-on upscaled (default: the worker's, full)")
    parser.add_argument("--async", dest="use_async", action="store_true",
                        help="use /run and /status polling instead of /runsync")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds the command may take in all, retries and polling included "
                             "(default: 300)")
    args = parser.parse_args(argv)
    if MISSING_PACKAGE:
        print(f"error: client_example.py needs requests and Pillow, and '{MISSING_PACKAGE}' is "
              f"not installed: {INSTALL_HINT}", file=sys.stderr)
        return 1
    if not (args.endpoint_id or args.base_url):
        parser.error(NO_TARGET)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        client = CPVTONClient(args.endpoint_id, args.api_key, base_url=args.base_url,
                              timeout=args.timeout)
        if args.command == "health":
            print(client.health())
            return 0
        if args.command == "examples":
            example_sync(client), example_async(client), example_batch(client)
            return 0
        if args.person and args.cloth:
            person, cloth = args.person, args.cloth
        else:
            default_person, default_cloth = sample_images()
            person, cloth = args.person or default_person, args.cloth or default_cloth
        call = client.try_on_async if args.use_async else client.try_on_sync
        result = call(person, cloth, output_format=args.format,
                      garment_resolution=args.garment_resolution)
        out = Path(args.out or f"tryon.{EXTENSIONS[args.format]}")
        # The file's format follows its name (PIL picks it from the extension), so a name and
        # its content never disagree; without a known extension, --format decides.
        known = out.suffix.lower() in Image.registered_extensions()
        result.image.save(out, **({} if known else {"format": args.format.upper()}))
        print(f"wrote {out} ({result.image.width}x{result.image.height}); "
              f"timings_ms={result.info.get('timings_ms')}")
        return 0
    except (CPVTONError, ValueError, OSError) as err:
        text = redact(str(err), (args.api_key,)) if args.api_key else str(err)
        print(f"error: {text}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
