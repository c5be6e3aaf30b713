"""Every environment variable the worker reads, in one place.

``Settings.from_env()`` is the only code that reads ``os.environ`` for this project (the runpod
SDK reads its own ``RUNPOD_*`` variables; the bucket's keys are read here and handed to our own
upload client, never to the SDK's). Values are validated when read: a bad
value raises ``ValueError`` naming the variable, so a mis-configured worker fails at start-up
instead of on its first job. ``.env.example`` documents the same names.

=======================  ==================  ===================================================
Variable                 Default             Meaning
=======================  ==================  ===================================================
CHECKPOINT_DIR           ``checkpoints``     Folder with ``GMM/gmm_final.pth`` and
                                             ``TOM/tom_final.pth``; relative paths are taken
                                             from the repository folder, not the cwd.
GMM_CHECKPOINT           (unset)             Explicit GMM checkpoint file (overrides the folder).
TOM_CHECKPOINT           (unset)             Explicit TOM checkpoint file (overrides the folder).
GMM_SHA256               (unset)             Expected sha256 (64 hex digits) of the GMM file; a
                                             file with another hash stops the worker at start-up.
TOM_SHA256               (unset)             The same for the TOM file (download_checkpoints.sh
                                             --print-hashes prints both lines).
ALLOW_RANDOM_WEIGHTS     ``0``               ``1``: run with random weights when checkpoints are
                                             missing (tests and demos only; results say so).
                                             The Python API follows it too (read by
                                             :func:`random_weights_allowed`), unless given
                                             ``allow_random_weights=``.
DEVICE                   ``auto``            ``auto`` | ``cpu`` | ``cuda``.
REQUIRE_GPU              ``0``               ``1``: refuse to start without a visible CUDA GPU.
PRECISION                ``auto``            ``auto`` | ``fp32`` | ``bf16`` | ``fp16``. ``auto``: bf16
                                             on a CPU with native bf16 (and on CUDA, fp16
                                             where bf16 is unsupported), else fp32.
BACKEND                  ``auto``            ``auto`` | ``torch`` | ``openvino``: what runs the
                                             networks. ``auto``: OpenVINO on CPU (PyTorch if
                                             it is not installed, logged), PyTorch on CUDA.
OPENVINO_CACHE_DIR       (unset)             Folder of the exported OpenVINO models (keyed by
                                             the checkpoints' sha256); default
                                             ``<CHECKPOINT_DIR>/openvino``.
MAX_BATCH_ITEMS          ``8``               Most try-on items in one job.
MAX_INPUT_BYTES          ``10000000``        Most encoded bytes of one input image (base64
                                             decoded), checked before decoding.
MAX_IMAGE_PIXELS         ``40000000``        Most pixels (width × height) of one decoded image,
                                             checked from the header before decoding.
URL_TIMEOUT_S            ``15``              Total time for downloading one ``*_url`` input.
URL_MAX_BYTES            ``10000000``        Most bytes downloaded for one ``*_url`` input.
MAX_RESPONSE_BYTES       ``10000000``        Largest inline (base64) response; above it images
                                             go to S3 when BUCKET_ENDPOINT_URL is set.
BUCKET_ENDPOINT_URL      (unset)             http(s) S3 endpoint for large responses; needs
                                             both keys below (refused at start-up without).
BUCKET_ACCESS_KEY_ID     (unset)             The bucket's access key id (a secret: set it on
                                             the endpoint, never in the image).
BUCKET_SECRET_ACCESS_KEY (unset)             The bucket's secret key (same).
UPLOAD_TIMEOUT_S         ``10``              Connect and read timeout of each S3 request.
UPLOAD_ATTEMPTS          ``2``               Tries per uploaded file (a job's uploads stop at
                                             the first file that fails: UPLOAD_FAILED).
LOG_LEVEL                ``INFO``            DEBUG | INFO | WARNING | ERROR; the runpod SDK's
                                             lines follow it too, and never carry job data.
CONCURRENCY              ``1``               Jobs one worker takes at once (I/O overlaps; their
                                             forward passes are micro-batched into one).
WARMUP                   ``1``               ``1``: one warm-up inference at start-up.
PERSON_CACHE_SIZE        ``16``              Prepared persons kept in memory (LRU, by content
                                             hash); ``0`` disables the cache.
PERSON_CACHE_MB          ``512``             Memory budget of that cache (MB, counted from the
                                             entries' arrays and photos); a person larger than
                                             the budget is not cached.
=======================  ==================  ===================================================
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from vton_core.model_spec import BACKENDS, PRECISIONS

#: The repository folder: relative checkpoint paths are resolved from here, not from the cwd.
REPO_DIR = Path(__file__).resolve().parents[1]

#: Every variable ``from_env`` reads, in documentation order (the .env.example test uses it).
ENV_VARS = (
    "CHECKPOINT_DIR", "GMM_CHECKPOINT", "TOM_CHECKPOINT", "GMM_SHA256", "TOM_SHA256",
    "ALLOW_RANDOM_WEIGHTS", "DEVICE",
    "REQUIRE_GPU", "PRECISION", "BACKEND", "OPENVINO_CACHE_DIR", "MAX_BATCH_ITEMS",
    "MAX_INPUT_BYTES", "MAX_IMAGE_PIXELS",
    "URL_TIMEOUT_S", "URL_MAX_BYTES", "MAX_RESPONSE_BYTES", "BUCKET_ENDPOINT_URL",
    "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY", "UPLOAD_TIMEOUT_S", "UPLOAD_ATTEMPTS",
    "LOG_LEVEL", "CONCURRENCY", "WARMUP", "PERSON_CACHE_SIZE", "PERSON_CACHE_MB",
)

_DEVICES = ("auto", "cpu", "cuda")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_DIR / p


class _EnvReader:
    """Typed reads of one environment mapping; a malformed value raises ValueError naming it."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def text(self, name: str) -> Optional[str]:
        value = self.env.get(name)
        return value.strip() if value is not None and value.strip() != "" else None

    def path(self, name: str, default: Optional[str] = None) -> Optional[Path]:
        value = self.text(name) or default
        return _resolve(value) if value else None

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")

    def integer(self, name: str, default: int, minimum: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value.replace("_", ""))
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {number}")
        return number

    def number(self, name: str, default: float, minimum: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            parsed = float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        if not parsed >= minimum or parsed == float("inf"):
            raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")
        return parsed

    def choice(self, name: str, default: str, options: tuple, *, upper: bool = False) -> str:
        value = self.text(name)
        if value is None:
            return default
        value = value.upper() if upper else value.lower()
        if value == "WARN":
            value = "WARNING"
        if value not in options:
            raise ValueError(f"{name} must be one of {', '.join(options)}, got {value!r}")
        return value

    def sha256(self, name: str) -> Optional[str]:
        value = self.text(name)
        if value is None:
            return None
        value = value.lower()
        if not _SHA256.match(value):
            raise ValueError(f"{name} must be a sha256 of 64 hex digits, got {value!r}")
        return value


def random_weights_allowed(environ: Optional[Mapping[str, str]] = None) -> bool:
    """ALLOW_RANDOM_WEIGHTS of ``environ`` (default ``os.environ``): the one switch for random
    weights at every entry point (the worker, the smoke run, and ``cpvton_infer.build_model`` /
    ``CPVTONPlusModel`` when called without ``allow_random_weights=``). Raises ``ValueError``
    naming the variable for a value that is not 0 or 1."""
    return _EnvReader(os.environ if environ is None else environ).flag("ALLOW_RANDOM_WEIGHTS", False)


@dataclass(frozen=True)
class Bucket:
    """Where large responses are uploaded (S3-compatible), and the bounds of each upload."""

    endpoint_url: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    timeout_s: float                # connect and read timeout of each request (UPLOAD_TIMEOUT_S)
    attempts: int                   # tries per file (UPLOAD_ATTEMPTS)


def _check_bucket(endpoint: Optional[str], key_id: Optional[str], secret: Optional[str]) -> None:
    """A bucket needs an http(s) endpoint and both keys: without them the runpod SDK's helper
    would write results to the worker's disk and return a local path as a "URL"."""
    if not endpoint:
        return
    missing = [name for name, value in (("BUCKET_ACCESS_KEY_ID", key_id),
                                        ("BUCKET_SECRET_ACCESS_KEY", secret)) if not value]
    if missing:
        raise ValueError(f"BUCKET_ENDPOINT_URL is set but {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not: set both keys, or unset "
                         "BUCKET_ENDPOINT_URL")
    scheme = endpoint.split("://", 1)[0].lower() if "://" in endpoint else ""
    if scheme not in ("http", "https"):
        raise ValueError("BUCKET_ENDPOINT_URL must be an http(s) URL")


@dataclass(frozen=True)
class Settings:
    """The worker's configuration (immutable). Build it with :meth:`from_env`."""

    checkpoint_dir: Path = REPO_DIR / "checkpoints"
    gmm_checkpoint: Optional[Path] = None
    tom_checkpoint: Optional[Path] = None
    gmm_sha256: Optional[str] = None
    tom_sha256: Optional[str] = None
    allow_random_weights: bool = False
    device: str = "auto"
    require_gpu: bool = False
    precision: str = "auto"
    backend: str = "auto"
    openvino_cache_dir: Optional[Path] = None     # None: checkpoint_dir / "openvino"
    max_batch_items: int = 8
    max_input_bytes: int = 10_000_000
    max_image_pixels: int = 40_000_000
    url_timeout_s: float = 15.0
    url_max_bytes: int = 10_000_000
    max_response_bytes: int = 10_000_000
    bucket_endpoint_url: Optional[str] = None
    bucket_access_key_id: Optional[str] = field(default=None, repr=False)
    bucket_secret_access_key: Optional[str] = field(default=None, repr=False)
    upload_timeout_s: float = 10.0
    upload_attempts: int = 2
    log_level: str = "INFO"
    concurrency: int = 1
    warmup: bool = True
    person_cache_size: int = 16
    person_cache_mb: int = 512

    def __post_init__(self):
        _check_bucket(self.bucket_endpoint_url, self.bucket_access_key_id,
                      self.bucket_secret_access_key)

    @property
    def bucket(self) -> Optional[Bucket]:
        """The upload bucket, or None when BUCKET_ENDPOINT_URL is unset."""
        if not self.bucket_endpoint_url:
            return None
        return Bucket(self.bucket_endpoint_url, self.bucket_access_key_id or "",
                      self.bucket_secret_access_key or "", timeout_s=self.upload_timeout_s,
                      attempts=self.upload_attempts)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Settings":
        """Read and validate every variable from ``environ`` (default ``os.environ``).

        Raises ``ValueError`` naming the variable when a value is malformed or out of range.
        """
        read = _EnvReader(os.environ if environ is None else environ)
        defaults = cls()
        return cls(
            checkpoint_dir=read.path("CHECKPOINT_DIR", "checkpoints"),
            gmm_checkpoint=read.path("GMM_CHECKPOINT"),
            tom_checkpoint=read.path("TOM_CHECKPOINT"),
            gmm_sha256=read.sha256("GMM_SHA256"),
            tom_sha256=read.sha256("TOM_SHA256"),
            allow_random_weights=random_weights_allowed(read.env),
            device=read.choice("DEVICE", "auto", _DEVICES),
            require_gpu=read.flag("REQUIRE_GPU", False),
            precision=read.choice("PRECISION", "auto", ("auto",) + PRECISIONS),
            backend=read.choice("BACKEND", "auto", ("auto",) + BACKENDS),
            openvino_cache_dir=read.path("OPENVINO_CACHE_DIR"),
            max_batch_items=read.integer("MAX_BATCH_ITEMS", defaults.max_batch_items, 1),
            max_input_bytes=read.integer("MAX_INPUT_BYTES", defaults.max_input_bytes, 1),
            max_image_pixels=read.integer("MAX_IMAGE_PIXELS", defaults.max_image_pixels, 1),
            url_timeout_s=read.number("URL_TIMEOUT_S", defaults.url_timeout_s, 0.1),
            url_max_bytes=read.integer("URL_MAX_BYTES", defaults.url_max_bytes, 1),
            max_response_bytes=read.integer("MAX_RESPONSE_BYTES", defaults.max_response_bytes, 1),
            bucket_endpoint_url=read.text("BUCKET_ENDPOINT_URL"),
            bucket_access_key_id=read.text("BUCKET_ACCESS_KEY_ID"),
            bucket_secret_access_key=read.text("BUCKET_SECRET_ACCESS_KEY"),
            upload_timeout_s=read.number("UPLOAD_TIMEOUT_S", defaults.upload_timeout_s, 0.1),
            upload_attempts=read.integer("UPLOAD_ATTEMPTS", defaults.upload_attempts, 1),
            log_level=read.choice("LOG_LEVEL", "INFO", _LOG_LEVELS, upper=True),
            concurrency=read.integer("CONCURRENCY", defaults.concurrency, 1),
            warmup=read.flag("WARMUP", True),
            person_cache_size=read.integer("PERSON_CACHE_SIZE", defaults.person_cache_size, 0),
            person_cache_mb=read.integer("PERSON_CACHE_MB", defaults.person_cache_mb, 0),
        )
