"""Cancelled and timed-out jobs stop (issue 13, finding 3): with CONCURRENCY > 1 the SDK cancels
the job's asyncio task, and the thread doing the work must notice and stop at the next stage
instead of running on under the model lock."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

import handler
from tests.helpers.worker_inputs import cloth_fields, person_fields
from vton_core.errors import JobCancelled
from worker.batcher import MicroBatcher


def test_a_call_cancelled_while_waiting_is_dropped_from_the_batch():
    gate, seen = threading.Event(), []

    def run_fn(persons, cloths, output_size="original"):
        seen.append(list(persons))
        gate.wait(10)
        return [(p, c) for p, c in zip(persons, cloths)]

    b = MicroBatcher(run_fn, max_wait_ms=1, max_items=8)
    results, cancelled = {}, threading.Event()

    def call(name, flag=None):
        try:
            results[name] = b.run([name], ["c"], cancelled=flag)
        except JobCancelled as exc:
            results[name] = exc

    first = threading.Thread(target=call, args=("busy",))
    first.start()
    while not seen:                      # the batching thread is inside the first pass
        time.sleep(0.01)
    second = threading.Thread(target=call, args=("stopped", cancelled))
    second.start()
    time.sleep(0.1)                      # queued behind the running pass
    cancelled.set()
    gate.set()
    first.join(10)
    second.join(10)
    b.close()
    assert results["busy"] == [("busy", "c")]
    assert isinstance(results["stopped"], JobCancelled)
    assert seen == [["busy"]]            # the cancelled call never reached the model


@pytest.fixture
def concurrent_worker(make_worker):
    return make_worker(concurrency=2, max_batch_items=8)


def test_a_cancelled_job_stops_at_the_next_stage(concurrent_worker, model, monkeypatch):
    """RunPod cancels (or times out) a job while its person is being analysed: the SDK cancels
    the coroutine; the thread finishes that step and stops, never reaching garments or networks."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    real_prepare, calls, outcome = model.prepare_person, [], []

    def slow_prepare_person(*args, **kwargs):
        entered.set()
        release.wait(60)
        return real_prepare(*args, **kwargs)

    def record(name, real):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return wrapped

    def process(*args, **kwargs):
        try:
            outcome.append(real_process(*args, **kwargs))
        except BaseException as exc:
            outcome.append(exc)
            raise
        finally:
            finished.set()

    real_process = concurrent_worker.process
    monkeypatch.setattr(model, "prepare_person", slow_prepare_person)
    monkeypatch.setattr(model, "prepare_cloth", record("prepare_cloth", model.prepare_cloth))
    monkeypatch.setattr(model, "run", record("run", model.run))
    monkeypatch.setattr(concurrent_worker, "process", process)

    async def cancel_while_analysing():
        task = asyncio.create_task(handler.async_handler(
            {"id": "to-cancel", "input": {**person_fields(), **cloth_fields()}}))
        assert await asyncio.to_thread(entered.wait, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_analysing())
    release.set()
    assert finished.wait(60)
    assert isinstance(outcome[0], JobCancelled), outcome
    assert calls == []                                   # no garment, no forward pass
    assert concurrent_worker.model_lock.acquire(timeout=10)
    concurrent_worker.model_lock.release()


def test_a_job_that_is_not_cancelled_runs_through_the_async_handler(concurrent_worker):
    out = asyncio.run(handler.async_handler({"id": "kept", "input": {**person_fields(),
                                                                     **cloth_fields()}}))
    assert out["success"] is True, out


def test_cancellation_before_any_stage_is_a_typed_error(concurrent_worker):
    from worker.schema import parse_request

    flag = threading.Event()
    flag.set()
    request = parse_request({**person_fields(), **cloth_fields()}, max_items=4)
    with pytest.raises(JobCancelled):
        concurrent_worker.process(request, {"id": "early"}, flag)
