"""The job pipeline: a validated request through named stages over one :class:`JobState`.

    load inputs → analyse persons → prepare garments → run the networks → encode and deliver
    → build the response (:func:`worker.job.build_response`, pure)

Each stage is a function ``stage(worker, state)`` that records failures on the persons and items
it touches, so that one bad item never fails the others. :meth:`Worker.process` runs them in
one loop: what happens *between* stages (progress updates, and the check for a job that RunPod
cancelled or timed out: :meth:`JobState.stop_if_cancelled`) happens in that one place. A stage
that loops over persons checks before each one too, and a forward pass waiting in the
micro-batcher is dropped, so a stopped job never holds the model lock for long.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, NamedTuple

from vton_core.errors import VTONError
from worker import encoding, inputs
from worker.batcher import MicroBatcher
from worker.delivery import deliver
from worker.encoding import encode_result
from worker.job import ItemState, JobState, LoadedCloth, LoadedPerson, PersonState, build_response, job_log_line
from worker.person_cache import PersonCache, person_key
from worker.recovery import INTERNAL_ITEM_MESSAGE, is_cuda_fault, run_isolated
from worker.schema import ClothSpec, ImageRef, PersonSpec, Request
from worker.settings import Settings

log = logging.getLogger("cpvton.worker")

#: How long a job's forward pass waits for concurrent jobs to join it (CONCURRENCY > 1).
MICROBATCH_WAIT_MS = 10.0


# ------------------------------------------------------------------------------------------------
# The stages
# ------------------------------------------------------------------------------------------------
def load_inputs(worker: "Worker", state: JobState) -> None:
    """Fetch or decode every input and check its size (and that the output format can hold the
    result), before any model work."""
    options = state.request.options
    for person in state.persons:
        try:
            person.loaded = worker.load_person(person.spec, state)
            encoding.check_output_fits(options.output_format, options.output_size,
                                       person.loaded.size, model_size=worker.model.model_size)
        except VTONError as err:
            person.error = err
    for it in state.items:
        if it.person.error is not None:
            it.error = it.person.error
            continue
        try:
            it.cloth_loaded = worker.load_cloth(it.item.cloth, state)
        except VTONError as err:
            it.error = err


def analyse_persons(worker: "Worker", state: JobState) -> None:
    """Prepare each distinct person once (from the cache when its inputs were seen before)."""
    for person in state.persons:
        users = [it for it in state.live() if it.person is person]
        if person.error is not None or not users:
            continue
        state.stop_if_cancelled("analysing a person")
        t0 = time.perf_counter()
        try:
            person.prepared, person.cache_hit = worker.analyse_person(person)
        except VTONError as err:
            person.error = err
        except Exception as err:  # noqa: BLE001 - isolated to this person's items, logged
            person.error = worker.internal(state.job_id, err, users)
        state.add_time("person", t0)
        for it in users:
            if person.error is not None:
                it.error = person.error
                continue
            it.person_hit = person.cache_hit
            if person.cache_hit:   # its analysis timings belong to an earlier job
                it.person_stages = tuple(person.prepared.timings_ms)


def prepare_garments(worker: "Worker", state: JobState) -> None:
    """Decode each garment and its mask (or segment it) at the model size."""
    t0 = time.perf_counter()
    for it in state.live():
        try:
            it.cloth = worker.prepare_garment(it)
        except VTONError as err:
            it.error = err
        except Exception as err:  # noqa: BLE001 - isolated to this item, logged
            it.error = worker.internal(state.job_id, err, [it])
    state.add_time("cloth", t0)


def run_networks(worker: "Worker", state: JobState) -> None:
    """One batched forward pass for every item still standing (failures isolated per item)."""
    ready = state.live()
    options = state.request.options.result_options()
    t0 = time.perf_counter()
    if ready:
        def run(items: list) -> list:
            return worker.run([it.person.prepared for it in items], [it.cloth for it in items],
                              options, cancelled=state.cancelled)
        run_isolated(ready, run, job_id=state.job_id,
                     internal=lambda exc, items: worker.internal(state.job_id, exc, items))
    state.add_time("model", t0)


def encode_and_deliver(worker: "Worker", state: JobState) -> None:
    """Encode each result and deliver every image inline (base64) or through S3 when too large."""
    t0 = time.perf_counter()
    live = state.live()
    encoded = {it.index: encode_result(it.result, state.request.options) for it in live}
    flat = [(f"{name}-{it.index}", data, fmt) for it in live for name, data, fmt in encoded[it.index]]
    state.delivery, values = deliver(
        flat, job_id=state.job_id, max_response_bytes=worker.settings.max_response_bytes,
        bucket=worker.settings.bucket)
    values_iter = iter(values)
    for it in live:
        it.delivered = [(name, fmt, next(values_iter)) for name, _data, fmt in encoded[it.index]]
    state.add_time("encode", t0)
    state.timings["total"] = round((time.perf_counter() - state.started) * 1000.0, 3)


class Stage(NamedTuple):
    run: Callable[["Worker", JobState], None]
    progress: str | None      # the progress update sent after it (batch jobs on RunPod)


STAGES = (Stage(load_inputs, "inputs"), Stage(analyse_persons, None),
          Stage(prepare_garments, "prepared"), Stage(run_networks, "model"),
          Stage(encode_and_deliver, None))


# ------------------------------------------------------------------------------------------------
# The worker
# ------------------------------------------------------------------------------------------------
class Worker:
    """The loaded model, the person cache and the settings; one per process.

    Model calls are serialised with a lock (one GPU, preprocessing that is not re-entrant);
    downloads, decoding and encoding of concurrent jobs overlap. With ``CONCURRENCY`` > 1 the
    forward passes of concurrent jobs are micro-batched (:mod:`worker.batcher`): one pass, each
    job getting its own results.
    """

    def __init__(self, settings: Settings, model: Any):
        self.settings = settings
        self.model = model
        #: What every response says about the weights: the CP-VTON+ checkpoints and the parser.
        self.identity = {**model.weights.short(),
                         "parser_sha256": model.person_parser.sha256[:12]}
        self.cache = PersonCache(settings.person_cache_size,
                                 max_bytes=settings.person_cache_mb * 2 ** 20)
        self.model_lock = threading.Lock()
        self.batcher = (MicroBatcher(self._run_locked, max_wait_ms=MICROBATCH_WAIT_MS,
                                     max_items=settings.max_batch_items)
                        if settings.concurrency > 1 else None)

    def process(self, request: Request, job: dict,
                cancelled: threading.Event | None = None) -> dict:
        """Run a validated request through the stages; returns the client's output dict.

        ``cancelled``: set when RunPod cancels the job or it times out; the job then stops at the
        next stage with :class:`vton_core.errors.JobCancelled`.
        """
        state = JobState.start(request, job, cancelled)
        for stage in STAGES:
            state.stop_if_cancelled(stage.run.__name__)
            stage.run(self, state)
            if stage.progress is not None:
                self._progress(state, stage.progress)
        log.info(job_log_line(state))
        return build_response(state, self.identity)

    def warm_up(self) -> float:
        """Load the preprocessing models and run one inference on a drawn person with exact
        annotations, so that the first job pays neither; returns ms."""
        import vton_preprocess
        from worker import sample_images

        t0 = time.perf_counter()
        vton_preprocess.warm_up(parser=self.model.person_parser)
        person, cloth = sample_images.synthetic_person(), sample_images.garment()
        with self.model_lock:
            self.model.try_on(person.image, cloth, parse=person.parse, pose=person.pose,
                              person_mask=person.mask, cloth_mask=sample_images.garment_mask(cloth))
        return round((time.perf_counter() - t0) * 1000.0, 1)

    # -- inputs ---------------------------------------------------------------------------------
    def load_image(self, ref: ImageRef, state: JobState) -> tuple[bytes, tuple[int, int]]:
        """(bytes, (w, h)) of one image input, within the byte and pixel limits."""
        s = self.settings
        t0 = time.perf_counter()
        data = inputs.load_bytes(ref, max_bytes=s.max_input_bytes, url_timeout_s=s.url_timeout_s,
                                 url_max_bytes=s.url_max_bytes)
        state.add_time("fetch" if ref.url else "decode", t0)
        return data, inputs.image_size(data, field=ref.field, max_pixels=s.max_image_pixels)

    def load_person(self, spec: PersonSpec, state: JobState) -> LoadedPerson:
        image, size = self.load_image(spec.image, state)
        parse = self.load_image(spec.parse, state)[0] if spec.parse is not None else None
        mask = self.load_image(spec.mask, state)[0] if spec.mask is not None else None
        return LoadedPerson(image, size, parse=parse, mask=mask)

    def load_cloth(self, spec: ClothSpec, state: JobState) -> LoadedCloth:
        image, size = self.load_image(spec.image, state)
        mask = self.load_image(spec.mask, state)[0] if spec.mask is not None else None
        return LoadedCloth(image, size, mask=mask)

    # -- model steps ----------------------------------------------------------------------------
    def analyse_person(self, person: PersonState) -> tuple[Any, bool]:
        """(PreparedPerson, cache_hit), analysed at most once per distinct content."""
        spec, loaded = person.spec, person.loaded
        key = person_key(loaded.image, parse=loaded.parse, pose=spec.pose, mask=loaded.mask)

        def create():
            with self.model_lock:
                return self.model.prepare_person(loaded.image, parse=loaded.parse, pose=spec.pose,
                                                 person_mask=loaded.mask)
        try:
            return self.cache.get_or_create(key, create)
        except VTONError as err:
            fields = {name: person.prefix + name
                      for name in ("person_parse", "person_pose", "person_mask")}
            raise err.with_field(fields.get(err.field, spec.image.field)) from None

    def prepare_garment(self, it: ItemState) -> Any:
        """The item's PreparedCloth; errors name the item's own cloth fields."""
        spec, loaded = it.item.cloth, it.cloth_loaded
        try:
            with self.model_lock:
                return self.model.prepare_cloth(loaded.image, cloth_mask=loaded.mask)
        except VTONError as err:
            prefix = f"{it.item.field}." if it.item.field else ""
            mask_field = prefix + "cloth_mask"
            raise err.with_field(mask_field if err.field == "cloth_mask" else spec.image.field) from None

    def _run_locked(self, persons: list, cloths: list, **options) -> list:
        with self.model_lock:
            return self.model.run(persons, cloths, **options)

    def run(self, persons: list, cloths: list, options: dict,
            cancelled: threading.Event | None = None) -> list:
        """``model.run(persons, cloths, **options)`` under the lock (``options``: the request's
        :meth:`worker.schema.Options.result_options`), micro-batched with concurrent jobs when
        enabled; a call of a job cancelled while it waited is dropped
        (:class:`vton_core.errors.JobCancelled`)."""
        if self.batcher is not None:
            return self.batcher.run(persons, cloths, cancelled=cancelled, **options)
        return self._run_locked(persons, cloths, **options)

    # -- side channels --------------------------------------------------------------------------
    def internal(self, job_id: str, err: BaseException, items: list) -> VTONError:
        """Log an unexpected error with the job id; the client gets the generic INTERNAL."""
        fault = is_cuda_fault(err)
        for it in items:
            it.cuda_fault = it.cuda_fault or fault
        log.error("job %s: internal error in items %s%s", job_id, [it.index for it in items],
                  " (CUDA fault: the worker will be refreshed)" if fault else "", exc_info=err)
        return VTONError(INTERNAL_ITEM_MESSAGE)

    def _progress(self, state: JobState, stage: str) -> None:
        """Progress updates for batch jobs on RunPod (quiet locally: no job server to tell)."""
        if not state.request.is_batch or is_local():
            return
        try:
            import runpod
            runpod.serverless.progress_update(state.job, {"stage": stage, "items": len(state.items)})
        except Exception as err:  # noqa: BLE001 - progress is best effort
            log.debug("progress update failed: %s", type(err).__name__)


def is_local() -> bool:
    """True unless running on RunPod's job queue (the SDK's own test)."""
    from runpod.serverless.modules.worker_state import IS_LOCAL_TEST
    return bool(IS_LOCAL_TEST)
