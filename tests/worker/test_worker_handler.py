"""handler(job): every input form and every error code, with the real model (random weights).

Images are drawn (worker/sample_images.py). Most tests use the fast path (a 192×256 person with its
parse/pose/mask, a garment with its mask); the NO_PERSON test runs the real person analysis.
"""
from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

import handler
from tests.helpers.worker_inputs import b64, cloth_fields, decode, person_fields
from vton_preprocess.parser import DEFAULT_WEIGHTS, card_path
from worker import inputs, sample_images

CODES = {"INVALID_INPUT", "INVALID_IMAGE", "IMAGE_TOO_LARGE", "NO_PERSON", "NO_CLOTH",
         "BATCH_TOO_LARGE", "INTERNAL", "FETCH_FAILED", "RESPONSE_TOO_LARGE"}


def run(inp, job_id="test-job"):
    return handler.handler({"id": job_id, "input": inp})


def assert_error(out, code, field=None):
    assert set(out) <= {"error", "refresh_worker"}, out
    assert out["error"].startswith(f"{code}: "), out
    if field:
        assert field in out["error"], out
    assert "Traceback" not in out["error"] and "/work" not in out["error"]


# -- success paths ------------------------------------------------------------------------------
def test_single_base64_png(worker, model):
    out = run({**person_fields(), **cloth_fields()})
    assert out["success"] is True
    image = decode(out["result_image"])
    assert image.format == "PNG" and image.size == (192, 256) == (out["width"], out["height"])
    assert out["format"] == "png" and out["output_size"] == "original"
    parser = json.loads(card_path(DEFAULT_WEIGHTS).read_text())          # the parser's identity too
    assert out["weights"] == {**model.weights.short(), "parser_sha256": parser["sha256"][:12]}
    assert {"decode", "person", "cloth", "model", "encode", "total"} <= set(out["timings_ms"])
    assert "networks" in out["model_timings_ms"] and out["person_cache_hit"] is False
    assert "intermediates" not in out


def test_data_uri_jpeg_original_and_model_size_with_intermediates(worker):
    # A 240×320 person is framed to the model crop and pasted back at its own size.
    inp = {**person_fields(240, 320, data_uri=True), **cloth_fields(),
           "output_format": "JPEG", "jpeg_quality": 80, "return_intermediates": True}
    out = run(inp)
    assert out["success"] and out["format"] == "jpeg"
    image = decode(out["result_image"])
    assert image.format == "JPEG" and image.size == (240, 320)
    assert set(out["intermediates"]) == {"warped_cloth", "warped_mask", "warped_grid", "rendered",
                                         "composite_mask", "parse", "pose_overlay"}
    for name, text in out["intermediates"].items():
        assert decode(text).size == (192, 256), name
    out2 = run({**inp, "output_size": "model", "output_format": "webp",
                "return_intermediates": False})
    assert out2["person_cache_hit"] is True
    assert decode(out2["result_image"]).size == (192, 256) and out2["format"] == "webp"


def test_intermediates_are_the_models_own_images(worker, model):
    # The fast path: the same drawn person and garment through the model directly.
    p, c = sample_images.synthetic_person(), sample_images.garment()
    ref = model.try_on(p.image, c, parse=p.parse, pose=p.pose, person_mask=p.mask,
                       cloth_mask=sample_images.garment_mask(c))
    out = run({**person_fields(), **cloth_fields(), "return_intermediates": True})
    got = {name: np.asarray(decode(text)) for name, text in out["intermediates"].items()}
    for name in ("warped_cloth", "warped_mask", "warped_grid", "rendered", "composite_mask"):
        assert np.array_equal(got[name], np.asarray(getattr(ref, name))), name
    assert got["warped_grid"].shape == (256, 192, 3) and got["rendered"].shape == (256, 192, 3)
    assert np.array_equal(got["parse"], ref.parse)             # palette PNG: the labels themselves


def test_cloth_images_batch_analyses_person_once_and_isolates_bad_item(worker, model,
                                                                        monkeypatch):
    calls = []
    real = model.prepare_person
    monkeypatch.setattr(model, "prepare_person", lambda *a, **k: calls.append(1) or real(*a, **k))
    green = cloth_fields((40, 140, 70))
    inp = {**person_fields(), "cloth_images": [
        cloth_fields(), green, "not*base64", {"cloth_image": green["cloth_image"]} | {
            "cloth_mask": cloth_fields(empty_mask=True)["cloth_mask"]}]}
    out = run(inp)
    assert len(calls) == 1
    assert out["success"] is False and out["succeeded"] == 2 and out["failed"] == 2
    ok = [r for r in out["results"] if r["success"]]
    assert [r["index"] for r in ok] == [0, 1]
    assert all(decode(r["result_image"]).size == (192, 256) for r in ok)
    assert out["results"][2]["error"].startswith("INVALID_IMAGE: cloth_images[2]")
    assert out["results"][3]["error"].startswith("NO_CLOTH: cloth_images[3].cloth_mask")
    assert out["weights"] and "total" in out["timings_ms"]


def test_pairs_batch_and_person_cache(worker):
    pair = {**person_fields(), **cloth_fields()}
    out = run({"pairs": [pair, {**pair, **cloth_fields((30, 60, 160))}]})
    assert out["success"] is True and out["succeeded"] == 2
    # Two pairs with the same person bytes: analysed once, the second is a cache hit.
    assert [r["person_cache_hit"] for r in out["results"]] == [False, True]
    assert len(worker.cache) == 1


def test_person_key_covers_annotations():
    import numpy as np

    from worker.person_cache import person_key
    pose = np.zeros((18, 3))
    base = person_key(b"img", parse=b"p", pose=pose, mask=b"m")
    assert base == person_key(b"img", parse=b"p", pose=pose.copy(), mask=b"m")
    assert base != person_key(b"img", parse=b"p", pose=pose + 1, mask=b"m")
    assert base != person_key(b"img", parse=None, pose=pose, mask=b"m")
    assert person_key(b"ab", parse=b"c") != person_key(b"a", parse=b"bc")


def test_cache_is_bounded():
    from worker.person_cache import PersonCache
    cache = PersonCache(2, max_bytes=2 ** 20)
    for key in "abc":
        cache.put(key, key.upper())
    assert cache.get("a") is None and cache.get("c") == "C" and len(cache) == 2
    off = PersonCache(0, max_bytes=2 ** 20)
    assert off.get_or_create("k", lambda: 1) == (1, False) and len(off) == 0


# -- error codes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("inp, field", [
    ({}, "input"),
    ({"person_image": "abc"}, "cloth_image"),
    ({"cloth_image": "abc"}, "person_image"),
    ({"person_image": "abc", "cloth_image": "abc", "colour": "red"}, "colour"),
    ({"person_image": 12, "cloth_image": "abc"}, "person_image"),
    ({"person_image": "abc", "person_image_url": "https://example.com/a.png",
      "cloth_image": "abc"}, "person_image"),
    ({"person_image_url": "ftp://example.com/a.png", "cloth_image": "abc"}, "person_image_url"),
    ({"person_image": "abc", "cloth_image": "abc", "output_format": "gif"}, "output_format"),
    ({"person_image": "abc", "cloth_image": "abc", "jpeg_quality": 0}, "jpeg_quality"),
    ({"person_image": "abc", "cloth_image": "abc", "output_size": "huge"}, "output_size"),
    ({"person_image": "abc", "cloth_image": "abc", "return_intermediates": "yes"},
     "return_intermediates"),
    ({"person_image": "abc", "cloth_image": "abc", "person_pose": {"people": []}}, "person_pose"),
    ({"person_image": "abc", "cloth_image": "abc", "person_pose": [1, 2, 3]}, "person_pose"),
    ({"pairs": []}, "pairs"),
    ({"pairs": [{"person_image": "abc"}]}, "pairs[0].cloth_image"),
    ({"pairs": ["abc"]}, "pairs[0]"),
    ({"pairs": [{"person_image": "a", "cloth_image": "b"}], "cloth_images": ["c"]}, "cloth_images"),
    ({"person_image": "abc", "cloth_images": [7]}, "cloth_images[0]"),
    ([1, 2], "input"),
])
def test_invalid_input_names_the_field(worker, inp, field):
    assert_error(run(inp), "INVALID_INPUT", field)


def test_job_without_input_and_non_dict_job(worker):
    assert_error(handler.handler({"id": "x"}), "INVALID_INPUT", "input")
    assert_error(handler.handler("not a job"), "INVALID_INPUT", "job")


def test_batch_too_large(worker):
    pair = {"person_image": "abc", "cloth_image": "abc"}
    assert_error(run({"pairs": [pair] * 5}), "BATCH_TOO_LARGE", "pairs")
    assert_error(run({"person_image": "abc", "cloth_images": ["abc"] * 5}), "BATCH_TOO_LARGE",
                 "cloth_images")


def test_invalid_image(worker):
    assert_error(run({**person_fields(), "cloth_image": "%%%"}), "INVALID_IMAGE", "cloth_image")
    text = b64(b"") if False else "aGVsbG8gd29ybGQ="          # valid base64 of b"hello world"
    assert_error(run({**person_fields(), "cloth_image": text}), "INVALID_IMAGE", "cloth_image")
    assert_error(run({**cloth_fields(), **person_fields(), "person_parse": text}),
                 "INVALID_IMAGE", "person_parse")


def test_image_too_large_bytes_and_pixels(make_worker):
    make_worker(max_input_bytes=5_000)
    assert_error(run({**person_fields(), **cloth_fields()}), "IMAGE_TOO_LARGE", "cloth_image")
    make_worker(max_image_pixels=10_000)
    out = run({**person_fields(), **cloth_fields()})
    assert_error(out, "IMAGE_TOO_LARGE", "person_image")
    assert "192x256" in out["error"]


def test_no_person_on_a_blank_photo(worker):
    from PIL import Image
    blank = Image.new("RGB", (300, 400), (255, 255, 255))
    assert_error(run({"person_image": b64(blank), **cloth_fields()}), "NO_PERSON", "person_image")


def test_no_cloth(worker):
    assert_error(run({**person_fields(), **cloth_fields(empty_mask=True)}), "NO_CLOTH",
                 "cloth_mask")


def test_internal_error_hides_details_and_cuda_fault_refreshes(worker, model, monkeypatch,
                                                               caplog):
    def boom(*a, **k):
        raise RuntimeError("secret detail /srv/app/x.py")
    monkeypatch.setattr(model, "run", boom)
    with caplog.at_level(logging.ERROR, logger="cpvton.worker"):
        out = run({**person_fields(), **cloth_fields()}, job_id="job-internal")
    assert_error(out, "INTERNAL")
    assert "secret" not in out["error"] and "refresh_worker" not in out
    assert any("job-internal" in r.getMessage() for r in caplog.records)

    def cuda_fault(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(model, "run", cuda_fault)
    out = run({**person_fields(), **cloth_fields()})
    assert_error(out, "INTERNAL")
    assert out["refresh_worker"] is True


def test_batch_run_failure_retries_items_one_by_one(worker, model, monkeypatch):
    real = model.run

    def fails_on_batches(persons, cloths, **k):
        if len(persons) > 1:
            raise RuntimeError("batched kernel failed")
        return real(persons, cloths, **k)
    monkeypatch.setattr(model, "run", fails_on_batches)
    pair = {**person_fields(), **cloth_fields()}
    out = run({"pairs": [pair, pair]})
    assert out["success"] is True and out["succeeded"] == 2


def test_response_too_large_without_bucket(make_worker):
    make_worker(max_response_bytes=1_000)
    out = run({**person_fields(), **cloth_fields()})
    assert_error(out, "RESPONSE_TOO_LARGE", "BUCKET_ENDPOINT_URL")


def test_one_structured_log_line_per_job_without_image_data(worker, caplog):
    inp = {**person_fields(), **cloth_fields()}
    with caplog.at_level(logging.INFO, logger="cpvton.worker"):
        run(inp, job_id="job-log")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('{"event":"job"')]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["job_id"] == "job-log" and record["items"] == 1
    assert record["outcome"] == "COMPLETED" and record["person_sizes"] == [[192, 256]]
    assert "total" in record["timings_ms"]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert inp["person_image"][:40] not in text and inp["cloth_image"][:40] not in text


def test_error_format_is_code_colon_message(worker):
    out = run({"person_image": "abc"})
    assert re.match(r"^[A-Z_]+: \S", out["error"]) and out["error"].split(":")[0] in CODES


def test_redact_url():
    assert inputs.redact_url("https://u:p@h.example.com:8443/a/b.png?sig=SECRET#x") == \
        "https://h.example.com:8443/a/b.png"


# -- concurrency ------------------------------------------------------------------------------
def test_concurrent_jobs_are_micro_batched_into_one_pass(make_worker):
    import threading

    import numpy as np

    from worker.batcher import MicroBatcher

    worker = make_worker(concurrency=2)
    assert worker.batcher is not None
    colours = [(200, 40, 60), (40, 140, 70)]
    alone = [decode(run({**person_fields(), **cloth_fields(c)})["result_image"]) for c in colours]
    # A wide window, so that both jobs certainly meet (the worker's own is 10 ms).
    worker.batcher = MicroBatcher(worker._run_locked, max_wait_ms=2000, max_items=4)
    outs = [None, None]
    barrier = threading.Barrier(2)

    def go(i):
        barrier.wait()
        outs[i] = run({**person_fields(), **cloth_fields(colours[i])}, job_id=f"job-{i}")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert worker.batcher.batches_run == 1
    for out, ref in zip(outs, alone):
        assert out["success"]
        diff = np.abs(np.asarray(decode(out["result_image"]), int) - np.asarray(ref, int))
        assert diff.max() <= 1        # batched convolutions may round differently
    worker.batcher.close()
