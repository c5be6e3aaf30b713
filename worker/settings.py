"""Every environment variable the worker reads, in one place.

``Settings.from_env()`` is the only code that reads ``os.environ`` for this project (the runpod
SDK reads its own ``RUNPOD_*`` and ``BUCKET_*`` variables). Values are validated when read: a bad
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
BUCKET_ENDPOINT_URL      (unset)             S3 endpoint for large responses (the SDK reads
                                             BUCKET_ACCESS_KEY_ID / BUCKET_SECRET_ACCESS_KEY).
LOG_LEVEL                ``INFO``            DEBUG | INFO | WARNING | ERROR.
CONCURRENCY              ``1``               Jobs one worker takes at once (I/O overlaps; their
                                             forward passes are micro-batched into one).
WARMUP                   ``1``               ``1``: one warm-up inference at start-up.
PERSON_CACHE_SIZE        ``16``              Prepared persons kept in memory (LRU, by content
                                             hash); ``0`` disables the cache.
=======================  ==================  ===================================================
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

#: The repository folder: relative checkpoint paths are resolved from here, not from the cwd.
REPO_DIR = Path(__file__).resolve().parents[1]

#: Every variable ``from_env`` reads, in documentation order (the .env.example test uses it).
ENV_VARS = (
    "CHECKPOINT_DIR", "GMM_CHECKPOINT", "TOM_CHECKPOINT", "GMM_SHA256", "TOM_SHA256",
    "ALLOW_RANDOM_WEIGHTS", "DEVICE",
    "REQUIRE_GPU", "PRECISION", "BACKEND", "OPENVINO_CACHE_DIR", "MAX_BATCH_ITEMS",
    "MAX_INPUT_BYTES", "MAX_IMAGE_PIXELS",
    "URL_TIMEOUT_S", "URL_MAX_BYTES", "MAX_RESPONSE_BYTES", "BUCKET_ENDPOINT_URL", "LOG_LEVEL",
    "CONCURRENCY", "WARMUP", "PERSON_CACHE_SIZE",
)

_DEVICES = ("auto", "cpu", "cuda")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_BACKENDS = ("auto", "torch", "openvino")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_DIR / p


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
    log_level: str = "INFO"
    concurrency: int = 1
    warmup: bool = True
    person_cache_size: int = 16

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Settings":
        """Read and validate every variable from ``environ`` (default ``os.environ``).

        Raises ``ValueError`` naming the variable when a value is malformed or out of range.
        """
        env = os.environ if environ is None else environ

        def text(name: str) -> Optional[str]:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() != "" else None

        def flag(name: str, default: bool) -> bool:
            value = text(name)
            if value is None:
                return default
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            raise ValueError(f"{name} must be 0 or 1, got {value!r}")

        def integer(name: str, default: int, minimum: int) -> int:
            value = text(name)
            if value is None:
                return default
            try:
                number = int(value.replace("_", ""))
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {value!r}") from None
            if number < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {number}")
            return number

        def number(name: str, default: float, minimum: float) -> float:
            value = text(name)
            if value is None:
                return default
            try:
                parsed = float(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {value!r}") from None
            if not parsed >= minimum or parsed == float("inf"):
                raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")
            return parsed

        def choice(name: str, default: str, options: tuple, *, upper: bool = False) -> str:
            value = text(name)
            if value is None:
                return default
            value = value.upper() if upper else value.lower()
            if value == "WARN":
                value = "WARNING"
            if value not in options:
                raise ValueError(f"{name} must be one of {', '.join(options)}, got {value!r}")
            return value

        def sha256(name: str) -> Optional[str]:
            value = text(name)
            if value is None:
                return None
            value = value.lower()
            if not _SHA256.match(value):
                raise ValueError(f"{name} must be a sha256 of 64 hex digits, got {value!r}")
            return value

        gmm, tom = text("GMM_CHECKPOINT"), text("TOM_CHECKPOINT")
        ov_cache = text("OPENVINO_CACHE_DIR")
        defaults = cls()
        return cls(
            checkpoint_dir=_resolve(text("CHECKPOINT_DIR") or "checkpoints"),
            gmm_checkpoint=_resolve(gmm) if gmm else None,
            tom_checkpoint=_resolve(tom) if tom else None,
            gmm_sha256=sha256("GMM_SHA256"),
            tom_sha256=sha256("TOM_SHA256"),
            allow_random_weights=flag("ALLOW_RANDOM_WEIGHTS", False),
            device=choice("DEVICE", "auto", _DEVICES),
            require_gpu=flag("REQUIRE_GPU", False),
            precision=choice("PRECISION", "auto", _PRECISIONS),
            backend=choice("BACKEND", "auto", _BACKENDS),
            openvino_cache_dir=_resolve(ov_cache) if ov_cache else None,
            max_batch_items=integer("MAX_BATCH_ITEMS", defaults.max_batch_items, 1),
            max_input_bytes=integer("MAX_INPUT_BYTES", defaults.max_input_bytes, 1),
            max_image_pixels=integer("MAX_IMAGE_PIXELS", defaults.max_image_pixels, 1),
            url_timeout_s=number("URL_TIMEOUT_S", defaults.url_timeout_s, 0.1),
            url_max_bytes=integer("URL_MAX_BYTES", defaults.url_max_bytes, 1),
            max_response_bytes=integer("MAX_RESPONSE_BYTES", defaults.max_response_bytes, 1),
            bucket_endpoint_url=text("BUCKET_ENDPOINT_URL"),
            log_level=choice("LOG_LEVEL", "INFO", _LOG_LEVELS, upper=True),
            concurrency=integer("CONCURRENCY", defaults.concurrency, 1),
            warmup=flag("WARMUP", True),
            person_cache_size=integer("PERSON_CACHE_SIZE", defaults.person_cache_size, 0),
        )
