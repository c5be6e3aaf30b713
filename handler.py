"""RunPod serverless worker for CP-VTON+ virtual try-on: the entry point.

    python handler.py                                   # runs test_input.json once (SDK convention)
    python handler.py --rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port 8000   # local dev API
    python handler.py --help                            # these lines and the SDK's flags

Start-up (fitness checks, model loading, warm-up) is here; the work of a job is in
:mod:`worker.pipeline` (named stages over one job state) and the package around it. Every
failure becomes ``{"error": "<CODE>: <field>: <message>"}``; no traceback or server path reaches
a client. The request and response fields are documented in docs/API.md.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from vton_core.errors import CheckpointError, InvalidInput, VTONError, client_text
from worker import logs
from worker.fitness import check_backend, check_checkpoints, check_gpu
from worker.pipeline import Worker, is_local
from worker.recovery import is_cuda_fault
from worker.schema import parse_request
from worker.settings import REPO_DIR, Settings

log = logging.getLogger("cpvton.worker")

#: What a client sees for an unexpected failure (the details go to the worker log only).
INTERNAL_MESSAGE = "INTERNAL: the worker failed to process this job; it has been logged"
#: Longest job id kept for logs and S3 prefixes (RunPod's ids are far shorter).
MAX_JOB_ID_CHARS = 128
#: Where the local test run (``python handler.py``) writes its result images.
LOCAL_OUTPUT_DIR = REPO_DIR / "outputs" / "handler"
#: The job the local test run takes when the current folder has no test_input.json.
TEST_INPUT = REPO_DIR / "test_input.json"
#: The SDK's command-line flags (parsed by runpod.serverless.start), for ``--help``.
HELP = """usage: python handler.py [--help] [--test_input JSON] [--rp_serve_api [--rp_api_host HOST]
                         [--rp_api_port PORT] [--rp_api_concurrency N]] [--rp_log_level LEVEL]

The CP-VTON+ RunPod worker. On RunPod it takes jobs from the endpoint's queue. Locally:

  python handler.py              run one job, test_input.json (of the current folder, else of the
                                 checkout), and write its result under outputs/handler/ of the
                                 checkout (git-ignored)
  --test_input JSON              run this job instead ('{"input": {...}}')
  --rp_serve_api                 serve the SDK's dev API (/run, /runsync, /status) on
                                 --rp_api_host (default localhost) : --rp_api_port (default 8000)
  --rp_log_level LEVEL           the SDK's own log level (LOG_LEVEL sets ours and the SDK's)

Configuration: the environment variables of worker/settings.py and .env.example (without
checkpoints set ALLOW_RANDOM_WEIGHTS=1 for a smoke run). Request and response fields:
docs/API.md."""

_WORKER: Optional[Worker] = None
_WORKER_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------
# Start-up: fitness checks, model loading and warm-up
# ----------------------------------------------------------------------------------------------
#: What allows random weights in the worker (named in the log when they are used).
RANDOM_WEIGHTS_SWITCH = "ALLOW_RANDOM_WEIGHTS=1"


def load_model(settings: Settings, random_weights_switch: str = RANDOM_WEIGHTS_SWITCH):
    """The CP-VTON+ predictor as configured (raises CheckpointError naming a missing, unreadable or
    tampered file: with GMM_SHA256 / TOM_SHA256 set, a file with another sha256 is refused).
    ``random_weights_switch``: what set ``settings.allow_random_weights``, for the log."""
    from cpvton_infer import CPVTONPlusModel, build_model
    networks = build_model(settings.checkpoint_dir, settings.device,
                           gmm_checkpoint=settings.gmm_checkpoint,
                           tom_checkpoint=settings.tom_checkpoint,
                           gmm_sha256=settings.gmm_sha256, tom_sha256=settings.tom_sha256,
                           allow_random_weights=settings.allow_random_weights,
                           random_weights_switch=random_weights_switch,
                           backend=settings.backend, openvino_cache_dir=settings.openvino_cache_dir)
    return CPVTONPlusModel(networks=networks, precision=settings.precision,
                           max_pixels=settings.max_image_pixels)


def start_worker(settings: Settings, random_weights_switch: str = RANDOM_WEIGHTS_SWITCH) -> Worker:
    """Fitness checks, model loading and warm-up; the result serves every job of the process.
    ``random_weights_switch``: what allowed random weights, named in the log (the smoke run
    allows them itself)."""
    check_gpu(settings)
    check_backend(settings)
    check_checkpoints(settings)
    t0 = time.perf_counter()
    model = load_model(settings, random_weights_switch)
    worker = Worker(settings, model)
    info = model.weights.short()
    log.info("model loaded in %.0f ms on %s, backend %s (%s), %s; weights gmm=%s tom=%s "
             "random=%s", (time.perf_counter() - t0) * 1000.0, model.device, model.backend,
             model.backend_reason, model.precision, info["gmm_sha256"], info["tom_sha256"],
             info["random"])
    if info["random"]:
        log.warning("RANDOM WEIGHTS (%s): results are not real try-ons", model.weights.random_reason)
    if settings.warmup:
        log.info("warm-up inference took %.0f ms", worker.warm_up())
    return worker


def get_worker() -> Worker:
    """The process's worker, started on first use (thread-safe)."""
    global _WORKER
    if _WORKER is None:
        with _WORKER_LOCK:
            if _WORKER is None:
                _WORKER = start_worker(Settings.from_env())
    return _WORKER


def set_worker(worker: Optional[Worker]) -> None:
    """Install (or with ``None`` drop) the process's worker: for tests and embedding."""
    global _WORKER
    with _WORKER_LOCK:
        _WORKER = worker


# ----------------------------------------------------------------------------------------------
# The RunPod entry points
# ----------------------------------------------------------------------------------------------
def handler(job: Any, cancelled: Optional[threading.Event] = None) -> dict:
    """RunPod handler: ``job["input"]`` → output dict, or ``{"error": "<CODE>: <message>"}``.

    Never raises: invalid input is a typed error naming the field, anything unexpected is logged
    with the job id and returned as ``INTERNAL`` (with ``refresh_worker`` after a CUDA fault).
    ``cancelled`` (set by :func:`async_handler` when RunPod stops the job) ends the work at the
    next stage.
    """
    job_id = "unknown"
    try:
        if not isinstance(job, dict):
            raise InvalidInput("expected an object with an 'input' field", field="job")
        job_id = client_text(job.get("id", "local"), MAX_JOB_ID_CHARS)
        worker = get_worker()
        request = parse_request(job.get("input"), max_items=worker.settings.max_batch_items)
        return worker.process(request, {**job, "id": job_id}, cancelled)
    except VTONError as err:
        if isinstance(err, CheckpointError):   # the operator's error: the path goes to the log only
            log.error("job %s: %s", job_id, err.message)
        log.info(json.dumps({"event": "job", "job_id": job_id, "outcome": "FAILED",
                             "error_code": err.code}, separators=(",", ":")))
        return {"error": err.client_message()}
    except Exception as err:  # noqa: BLE001 - the one place that turns anything into INTERNAL
        log.error("job %s: internal error", job_id, exc_info=err)
        result: dict = {"error": INTERNAL_MESSAGE}
        if is_cuda_fault(err):
            result["refresh_worker"] = True
        return result


async def async_handler(job: Any) -> dict:
    """``handler`` in a thread (CONCURRENCY > 1: concurrent jobs overlap). When RunPod cancels
    the job or it times out, the SDK cancels this coroutine; the thread is told through an event
    and stops at its next stage."""
    cancelled = threading.Event()
    try:
        return await asyncio.to_thread(handler, job, cancelled)
    except asyncio.CancelledError:
        cancelled.set()
        log.info("job %s: cancelled; its work stops at the next stage",
                 client_text(job.get("id") if isinstance(job, dict) else None, MAX_JOB_ID_CHARS))
        raise


def register_fitness_checks(settings: Settings) -> None:
    """On RunPod the SDK runs these before taking jobs and reports a failure as unhealthy."""
    import runpod

    @runpod.serverless.register_fitness_check
    def gpu_visible():
        check_gpu(settings)

    @runpod.serverless.register_fitness_check
    def backend_available():
        check_backend(settings)

    @runpod.serverless.register_fitness_check
    def checkpoints_present():
        check_checkpoints(settings)

    @runpod.serverless.register_fitness_check
    def model_loads_and_warms_up():
        set_worker(start_worker(settings))


def _is_local_test_run(argv: list) -> bool:
    """True for the SDK's local one-job run (no --rp_serve_api, not on RunPod's queue)."""
    return is_local() and "--rp_serve_api" not in argv


def save_local_result(output: dict, out_dir: Path = LOCAL_OUTPUT_DIR) -> list:
    """Write the result images of a job's ``output`` (inline base64) into ``out_dir`` as
    ``result.<fmt>`` (a batch: ``result_<i>.<fmt>``); returns the paths written. For the local
    test run, whose result the SDK only logs (and our log redacts)."""
    items = output.get("results") if isinstance(output.get("results"), list) else [output]
    written = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("result_image"), str):
            continue
        fmt = str(item.get("format", "png")).lower()
        ext = "jpg" if fmt == "jpeg" else fmt
        name = f"result.{ext}" if len(items) == 1 else f"result_{i}.{ext}"
        try:
            data = base64.b64decode(item["result_image"].split(",", 1)[-1])
        except (binascii.Error, ValueError):
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_bytes(data)
        written.append(out_dir / name)
    return written


def local_test_handler(job: Any) -> dict:
    """:func:`handler` for the local test run: the result images also go to
    :data:`LOCAL_OUTPUT_DIR`, and the log says where."""
    output = handler(job)
    if "error" not in output:
        try:
            paths = save_local_result(output)
        except OSError as err:
            log.warning("local test run: the result could not be written to %s (%s)",
                        LOCAL_OUTPUT_DIR, err.strerror)
        else:
            log.info("local test run: result written to %s",
                     ", ".join(str(p) for p in paths) or "nothing (no inline image)")
    return output


def main() -> None:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(HELP)
        return
    import runpod

    try:
        settings = Settings.from_env()
    except ValueError as err:   # a mis-configured worker stops here, naming the variable
        logs.configure_logging("INFO")
        log.error("invalid configuration: %s", err)
        sys.exit(1)
    logs.configure_logging(settings.log_level)
    if is_local():
        # Local run (test_input.json or the dev API server): the SDK runs no fitness checks,
        # so start here and fail loudly on a broken setup.
        try:
            set_worker(start_worker(settings))
        except Exception as err:  # noqa: BLE001
            log.error("worker start-up failed: %s", err)
            sys.exit(1)
    else:
        register_fitness_checks(settings)
    concurrency = settings.concurrency
    serve = handler if concurrency == 1 else async_handler
    if _is_local_test_run(sys.argv):
        serve = local_test_handler
        if "--test_input" not in sys.argv and not Path("test_input.json").is_file():
            # The SDK reads ./test_input.json; from another folder, the checkout's.
            sys.argv += ["--test_input", TEST_INPUT.read_text()]
    runpod.serverless.start({
        "handler": serve,
        "concurrency_modifier": lambda current: concurrency,
    })


if __name__ == "__main__":
    main()
