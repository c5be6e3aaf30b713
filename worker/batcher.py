"""Micro-batching: concurrent callers share one forward pass.

When a worker takes several jobs at once (``CONCURRENCY`` > 1), each job's ``model.run`` call is
queued; a single thread takes the first waiting call, collects the calls that arrive within
``max_wait_ms`` (up to ``max_items`` pairs in all), runs them as one batch and hands every caller
its own results. One pass over eight pairs costs far less than eight passes over one on a GPU.
If the joint pass fails, each call is run again on its own, so a failure stays with the call that
caused it (the rule of :func:`worker.recovery.run_jointly`, which a job applies to its items too).
A call whose job was cancelled while it waited is dropped (its caller gets
:class:`vton_core.errors.JobCancelled`), so a stopped job never takes a place in a pass.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from vton_core.errors import JobCancelled
from worker.recovery import run_jointly

RunFn = Callable[..., list]


@dataclass
class _Call:
    persons: Sequence
    cloths: Sequence
    options: dict                  # the result options (output_size, garment_resolution)
    cancelled: Optional[threading.Event] = None
    future: Future = field(default_factory=Future)

    def drop_if_cancelled(self) -> bool:
        """True (and the caller told) when the call's job was cancelled."""
        if self.cancelled is None or not self.cancelled.is_set():
            return False
        self.future.set_exception(JobCancelled("the job was cancelled before its forward pass"))
        return True


class MicroBatcher:
    """Runs ``run_fn(persons, cloths, **options)`` for concurrent callers in shared batches (calls
    join a batch only with the same result options, e.g. ``output_size``).

    Args:
        run_fn: the batched function (``CPVTONPlusModel.run``), returning one result per pair.
        max_wait_ms: how long the first call of a batch waits for company (bounded latency cost).
        max_items: the most pairs in one joint pass.
    """

    def __init__(self, run_fn: RunFn, *, max_wait_ms: float = 10.0, max_items: int = 8):
        self._run_fn = run_fn
        self._max_wait = max_wait_ms / 1000.0
        self._max_items = max(1, max_items)
        self._queue: "queue.Queue[_Call | None]" = queue.Queue()
        self._pending: _Call | None = None   # a call that did not fit the last batch
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()
        self.batches_run = 0          # joint passes so far (for tests and logs)

    def run(self, persons: Sequence, cloths: Sequence, *,
            cancelled: Optional[threading.Event] = None, **options) -> list:
        """Queue one call and wait for its results (exceptions are re-raised in the caller).

        ``cancelled``: the job's cancellation flag; a call still waiting when it is set is
        dropped with :class:`errors.JobCancelled`. ``options`` are passed to ``run_fn``.
        """
        call = _Call(list(persons), list(cloths), options, cancelled)
        self._queue.put(call)
        return call.future.result()

    def close(self) -> None:
        """Stop the batching thread after the calls already queued."""
        self._queue.put(None)
        self._thread.join(timeout=5)

    # -- the batching thread --------------------------------------------------------------------
    def _collect(self, first: _Call) -> tuple[list[_Call], bool]:
        """The first call plus compatible calls arriving before the deadline; (calls, stop)."""
        calls, items = [first], len(first.persons)
        deadline = time.monotonic() + self._max_wait
        while items < self._max_items:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                nxt = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if nxt is None:
                return calls, True
            if nxt.drop_if_cancelled():
                continue
            if nxt.options != first.options or items + len(nxt.persons) > self._max_items:
                self._pending = nxt          # not joinable: it starts the next batch

                break
            calls.append(nxt)
            items += len(nxt.persons)
        return calls, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._pending if self._pending is not None else self._queue.get()
            self._pending = None
            if first is None:
                return
            calls, stop = self._collect(first)
            self._execute(calls)

    def _execute(self, calls: list[_Call]) -> None:
        """One joint pass; if it fails, each call alone (:func:`worker.recovery.run_jointly`).
        Calls whose job was cancelled meanwhile are dropped first."""
        calls = [c for c in calls if not c.drop_if_cancelled()]
        if not calls:
            return
        self.batches_run += 1
        options = calls[0].options

        def run(pairs: list) -> list:
            return self._run_fn([p for p, _ in pairs], [c for _, c in pairs], **options)
        try:
            outcomes = run_jointly([list(zip(c.persons, c.cloths)) for c in calls], run)
        except BaseException as exc:  # noqa: BLE001 - never leave a caller waiting
            outcomes = [exc] * len(calls)
        for call, outcome in zip(calls, outcomes):
            if isinstance(outcome, BaseException):
                call.future.set_exception(outcome)
            else:
                call.future.set_result(outcome)
