"""Shared fixtures: random-weight checkpoints, a CPU model, the golden file (paths: helpers/shared_data.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import handler
from tests.helpers.shared_data import GOLDEN, NO_SHARED
from worker.settings import Settings


@pytest.fixture(scope="session")
def random_ckpt_dir(tmp_path_factory) -> Path:
    """A checkpoint folder with the deterministic random weights in the official format."""
    from vton_core.weights import write_random_checkpoints

    d = tmp_path_factory.mktemp("checkpoints")
    write_random_checkpoints(d)
    return d


@pytest.fixture(scope="session")
def model(random_ckpt_dir):
    """A CPU fp32 PyTorch model loaded from the random-weight checkpoint files (the reference
    that the OpenVINO backend is compared with)."""
    from cpvton_infer import CPVTONPlusModel

    return CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32", backend="torch")


@pytest.fixture(scope="session")
def golden():
    if not GOLDEN.is_file():
        pytest.skip(NO_SHARED)
    with np.load(GOLDEN) as g:
        return {k: g[k] for k in g.files}


@pytest.fixture
def make_worker(model, random_ckpt_dir):
    """Install a worker around the shared model with the given setting overrides."""
    def make(**overrides):
        settings = dataclasses.replace(Settings(checkpoint_dir=random_ckpt_dir, warmup=False,
                                                max_batch_items=4), **overrides)
        worker = handler.Worker(settings, model)
        handler.set_worker(worker)
        return worker
    yield make
    handler.set_worker(None)


@pytest.fixture
def worker(make_worker):
    """A worker with the default test settings, installed as the process's worker."""
    return make_worker()
