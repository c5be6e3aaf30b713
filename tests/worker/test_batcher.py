"""MicroBatcher: concurrent calls share one pass, each gets its own results and errors."""
from __future__ import annotations

import threading

import pytest

from worker.batcher import MicroBatcher


class Recorder:
    """A stand-in for model.run: returns (person, cloth) tuples and records each pass."""

    def __init__(self, fail_on=None):
        self.passes = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, persons, cloths, output_size="original"):
        with self.lock:
            self.passes.append(list(persons))
        if self.fail_on is not None and self.fail_on in persons:
            raise ValueError(f"bad {self.fail_on}")
        return [(p, c, output_size) for p, c in zip(persons, cloths)]


def run_concurrently(batcher, calls):
    out = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def go(i, persons, cloths):
        barrier.wait()
        try:
            out[i] = batcher.run(persons, cloths)
        except Exception as exc:  # noqa: BLE001
            out[i] = exc

    threads = [threading.Thread(target=go, args=(i, *c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return out


def test_concurrent_calls_share_a_pass_and_get_their_own_results():
    rec = Recorder()
    b = MicroBatcher(rec, max_wait_ms=200, max_items=8)
    calls = [([f"p{i}"], [f"c{i}"]) for i in range(4)]
    out = run_concurrently(b, calls)
    b.close()
    for i, res in enumerate(out):
        assert res == [(f"p{i}", f"c{i}", "original")]
    assert len(rec.passes) < 4                       # at least two calls were joined
    assert sorted(p for ps in rec.passes for p in ps) == [f"p{i}" for i in range(4)]


def test_a_failing_call_fails_alone():
    rec = Recorder(fail_on="p2")
    b = MicroBatcher(rec, max_wait_ms=200, max_items=8)
    out = run_concurrently(b, [([f"p{i}"], [f"c{i}"]) for i in range(4)])
    b.close()
    assert isinstance(out[2], ValueError)
    assert [out[i] for i in (0, 1, 3)] == [[(f"p{i}", f"c{i}", "original")] for i in (0, 1, 3)]


def test_batches_respect_max_items_and_single_calls_do_not_wait_forever():
    rec = Recorder()
    b = MicroBatcher(rec, max_wait_ms=50, max_items=2)
    out = run_concurrently(b, [([f"p{i}"], [f"c{i}"]) for i in range(5)])
    assert all(len(p) <= 2 for p in rec.passes)
    assert all(isinstance(r, list) and len(r) == 1 for r in out)
    assert b.run(["solo"], ["c"]) == [("solo", "c", "original")]
    b.close()


def test_errors_propagate_to_a_lone_caller():
    b = MicroBatcher(Recorder(fail_on="x"), max_wait_ms=1)
    with pytest.raises(ValueError, match="bad x"):
        b.run(["x"], ["c"])
    b.close()
