"""The state of one job as it moves through the pipeline, and the response built from it.

One :class:`JobState` per job holds a :class:`PersonState` per distinct person and an
:class:`ItemState` per try-on item; the stages of :mod:`worker.pipeline` fill them in.
:func:`build_response` and :func:`job_log_line` are pure functions of that state.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from vton_core.errors import JobCancelled, VTONError
from worker.schema import Item, Options, PersonSpec, Request


@dataclass
class LoadedPerson:
    """A person's encoded inputs after the byte and pixel checks (``None``: not supplied)."""

    image: bytes
    size: tuple[int, int]          # (width, height) of the photo
    parse: Optional[bytes] = None
    mask: Optional[bytes] = None


@dataclass
class LoadedCloth:
    """A garment's encoded inputs after the byte and pixel checks (``None``: not supplied)."""

    image: bytes
    size: tuple[int, int]
    mask: Optional[bytes] = None


@dataclass
class PersonState:
    """One distinct person of a job; ``prefix`` is put before its annotation fields in errors."""

    spec: PersonSpec
    prefix: str
    loaded: Optional[LoadedPerson] = None
    prepared: Any = None           # cpvton_infer.PreparedPerson
    cache_hit: bool = False
    error: Optional[VTONError] = None


@dataclass
class ItemState:
    """One try-on item: ends with ``result`` (and its delivered images) or with ``error``."""

    index: int
    item: Item
    person: PersonState
    cloth_loaded: Optional[LoadedCloth] = None
    cloth: Any = None              # cpvton_infer.PreparedCloth
    result: Any = None             # cpvton_infer.TryOnResult
    delivered: list = field(default_factory=list)   # [(name, fmt, base64 text or URL)]
    person_hit: Optional[bool] = None
    person_stages: tuple = ()      # model timings that belong to an earlier job (cache hit)
    error: Optional[VTONError] = None
    cuda_fault: bool = False


@dataclass
class JobState:
    """Everything the pipeline knows about a job; ``timings`` are the job's stages in ms."""

    job: dict
    job_id: str
    request: Request
    persons: list[PersonState]
    items: list[ItemState]
    timings: dict = field(default_factory=dict)
    delivery: str = "inline"       # "inline" (base64) or "url" (S3)
    started: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)   # set: RunPod stopped it

    @classmethod
    def start(cls, request: Request, job: dict,
              cancelled: Optional[threading.Event] = None) -> "JobState":
        # In "pairs" mode person i belongs to pairs[i] and its fields are "pairs[i]."-prefixed.
        persons = []
        for index, spec in enumerate(request.persons):
            prefix = f"{request.items[index].field}." if request.mode == "pairs" else ""
            persons.append(PersonState(spec, prefix))
        items = [ItemState(i, item, persons[item.person]) for i, item in enumerate(request.items)]
        state = cls(job, str(job.get("id", "local")), request, persons, items)
        if cancelled is not None:
            state.cancelled = cancelled
        return state

    def stop_if_cancelled(self, before: str) -> None:
        """Raise :class:`JobCancelled` when the job was cancelled (``before``: the next step)."""
        if self.cancelled.is_set():
            raise JobCancelled(f"the job was cancelled; it stopped before {before}")

    def live(self) -> list[ItemState]:
        """The items that have not failed (yet)."""
        return [it for it in self.items if it.error is None]

    def add_time(self, stage: str, t0: float) -> None:
        """Add the time since ``t0`` (``time.perf_counter``) to ``timings[stage]``."""
        ms = (time.perf_counter() - t0) * 1000.0
        self.timings[stage] = round(self.timings.get(stage, 0.0) + ms, 3)


# ------------------------------------------------------------------------------------------------
# The response (pure)
# ------------------------------------------------------------------------------------------------
def item_output(it: ItemState, delivery: str, options: Options) -> dict:
    """One item's entry of the response (see docs/API.md)."""
    if it.error is not None:
        return {"index": it.index, "success": False, "error": it.error.client_message()}
    result = it.result
    (_, fmt, value), rest = it.delivered[0], it.delivered[1:]
    out: dict = {"index": it.index, "success": True}
    out["result_image_url" if delivery == "url" else "result_image"] = value
    out.update({"format": fmt, "width": result.image.width, "height": result.image.height,
                "output_size": options.output_size,
                "garment_resolution": options.garment_resolution, "person_cache_hit": bool(it.person_hit),
                "random_weights": bool(result.random_weights), "notes": list(result.notes),
                "model_timings_ms": {k: round(float(v), 3) for k, v in result.timings_ms.items()
                                     if k not in it.person_stages}})
    if rest:
        key = "intermediate_urls" if delivery == "url" else "intermediates"
        out[key] = {name: value for name, _fmt, value in rest}
    return out


def build_response(state: JobState, weights: dict) -> dict:
    """The client's output: one item's fields (or ``{"error"}``) for a single try-on, the
    per-item list with counts for a batch; ``refresh_worker`` after a CUDA fault."""
    items_out = [item_output(it, state.delivery, state.request.options) for it in state.items]
    if not state.request.is_batch:
        out = items_out[0]
        if out["success"]:
            out.pop("index")
            response = {**out, "weights": weights, "timings_ms": state.timings}
        else:
            response = {"error": out["error"]}
    else:
        ok = sum(1 for o in items_out if o["success"])
        response = {"success": ok == len(items_out), "succeeded": ok, "failed": len(items_out) - ok,
                    "results": items_out, "weights": weights, "timings_ms": state.timings}
    if any(it.cuda_fault for it in state.items):
        response["refresh_worker"] = True
    return response


def job_log_line(state: JobState) -> str:
    """One structured line per job: sizes, codes and timings; no image data, URLs or secrets."""
    errors = [it.error.code for it in state.items if it.error is not None]
    line = {"event": "job", "job_id": state.job_id, "mode": state.request.mode,
            "items": len(state.items), "failed": len(errors), "error_codes": sorted(set(errors)),
            "person_sizes": [list(p.loaded.size) for p in state.persons if p.loaded is not None],
            "person_cache_hits": sum(1 for it in state.items if it.person_hit),
            "timings_ms": state.timings,
            "outcome": "FAILED" if (not state.request.is_batch and errors) else "COMPLETED"}
    return json.dumps(line, separators=(",", ":"))
