"""The response and the job log line, built from a job state without a model (worker/job.py),
and the structured errors they carry (vton_core/errors.py)."""
from __future__ import annotations

import json
from types import SimpleNamespace

from PIL import Image

from vton_core.errors import InvalidInput, NoPerson, VTONError
from worker.job import JobState, LoadedPerson, build_response, job_log_line
from worker.schema import parse_request

WEIGHTS = {"gmm_sha256": "a" * 12, "tom_sha256": "b" * 12, "random": True}


def _request(mode: str, n: int = 1, **options):
    ref = "iVBORw0KGgo="       # never decoded here
    if mode == "single":
        return parse_request({"person_image": ref, "cloth_image": ref, **options}, max_items=8)
    if mode == "pairs":
        pairs = [{"person_image": ref, "cloth_image": ref} for _ in range(n)]
        return parse_request({"pairs": pairs, **options}, max_items=8)
    return parse_request({"person_image": ref, "cloth_images": [ref] * n, **options}, max_items=8)


def _result(size=(300, 400)):
    return SimpleNamespace(image=Image.new("RGB", size), random_weights=True, notes=("n",),
                           timings_ms={"decode": 1.0, "analysis": 2.0, "networks": 3.0})


def _succeed(it, delivered=(("result_image", "png", "QUJD"),), *, hit=False):
    it.result, it.delivered, it.person_hit = _result(), list(delivered), hit
    it.person_stages = ("decode", "analysis") if hit else ()


def _state(request):
    return JobState.start(request, {"id": "job-1"})


def test_single_success_has_the_item_fields_weights_and_timings():
    state = _state(_request("single"))
    _succeed(state.items[0])
    state.timings.update(decode=1.5, total=9.0)
    out = build_response(state, WEIGHTS)
    assert out["success"] is True and out["result_image"] == "QUJD" and "index" not in out
    assert (out["format"], out["width"], out["height"]) == ("png", 300, 400)
    assert out["output_size"] == "original" and out["person_cache_hit"] is False
    assert out["random_weights"] is True and out["notes"] == ["n"]
    assert out["model_timings_ms"] == {"decode": 1.0, "analysis": 2.0, "networks": 3.0}
    assert out["weights"] == WEIGHTS and out["timings_ms"] == {"decode": 1.5, "total": 9.0}
    assert "refresh_worker" not in out


def test_single_failure_is_only_the_error():
    state = _state(_request("single"))
    state.items[0].error = InvalidInput("must be 18 (x, y, confidence) triples", field="person_pose")
    assert build_response(state, WEIGHTS) == {
        "error": "INVALID_INPUT: person_pose: must be 18 (x, y, confidence) triples"}


def test_batch_counts_and_per_item_entries():
    state = _state(_request("pairs", 3))
    _succeed(state.items[0])
    state.items[1].error = NoPerson("no person found in the image", field="pairs[1].person_image")
    _succeed(state.items[2], hit=True)
    out = build_response(state, WEIGHTS)
    assert (out["success"], out["succeeded"], out["failed"]) == (False, 2, 1)
    assert [r["index"] for r in out["results"]] == [0, 1, 2]
    assert out["results"][1] == {"index": 1, "success": False,
                                 "error": "NO_PERSON: pairs[1].person_image: no person found in the image"}
    # A cache hit leaves out the person stages that belong to an earlier job.
    assert out["results"][2]["person_cache_hit"] is True
    assert out["results"][2]["model_timings_ms"] == {"networks": 3.0}


def test_url_delivery_and_intermediates():
    state = _state(_request("cloth_images", 1, return_intermediates=True))
    state.delivery = "url"
    _succeed(state.items[0], [("result_image", "jpeg", "https://b/r.jpg"),
                              ("warped_cloth", "png", "https://b/w.png")])
    item = build_response(state, WEIGHTS)["results"][0]
    assert item["result_image_url"] == "https://b/r.jpg" and "result_image" not in item
    assert item["intermediate_urls"] == {"warped_cloth": "https://b/w.png"}


def test_a_cuda_fault_asks_for_a_fresh_worker():
    state = _state(_request("single"))
    state.items[0].error, state.items[0].cuda_fault = VTONError("failed; logged"), True
    assert build_response(state, WEIGHTS) == {"error": "INTERNAL: failed; logged",
                                              "refresh_worker": True}


def test_job_log_line_holds_codes_sizes_and_no_image_data():
    state = _state(_request("pairs", 2))
    state.persons[0].loaded = LoadedPerson(b"\x89PNG secret bytes", (640, 480))
    _succeed(state.items[0], hit=True)
    state.items[1].error = InvalidInput("is empty", field="pairs[1].cloth_image")
    line = job_log_line(state)
    doc = json.loads(line)
    assert doc["error_codes"] == ["INVALID_INPUT"] and doc["failed"] == 1
    assert doc["person_sizes"] == [[640, 480]] and doc["person_cache_hits"] == 1
    assert doc["outcome"] == "COMPLETED" and "secret" not in line


def test_errors_carry_code_field_and_message_and_requalify_structurally():
    err = InvalidInput("size 10x10 differs from the person image's 20x20", field="person_parse")
    assert (err.code, err.field) == ("INVALID_INPUT", "person_parse")
    assert err.client_message() == ("INVALID_INPUT: person_parse: size 10x10 differs from the "
                                    "person image's 20x20")
    moved = err.with_field("pairs[2]." + err.field)
    assert type(moved) is InvalidInput and moved.message == err.message
    assert moved.client_message().startswith("INVALID_INPUT: pairs[2].person_parse: size")
    assert err.field == "person_parse"                 # the original is unchanged
    assert VTONError("logged").client_message() == "INTERNAL: logged"

