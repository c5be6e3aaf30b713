"""The person cache is bounded by bytes (issue 13, finding 6): large photos cannot pile up in
memory while the worker is idle, whatever PERSON_CACHE_SIZE says."""
from __future__ import annotations

import dataclasses

import numpy as np
import psutil
import pytest

import handler
from tests.helpers.worker_inputs import b64, cloth_fields
from worker import sample_images
from worker.person_cache import PersonCache
from worker.settings import Settings


class Blob:
    def __init__(self, nbytes):
        self.nbytes = nbytes


def test_cache_evicts_least_recently_used_to_stay_within_the_budget():
    cache = PersonCache(16, max_bytes=100)
    for key in "abcd":
        cache.put(key, Blob(30))
    assert len(cache) == 3 and cache.nbytes == 90 and cache.get("a") is None
    cache.get("b")                                    # b is now the most recently used
    cache.put("e", Blob(60))
    assert cache.get("b") is not None and cache.get("c") is None and cache.get("d") is None
    assert cache.nbytes == 90 <= cache.max_bytes


def test_a_value_larger_than_the_budget_is_not_cached():
    cache = PersonCache(16, max_bytes=100)
    cache.put("small", Blob(10))
    cache.put("huge", Blob(101))
    assert cache.get("huge") is None and cache.get("small") is not None and cache.nbytes == 10


def test_replacing_a_key_counts_it_once():
    cache = PersonCache(16, max_bytes=100)
    cache.put("a", Blob(40))
    cache.put("a", Blob(50))
    assert len(cache) == 1 and cache.nbytes == 50
    cache.clear()
    assert cache.nbytes == 0


def test_a_prepared_person_counts_its_photo(model):
    p = sample_images.synthetic_person(600, 800)
    person = model.prepare_person(p.image, parse=p.parse, pose=p.pose, person_mask=p.mask)
    assert person.nbytes >= 600 * 800 * 3


@pytest.fixture
def budget_worker(model, random_ckpt_dir):
    def make(**overrides):
        settings = dataclasses.replace(Settings(checkpoint_dir=random_ckpt_dir, warmup=False),
                                       **overrides)
        worker = handler.Worker(settings, model)
        handler.set_worker(worker)
        return worker
    yield make
    handler.set_worker(None)


def test_large_persons_stay_within_the_budget_in_the_worker(budget_worker):
    """Eight distinct 1200×1600 persons (5.8 MB each as pixels) against a 16 MB budget."""
    worker = budget_worker(person_cache_size=16, person_cache_mb=16)
    rss = psutil.Process().memory_info().rss
    for i in range(8):
        p = sample_images.synthetic_person(1200, 1600)
        image = np.asarray(p.image).copy()
        image[0, 0] = (i, i, i)                            # a distinct person each time
        out = handler.handler({"id": f"big-{i}", "input": {
            "person_image": b64(image), "person_parse": b64(p.parse), "person_mask": b64(p.mask),
            "person_pose": {"people": [{"pose_keypoints_2d": p.pose.reshape(-1).tolist()}]},
            **cloth_fields(), "output_size": "model"}})
        assert out["success"] is True, out
        assert worker.cache.nbytes <= 16 * 2 ** 20
    assert 1 <= len(worker.cache) <= 2
    assert psutil.Process().memory_info().rss - rss < 200 * 2 ** 20     # a guard, not a benchmark
