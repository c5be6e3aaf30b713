"""RunPod serverless worker for CP-VTON+ virtual try-on.

    python handler.py                                   # runs test_input.json once (SDK convention)
    python handler.py --rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port 8000   # local dev API

``handler(job)`` is thin: validate the input against the schema (:mod:`worker.schema`), load and
size-check the images (:mod:`worker.inputs`), prepare persons (cached by content hash) and garments,
run the model once per job (one batched forward pass), encode, and deliver inline or through S3.
Every failure becomes ``{"error": "<CODE>: <message naming the field>"}``; no traceback or
server path reaches a client. The model is loaded once per process (:func:`get_worker`).
The request and response fields are documented in docs/API.md.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from vton_core.errors import CheckpointError, InvalidInput, VTONError
from worker import encoding, inputs
from worker.batcher import MicroBatcher
from worker.delivery import deliver
from worker.person_cache import PersonCache, person_key
from worker.schema import INTERMEDIATES, ClothSpec, ImageRef, Options, PersonSpec, Request, parse_request
from worker.settings import Settings

log = logging.getLogger("cpvton.worker")

#: What a client sees for an unexpected failure (the details go to the worker log only).
INTERNAL_MESSAGE = "INTERNAL: the worker failed to process this job; it has been logged"


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------
def is_out_of_memory(exc: BaseException) -> bool:
    """True for a GPU out-of-memory error (retried in smaller chunks, see ``_run_items``)."""
    try:
        import torch
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def is_cuda_fault(exc: BaseException) -> bool:
    """True for errors that leave a CUDA context unusable (the worker should be replaced).

    An out-of-memory error is not one: the context survives it (see :func:`is_out_of_memory`).
    """
    if is_out_of_memory(exc):
        return False
    try:
        import torch
        accelerator_error = getattr(torch, "AcceleratorError", None)
        if accelerator_error is not None and isinstance(exc, accelerator_error):
            return True
    except ImportError:  # pragma: no cover
        pass
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("CUDA error", "cuDNN error", "CUBLAS_STATUS",
                                      "device-side assert"))


def free_gpu_memory() -> None:
    """Return cached GPU blocks to the driver before a retry (no-op without CUDA)."""
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as err:  # noqa: BLE001 - best effort
        log.debug("empty_cache failed: %s", type(err).__name__)


def _requalify(err: VTONError, fields: dict, default: str) -> VTONError:
    """Make the message name the item's full field path.

    The model names bare fields (``cloth_image: …``); in a batch that becomes
    ``pairs[2].cloth_image: …``. A message naming no field gets ``default`` (or the full path of
    ``err.field``) in front, so that every client message says which input it is about.
    """
    for bare, full in fields.items():
        if err.message.startswith(f"{bare}:"):
            if full == bare:
                return err
            return type(err)(full + err.message[len(bare):], field=full)
    target = fields.get(err.field or "", default)
    return type(err)(f"{target}: {err.message}", field=target)


# ----------------------------------------------------------------------------------------------
# Per-job bookkeeping
# ----------------------------------------------------------------------------------------------
@dataclass
class _Loaded:
    """Encoded inputs of a person or cloth after size checks (``None`` entries: not supplied)."""

    image: bytes
    size: tuple
    extras: dict = field(default_factory=dict)


@dataclass
class _ItemState:
    index: int
    error: Optional[VTONError] = None
    cuda_fault: bool = False
    cloth: Any = None
    result: Any = None
    person_hit: Optional[bool] = None
    person_stages: tuple = ()
    timings: dict = field(default_factory=dict)


def _stage(timings: dict, name: str, t0: float) -> None:
    timings[name] = round(timings.get(name, 0.0) + (time.perf_counter() - t0) * 1000.0, 3)


def _is_local() -> bool:
    """True unless running on RunPod's job queue (the SDK's own test)."""
    from runpod.serverless.modules.worker_state import IS_LOCAL_TEST
    return bool(IS_LOCAL_TEST)


# ----------------------------------------------------------------------------------------------
# The worker: model, cache and the request pipeline
# ----------------------------------------------------------------------------------------------
#: How long a job's forward pass waits for concurrent jobs to join it (CONCURRENCY > 1).
MICROBATCH_WAIT_MS = 10.0


class Worker:
    """The loaded model, the person cache and the settings; one per process.

    Model calls are serialised with a lock (one GPU, preprocessing that is not re-entrant);
    downloads, decoding and encoding of concurrent jobs overlap. With ``CONCURRENCY`` > 1 the
    forward passes of concurrent jobs are micro-batched (:mod:`worker.batcher`): one pass, each job
    getting its own results.
    """

    def __init__(self, settings: Settings, model: Any):
        self.settings = settings
        self.model = model
        self.cache = PersonCache(settings.person_cache_size)
        self.model_lock = threading.Lock()
        self.batcher = (MicroBatcher(self._run_locked, max_wait_ms=MICROBATCH_WAIT_MS,
                                     max_items=settings.max_batch_items)
                        if settings.concurrency > 1 else None)

    # -- inputs ---------------------------------------------------------------------------------
    def _load(self, ref: ImageRef, timings: dict) -> tuple:
        """(bytes, (w, h)) of one image input, within the byte and pixel limits."""
        s = self.settings
        t0 = time.perf_counter()
        data = inputs.load_bytes(ref, max_bytes=s.max_input_bytes, url_timeout_s=s.url_timeout_s,
                                   url_max_bytes=s.url_max_bytes)
        _stage(timings, "fetch" if ref.url else "decode", t0)
        size = inputs.image_size(data, field=ref.field, max_pixels=s.max_image_pixels)
        return data, size

    def _load_person(self, spec: PersonSpec, timings: dict) -> _Loaded:
        image, size = self._load(spec.image, timings)
        extras = {"parse": None, "mask": None}
        for name, ref in (("parse", spec.parse), ("mask", spec.mask)):
            if ref is not None:
                extras[name] = self._load(ref, timings)[0]
        return _Loaded(image, size, extras)

    def _load_cloth(self, spec: ClothSpec, timings: dict) -> _Loaded:
        image, size = self._load(spec.image, timings)
        mask = self._load(spec.mask, timings)[0] if spec.mask is not None else None
        return _Loaded(image, size, {"mask": mask})

    # -- model steps ----------------------------------------------------------------------------
    def _prepare_person(self, spec: PersonSpec, loaded: _Loaded, prefix: str) -> tuple:
        """(PreparedPerson, cache_hit), analysed at most once per distinct content."""
        key = person_key(loaded.image, parse=loaded.extras["parse"], pose=spec.pose,
                         mask=loaded.extras["mask"])

        def create():
            with self.model_lock:
                return self.model.prepare_person(loaded.image, parse=loaded.extras["parse"],
                                                 pose=spec.pose, person_mask=loaded.extras["mask"])
        try:
            return self.cache.get_or_create(key, create)
        except VTONError as err:
            raise _requalify(err, {"person_image": spec.image.field,
                                   "person_parse": f"{prefix}person_parse",
                                   "person_pose": f"{prefix}person_pose",
                                   "person_mask": f"{prefix}person_mask"},
                             spec.image.field) from None

    def _prepare_cloth(self, spec: ClothSpec, loaded: _Loaded, prefix: str):
        try:
            with self.model_lock:
                return self.model.prepare_cloth(loaded.image, cloth_mask=loaded.extras["mask"])
        except VTONError as err:
            raise _requalify(err, {"cloth_image": spec.image.field,
                                   "cloth_mask": f"{prefix}cloth_mask"},
                             spec.image.field) from None

    def _run_locked(self, persons: list, cloths: list, output_size: str) -> list:
        with self.model_lock:
            return self.model.run(persons, cloths, output_size=output_size)

    def _run(self, persons: list, cloths: list, output_size: str) -> list:
        if self.batcher is not None:
            return self.batcher.run(persons, cloths, output_size=output_size)
        return self._run_locked(persons, cloths, output_size)

    # -- the pipeline ---------------------------------------------------------------------------
    def process(self, request: Request, job: dict) -> dict:
        """Run a validated request; returns the client's output dict (see docs/API.md)."""
        job_id = str(job.get("id", "local"))
        t_job = time.perf_counter()
        n = len(request.items)
        timings: dict = {}
        states = [_ItemState(i) for i in range(n)]
        # Field prefixes: "pairs[i]." for pairs, "" for single and for the shared person.
        person_prefix = {i: (f"{request.items[i].field}." if request.mode == "pairs" else "")
                         for i in range(n)}

        # 1. Load and size-check every input before any model work.
        persons_loaded: dict = {}
        person_errors: dict = {}
        for p_index, spec in enumerate(request.persons):
            try:
                persons_loaded[p_index] = self._load_person(spec, timings)
            except VTONError as err:
                person_errors[p_index] = err
        clothes_loaded: dict = {}
        for st, item in zip(states, request.items):
            if item.person in person_errors:
                st.error = person_errors[item.person]
                continue
            try:
                clothes_loaded[st.index] = self._load_cloth(item.cloth, timings)
            except VTONError as err:
                st.error = err
        self._progress(job, request, "inputs", n)

        # 2. Person analysis (once per distinct person) and garment preparation.
        prepared_persons: dict = {}
        for p_index, spec in enumerate(request.persons):
            if p_index in person_errors:
                continue
            users = [st for st, it in zip(states, request.items)
                     if it.person == p_index and st.error is None]
            if not users:
                continue
            prefix = person_prefix[users[0].index]
            t0 = time.perf_counter()
            try:
                prepared_persons[p_index] = self._prepare_person(spec, persons_loaded[p_index], prefix)
            except VTONError as err:
                person_errors[p_index] = err
            except Exception as err:  # noqa: BLE001 - isolated per item, logged below
                person_errors[p_index] = self._internal(job_id, err, users)
            _stage(timings, "person", t0)
            for st in users:
                if p_index in person_errors:
                    st.error = st.error or person_errors[p_index]
                else:
                    st.person_hit = prepared_persons[p_index][1]
                    if st.person_hit:   # its analysis timings belong to an earlier job
                        st.person_stages = tuple(prepared_persons[p_index][0].timings_ms)
        t0 = time.perf_counter()
        for st, item in zip(states, request.items):
            if st.error is not None:
                continue
            cloth_prefix = f"{item.field}." if item.field else ""
            try:
                st.cloth = self._prepare_cloth(item.cloth, clothes_loaded[st.index], cloth_prefix)
            except VTONError as err:
                st.error = err
            except Exception as err:  # noqa: BLE001
                st.error = self._internal(job_id, err, [st])
        _stage(timings, "cloth", t0)
        self._progress(job, request, "prepared", n)

        # 3. One batched forward pass for every item still standing.
        ready = [st for st in states if st.error is None]
        t0 = time.perf_counter()
        if ready:
            persons = [prepared_persons[request.items[st.index].person][0] for st in ready]
            self._run_items(job_id, ready, persons, request.options.output_size)
        _stage(timings, "model", t0)
        self._progress(job, request, "model", n)

        # 4. Encode and deliver (inline, or S3 when the response is too large).
        t0 = time.perf_counter()
        encoded = {st.index: self._encode(st.result, request.options)
                   for st in states if st.error is None}
        flat = [(f"{name}-{i}", data, fmt) for i, parts in encoded.items() for name, data, fmt in parts]
        delivery, values = deliver(
            flat, job_id=job_id, max_response_bytes=self.settings.max_response_bytes,
            bucket_endpoint_url=self.settings.bucket_endpoint_url)
        _stage(timings, "encode", t0)
        timings["total"] = round((time.perf_counter() - t_job) * 1000.0, 3)

        values_iter = iter(values)
        items_out = []
        for st in states:
            if st.error is not None:
                items_out.append({"index": st.index, "success": False,
                                  "error": st.error.client_message()})
                continue
            parts = [(name, fmt, next(values_iter)) for name, _data, fmt in encoded[st.index]]
            items_out.append(self._item_output(st, parts, delivery, request.options))

        weights = self.model.weights.short()
        refresh = any(st.cuda_fault for st in states)
        self._log_job(job_id, request, states, persons_loaded, timings)
        if not request.is_batch:
            out = items_out[0]
            if not out["success"]:
                result = {"error": out["error"]}
                if refresh:
                    result["refresh_worker"] = True
                return result
            out.pop("index")
            out["weights"] = weights
            out["timings_ms"] = timings
            return out
        ok = sum(1 for o in items_out if o["success"])
        result = {"success": ok == n, "succeeded": ok, "failed": n - ok, "results": items_out,
                  "weights": weights, "timings_ms": timings}
        if refresh:
            result["refresh_worker"] = True
        return result

    def _run_items(self, job_id: str, ready: list, persons: list, output_size: str, *,
                   oom_retried: bool = False) -> None:
        """Run the ready items in one call, isolating failures to the items that cause them.

        * An unexpected error in a batch: the items are retried one by one, so one bad item
          does not fail the others.
        * GPU out of memory: the cache is emptied and the batch retried in halves, down to
          single items; a single item is retried once more. An item that still runs out of
          memory alone fails (``INTERNAL``) and asks for a fresh worker (``refresh_worker``):
          every item has the same fixed network size, so that GPU is in a bad state.
        * A CUDA fault: every item of the call fails and the worker is refreshed.
        """
        try:
            results = self._run(persons, [st.cloth for st in ready], output_size)
            for st, res in zip(ready, results):
                st.result = res
            return
        except VTONError as err:
            for st in ready:
                st.error = err
            return
        except Exception as err:  # noqa: BLE001
            if is_out_of_memory(err):
                free_gpu_memory()
                if len(ready) > 1:
                    half = len(ready) // 2
                    log.warning("job %s: out of GPU memory on %d items; retrying as %d + %d",
                                job_id, len(ready), half, len(ready) - half)
                    self._run_items(job_id, ready[:half], persons[:half], output_size)
                    self._run_items(job_id, ready[half:], persons[half:], output_size)
                    return
                if not oom_retried:
                    log.warning("job %s: out of GPU memory on item %d; retrying once",
                                job_id, ready[0].index)
                    self._run_items(job_id, ready, persons, output_size, oom_retried=True)
                    return
                ready[0].cuda_fault = True
                log.error("job %s: item %d still out of GPU memory alone; the worker will be "
                          "refreshed", job_id, ready[0].index, exc_info=err)
                ready[0].error = VTONError("the worker ran out of GPU memory for this item; "
                                           "it has been logged, retry the job")
                return
            if is_cuda_fault(err) or len(ready) == 1:
                internal = self._internal(job_id, err, ready)
                for st in ready:
                    st.error = internal
                return
            log.warning("job %s: batched run failed (%s); retrying items one by one",
                        job_id, type(err).__name__)
        for st, person in zip(ready, persons):
            self._run_items(job_id, [st], [person], output_size)

    def _internal(self, job_id: str, err: BaseException, states: list) -> VTONError:
        """Log an unexpected error with the job id; the client gets the generic INTERNAL."""
        fault = is_cuda_fault(err)
        for st in states:
            st.cuda_fault = st.cuda_fault or fault
        log.error("job %s: internal error in items %s%s", job_id, [st.index for st in states],
                  " (CUDA fault: the worker will be refreshed)" if fault else "", exc_info=err)
        internal = VTONError("the worker failed to process this item; it has been logged")
        return internal

    def _encode(self, result, options: Options) -> list:
        """[(name, bytes, fmt)]: the result in the requested format, intermediates as PNG."""
        parts = [("result_image", encoding.encode_image(result.image, options.output_format,
                                                        options.jpeg_quality),
                  options.output_format)]
        if options.return_intermediates:
            images = {"warped_cloth": result.warped_cloth, "warped_mask": result.warped_mask,
                      "composite_mask": result.composite_mask,
                      "parse": encoding.parse_image(result.parse),
                      "pose_overlay": encoding.pose_overlay(result.model_image, result.keypoints)}
            parts += [(name, encoding.encode_image(images[name], "png", 100), "png")
                      for name in INTERMEDIATES]
        return parts

    def _item_output(self, st: _ItemState, parts: list, delivery: str, options: Options) -> dict:
        result = st.result
        (_, fmt, value), rest = parts[0], parts[1:]
        out: dict = {"index": st.index, "success": True}
        out["result_image_url" if delivery == "url" else "result_image"] = value
        out.update({"format": fmt, "width": result.image.width, "height": result.image.height,
                    "output_size": options.output_size, "person_cache_hit": bool(st.person_hit),
                    "random_weights": bool(result.random_weights), "notes": list(result.notes),
                    "model_timings_ms": {k: round(float(v), 3)
                                         for k, v in result.timings_ms.items()
                                         if k not in st.person_stages}})
        if rest:
            key = "intermediate_urls" if delivery == "url" else "intermediates"
            out[key] = {name: value for name, _fmt, value in rest}
        return out

    # -- side channels --------------------------------------------------------------------------
    def _progress(self, job: dict, request: Request, stage: str, total: int) -> None:
        """Progress updates for batch jobs on RunPod (quiet locally: no job server to tell)."""
        if not request.is_batch or _is_local():
            return
        try:
            import runpod
            runpod.serverless.progress_update(job, {"stage": stage, "items": total})
        except Exception as err:  # noqa: BLE001 - progress is best effort
            log.debug("progress update failed: %s", type(err).__name__)

    def _log_job(self, job_id: str, request: Request, states: list, persons_loaded: dict,
                 timings: dict) -> None:
        """One structured line per job: no image data, no URLs, no secrets."""
        errors = [st.error.code for st in states if st.error is not None]
        line = {"event": "job", "job_id": job_id, "mode": request.mode, "items": len(states),
                "failed": len(errors), "error_codes": sorted(set(errors)),
                "person_sizes": [list(p.size) for p in persons_loaded.values()],
                "person_cache_hits": sum(1 for st in states if st.person_hit),
                "timings_ms": timings,
                "outcome": "FAILED" if (not request.is_batch and errors) else "COMPLETED"}
        log.info(json.dumps(line, separators=(",", ":")))


# ----------------------------------------------------------------------------------------------
# Process-wide state, start-up checks and warm-up
# ----------------------------------------------------------------------------------------------
_WORKER: Optional[Worker] = None
_WORKER_LOCK = threading.Lock()


def load_model(settings: Settings):
    """The CP-VTON+ model as configured (raises CheckpointError naming a missing, unreadable or
    tampered file: with GMM_SHA256 / TOM_SHA256 set, a file with another sha256 is refused)."""
    from cpvton_infer import CPVTONPlusModel
    return CPVTONPlusModel(settings.checkpoint_dir, device=settings.device,
                           precision=settings.precision, gmm_checkpoint=settings.gmm_checkpoint,
                           tom_checkpoint=settings.tom_checkpoint,
                           gmm_sha256=settings.gmm_sha256, tom_sha256=settings.tom_sha256,
                           allow_random_weights=settings.allow_random_weights,
                           max_pixels=settings.max_image_pixels, backend=settings.backend,
                           openvino_cache_dir=settings.openvino_cache_dir)


def check_gpu(settings: Settings) -> None:
    """Fitness check: with REQUIRE_GPU=1 (or DEVICE=cuda) a CUDA GPU must be visible."""
    import torch
    if (settings.require_gpu or settings.device == "cuda") and not torch.cuda.is_available():
        raise RuntimeError("REQUIRE_GPU=1 or DEVICE=cuda, but no CUDA GPU is visible")


def check_backend(settings: Settings) -> None:
    """Fitness check: BACKEND=openvino needs OpenVINO's CPU runtime (an error saying why not);
    with BACKEND=auto on a CPU worker, its absence is reported here (PyTorch runs the networks)."""
    if settings.backend == "torch":
        return
    import openvino_backend
    try:
        openvino_backend.core()
    except openvino_backend.BackendUnavailable as exc:
        if settings.backend == "openvino":
            raise RuntimeError(f"BACKEND=openvino, but {exc}") from None
        import torch
        if settings.device != "cuda" and not torch.cuda.is_available():
            log.warning("BACKEND=auto on a CPU worker: %s; the networks run on PyTorch (slower)",
                        exc)


def check_checkpoints(settings: Settings) -> None:
    """Fitness check: both checkpoint files exist (unless random weights are allowed)."""
    from vton_core.weights import GMM_FILE, HOW_TO_GET, TOM_FILE
    if settings.allow_random_weights:
        return
    for path in (settings.gmm_checkpoint or settings.checkpoint_dir / GMM_FILE,
                 settings.tom_checkpoint or settings.checkpoint_dir / TOM_FILE):
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}. {HOW_TO_GET}")


def warm_up(worker: Worker) -> float:
    """Load the preprocessing models and run one inference on a drawn person with exact
    annotations, so that the first job pays neither; returns ms."""
    import vton_preprocess
    from worker import sample_images

    t0 = time.perf_counter()
    vton_preprocess.warm_up()
    person = sample_images.synthetic_person()
    cloth = sample_images.garment()
    with worker.model_lock:
        worker.model.try_on(person.image, cloth, parse=person.parse, pose=person.pose,
                            person_mask=person.mask, cloth_mask=sample_images.garment_mask(cloth))
    return round((time.perf_counter() - t0) * 1000.0, 1)


def start_worker(settings: Settings) -> Worker:
    """Fitness checks, model loading and warm-up; the result serves every job of the process."""
    check_gpu(settings)
    check_backend(settings)
    check_checkpoints(settings)
    t0 = time.perf_counter()
    model = load_model(settings)
    worker = Worker(settings, model)
    info = model.weights.short()
    log.info("model loaded in %.0f ms on %s, backend %s (%s), %s; weights gmm=%s tom=%s "
             "random=%s", (time.perf_counter() - t0) * 1000.0, model.device, model.backend,
             model.backend_reason, model.precision, info["gmm_sha256"], info["tom_sha256"],
             info["random"])
    if info["random"]:
        log.warning("RANDOM WEIGHTS (ALLOW_RANDOM_WEIGHTS=1): results are not real try-ons")
    if settings.warmup:
        log.info("warm-up inference took %.0f ms", warm_up(worker))
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
def handler(job: Any) -> dict:
    """RunPod handler: ``job["input"]`` → output dict, or ``{"error": "<CODE>: <message>"}``.

    Never raises: invalid input is a typed error naming the field, anything unexpected is logged
    with the job id and returned as ``INTERNAL`` (with ``refresh_worker`` after a CUDA fault).
    """
    job_id = "unknown"
    try:
        if isinstance(job, dict):
            job_id = str(job.get("id", "local"))[:128]
        else:
            raise InvalidInput("job: expected an object with an 'input' field", field="job")
        worker = get_worker()
        request = parse_request(job.get("input"), max_items=worker.settings.max_batch_items)
        return worker.process(request, {**job, "id": job_id})
    except VTONError as err:
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
    """``handler`` in a thread, so that CONCURRENCY > 1 overlaps downloads and encoding."""
    return await asyncio.to_thread(handler, job)


def configure_logging(level: str) -> None:
    """Worker-process logging: one line per record on stderr, level from LOG_LEVEL."""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("cpvton").setLevel(level)


def main() -> None:
    import runpod

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    if _is_local():
        # Local run (test_input.json or the dev API server): the SDK runs no fitness checks,
        # so start here and fail loudly on a broken setup.
        try:
            set_worker(start_worker(settings))
        except Exception as err:  # noqa: BLE001
            log.error("worker start-up failed: %s", err)
            sys.exit(1)
    else:
        # On RunPod: the SDK runs these before taking jobs and reports a failure as unhealthy.
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

    concurrency = settings.concurrency
    runpod.serverless.start({
        "handler": handler if concurrency == 1 else async_handler,
        "concurrency_modifier": lambda current: concurrency,
    })


if __name__ == "__main__":
    main()
