"""Hostile and mistaken requests, round two (issue 13): each is a typed error naming its field,
answered before the work where it can be, with a response that can always be sent.

Everything runs in-process against the real model with random weights and drawn images.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image

import handler
from settings import Settings
from worker_inputs import b64, cloth_fields, person_fields, png_bytes

import sample_images

LEAKS = ("Traceback", 'File "', "/work", "/tmp", "/home", "site-packages", ".pth", ".py")


@pytest.fixture
def make_worker(model, random_ckpt_dir):
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
    return make_worker()


def sendable(out) -> dict:
    """The response as the SDK would send it: JSON, encoded as UTF-8 (raises if it cannot be)."""
    json.dumps(out, ensure_ascii=False).encode("utf-8")
    return out


def run(inp, job_id="hostile-job"):
    return sendable(handler.handler({"id": job_id, "input": inp}))


def assert_error(out, code, field):
    text = out.get("error") or ""
    assert text.startswith(f"{code}: "), out
    assert field in text, out
    assert not any(leak in text for leak in LEAKS), out
    return text


def person_at(width: int, height: int, **changes) -> dict:
    """Drawn person fields of the given size; ``changes`` replace fields."""
    return {**person_fields(width, height), **changes}


def pose_json(pose: np.ndarray) -> dict:
    return {"people": [{"pose_keypoints_2d": np.asarray(pose, float).reshape(-1).tolist()}]}


# -- 2: every string we return is valid, printable UTF-8 ------------------------------------------
UNSAFE_KEYS = ["bad\ud800key", "\udfff", "x\u202eevil", "a\x00b", "line\nbreak", "\u2028",
               "zero\u200bwidth", "k" * 5000, "\U0010ffff"]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
@pytest.mark.parametrize("where", ["top", "pair", "cloth_entry"])
def test_echoed_field_names_are_sanitised_and_truncated(worker, key, where):
    if where == "top":
        inp = {**person_fields(), **cloth_fields(), key: 1}
    elif where == "pair":
        inp = {"pairs": [{**person_fields(), **cloth_fields(), key: 1}]}
    else:
        inp = {**person_fields(), "cloth_images": [{**cloth_fields(), key: 1}]}
    text = assert_error(run(inp), "INVALID_INPUT", "unknown field")
    assert not any(ch in text for ch in "\ud800\udfff\u202e\x00\n\u2028\u200b\U0010ffff")
    assert len(text) < 200


def test_unsafe_job_id_does_not_break_the_response(worker):
    out = sendable(handler.handler({"id": "job\ud800\n\u202e" + "x" * 1000,
                                    "input": {**person_fields(), **cloth_fields()}}))
    assert out["success"] is True


# -- 10: no server path in a client error ---------------------------------------------------------
def test_missing_checkpoint_started_lazily_names_no_path(tmp_path, monkeypatch, caplog):
    handler.set_worker(None)
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("ALLOW_RANDOM_WEIGHTS", "0")
    monkeypatch.setenv("WARMUP", "0")
    try:
        with caplog.at_level("ERROR", logger="cpvton"):
            out = run({**person_fields(), **cloth_fields()})
    finally:
        handler.set_worker(None)
    text = out["error"]
    assert text.startswith("CHECKPOINT_ERROR: ") and str(tmp_path) not in text, out
    assert not any(leak in text for leak in LEAKS), out
    assert str(tmp_path / "nowhere") in caplog.text        # the operator still gets the path
