"""Recovery from failures of a joint forward pass: out of GPU memory, CUDA faults, bad items.

Two levels use the same rule (:func:`run_jointly`): the micro-batcher, over the calls of
concurrent jobs, and a job, over its own items (:func:`run_isolated`). A joint pass that fails is
retried part by part, so that a failure stays with the part that caused it.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence, TypeVar

from vton_core.errors import VTONError

log = logging.getLogger("cpvton.worker")

P = TypeVar("P")
#: What a client sees for an item that failed unexpectedly (the details go to the worker log).
INTERNAL_ITEM_MESSAGE = "the worker failed to process this item; it has been logged"
OOM_ITEM_MESSAGE = "the worker ran out of GPU memory for this item; it has been logged, retry the job"
#: Text in the RuntimeError of a CUDA context that cannot be used any more.
_CUDA_FAULT_MARKERS = ("CUDA error", "cuDNN error", "CUBLAS_STATUS", "device-side assert")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a GPU out-of-memory error (retried in smaller chunks, see :func:`run_isolated`)."""
    torch = sys.modules.get("torch")      # not loaded: the error cannot be one of its types
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def is_cuda_fault(exc: BaseException) -> bool:
    """True for errors that leave a CUDA context unusable (the worker should be replaced).

    An out-of-memory error is not one: the context survives it (see :func:`is_out_of_memory`).
    """
    if is_out_of_memory(exc):
        return False
    torch = sys.modules.get("torch")
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _CUDA_FAULT_MARKERS)


def free_gpu_memory() -> None:
    """Return cached GPU blocks to the driver before a retry (no-op without CUDA)."""
    torch = sys.modules.get("torch")       # not loaded: no GPU memory of ours to free
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as err:  # noqa: BLE001 - best effort
        log.debug("empty_cache failed: %s", type(err).__name__)


def run_jointly(parts: Sequence[Sequence[P]], run: Callable[[list[P]], list], *,
                retry_alone: Callable[[Exception], bool] = lambda exc: True) -> list:
    """``run`` over all parts at once, its results split back per part.

    ``run`` takes a flat list and returns one result per element. If the joint call fails and
    ``retry_alone(exc)`` agrees, each part is run on its own, so that a failure stays with the part
    that caused it. Returns, per part, its list of results or the exception it ended with.
    """
    flat = [x for part in parts for x in part]
    try:
        results = run(flat)
    except Exception as exc:  # noqa: BLE001 - handed back per part
        if len(parts) == 1 or not retry_alone(exc):
            return [exc] * len(parts)
        log.warning("joint pass over %d parts failed (%s); running them one by one",
                    len(parts), type(exc).__name__)
        return [_run_alone(part, run) for part in parts]
    out, start = [], 0
    for part in parts:
        out.append(results[start:start + len(part)])
        start += len(part)
    return out


def _run_alone(part: Sequence[P], run: Callable[[list[P]], list]):
    try:
        return run(list(part))
    except Exception as exc:  # noqa: BLE001 - handed back
        return exc


def _retry_items_alone(exc: Exception) -> bool:
    """A client error, OOM or CUDA fault is not cured by running the items one by one."""
    return not (isinstance(exc, VTONError) or is_out_of_memory(exc) or is_cuda_fault(exc))


InternalFn = Callable[[BaseException, list], VTONError]


def run_isolated(items: list, run: Callable[[list], list], *, job_id: str, internal: InternalFn,
                 oom_retried: bool = False) -> None:
    """Run a job's items in one call of ``run``, isolating failures to the items that cause them.

    ``items`` have ``index``, ``result``, ``error`` and ``cuda_fault`` attributes; each ends with
    a ``result`` or an ``error``. ``internal(exc, items)`` logs an unexpected error and returns
    the client's error.

    * An unexpected error in a batch: the items are retried one by one.
    * A client error (:class:`VTONError`): every item of the call gets it.
    * GPU out of memory: the cache is emptied and the batch retried in halves, down to single
      items; a single item is retried once more. An item that still runs out of memory alone
      fails (``INTERNAL``) and asks for a fresh worker (``cuda_fault``): every item has the same
      fixed network size, so that GPU is in a bad state.
    * A CUDA fault: every item of the call fails (``internal`` marks them for a fresh worker).
    """
    outcomes = run_jointly([[it] for it in items], run, retry_alone=_retry_items_alone)
    failures: dict[int, tuple[Exception, list]] = {}
    for it, outcome in zip(items, outcomes):
        if isinstance(outcome, Exception):
            failures.setdefault(id(outcome), (outcome, []))[1].append(it)
        else:
            it.result = outcome[0]
    for exc, group in failures.values():
        if isinstance(exc, VTONError):
            for it in group:
                it.error = exc
        elif is_out_of_memory(exc):
            _retry_out_of_memory(group, run, exc, job_id=job_id, internal=internal,
                                 oom_retried=oom_retried)
        else:
            error = internal(exc, group)
            for it in group:
                it.error = error


def _retry_out_of_memory(group: list, run: Callable[[list], list], exc: Exception, *, job_id: str,
                         internal: InternalFn, oom_retried: bool) -> None:
    free_gpu_memory()
    if len(group) > 1:
        half = len(group) // 2
        log.warning("job %s: out of GPU memory on %d items; retrying as %d + %d",
                    job_id, len(group), half, len(group) - half)
        run_isolated(group[:half], run, job_id=job_id, internal=internal)
        run_isolated(group[half:], run, job_id=job_id, internal=internal)
    elif not oom_retried:
        log.warning("job %s: out of GPU memory on item %d; retrying once", job_id, group[0].index)
        run_isolated(group, run, job_id=job_id, internal=internal, oom_retried=True)
    else:
        item = group[0]
        item.cuda_fault = True
        log.error("job %s: item %d still out of GPU memory alone; the worker will be refreshed",
                  job_id, item.index, exc_info=exc)
        item.error = VTONError(OOM_ITEM_MESSAGE)
