"""worker/recovery.py without a model: the joint-pass rule shared by the batcher and a job's items."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from vton_core.errors import InvalidInput, VTONError
from worker import recovery


def test_run_jointly_splits_results_per_part():
    calls = []

    def run(flat):
        calls.append(list(flat))
        return [x * 10 for x in flat]
    assert recovery.run_jointly([[1, 2], [3], [4, 5, 6]], run) == [[10, 20], [30], [40, 50, 60]]
    assert calls == [[1, 2, 3, 4, 5, 6]]


def test_run_jointly_retries_each_part_alone_after_a_joint_failure():
    def run(flat):
        if 3 in flat:
            raise ValueError("bad 3")
        return list(flat)
    out = recovery.run_jointly([[1, 2], [3], [4]], run)
    assert out[0] == [1, 2] and out[2] == [4] and isinstance(out[1], ValueError)


def test_run_jointly_keeps_a_failure_whole_when_told_not_to_retry():
    def run(flat):
        raise InvalidInput("must be one of original, model", field="output_size")
    out = recovery.run_jointly([[1], [2]], run, retry_alone=lambda exc: False)
    assert out[0] is out[1] and isinstance(out[0], InvalidInput)


@dataclass
class _Item:
    index: int
    result: Any = None
    error: Optional[VTONError] = None
    cuda_fault: bool = False


def _internal(exc, items):
    for it in items:
        it.cuda_fault = it.cuda_fault or recovery.is_cuda_fault(exc)
    return VTONError("logged")


def test_run_isolated_halves_on_out_of_memory(monkeypatch):
    monkeypatch.setattr(recovery, "free_gpu_memory", lambda: None)
    sizes = []

    def run(items):
        sizes.append(len(items))
        if len(items) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return [it.index for it in items]
    items = [_Item(i) for i in range(5)]
    recovery.run_isolated(items, run, job_id="j", internal=_internal)
    assert [it.result for it in items] == [0, 1, 2, 3, 4] and sizes == [5, 2, 3, 1, 2]


def test_run_isolated_a_cuda_fault_fails_every_item_once():
    def run(items):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    items = [_Item(i) for i in range(3)]
    recovery.run_isolated(items, run, job_id="j", internal=_internal)
    assert all(it.error is not None and it.cuda_fault for it in items)
    assert len({id(it.error) for it in items}) == 1
