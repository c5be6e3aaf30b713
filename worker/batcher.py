"""Micro-batching: concurrent callers share one forward pass.

When a worker takes several jobs at once (``CONCURRENCY`` > 1), each job's ``model.run`` call is
queued; a single thread takes the first waiting call, collects the calls that arrive within
``max_wait_ms`` (up to ``max_items`` pairs in all), runs them as one batch and hands every caller
its own results. One pass over eight pairs costs far less than eight passes over one on a GPU.
If the joint pass fails, each call is run again on its own, so a failure stays with the call that
caused it.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence

log = logging.getLogger(__name__)

RunFn = Callable[..., list]


@dataclass
class _Call:
    persons: Sequence
    cloths: Sequence
    output_size: str
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Runs ``run_fn(persons, cloths, output_size=...)`` for concurrent callers in shared batches.

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

    def run(self, persons: Sequence, cloths: Sequence, *, output_size: str = "original") -> list:
        """Queue one call and wait for its results (exceptions are re-raised in the caller)."""
        call = _Call(list(persons), list(cloths), output_size)
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
            if nxt.output_size != first.output_size or items + len(nxt.persons) > self._max_items:
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
        self.batches_run += 1
        if len(calls) == 1:
            self._run_one(calls[0])
            return
        persons = [p for c in calls for p in c.persons]
        cloths = [x for c in calls for x in c.cloths]
        try:
            results = self._run_fn(persons, cloths, output_size=calls[0].output_size)
        except BaseException as exc:  # noqa: BLE001 - isolate the failing call below
            log.warning("joint pass over %d calls failed (%s); running them one by one",
                        len(calls), type(exc).__name__)
            for c in calls:
                self._run_one(c)
            return
        start = 0
        for c in calls:
            n = len(c.persons)
            c.future.set_result(results[start:start + n])
            start += n

    def _run_one(self, call: _Call) -> None:
        try:
            call.future.set_result(self._run_fn(call.persons, call.cloths,
                                                output_size=call.output_size))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            call.future.set_exception(exc)
