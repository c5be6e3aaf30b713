"""Cancelled and timed-out jobs stop (issue 13, finding 3): with CONCURRENCY > 1 the SDK cancels
the job's asyncio task, and the thread doing the work must notice and stop at the next stage
instead of running on under the model lock."""
from __future__ import annotations

import threading
import time

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
