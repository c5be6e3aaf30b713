"""The full-resolution result through the worker (issue 20): the request option, batches, the
person cache, S3 delivery and the micro-batcher, with the real model (random weights)."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

import handler
from tests.helpers.worker_inputs import b64, decode
from worker import sample_images
from worker.schema import parse_request

SIDE = 384                                           # a 384×512 person: the box is 2x the model's


def framed_person_fields(side: int = SIDE) -> dict:
    p = sample_images.framed_person(side)
    return {"person_image": b64(p.image), "person_parse": b64(p.parse), "person_mask": b64(p.mask),
            "person_pose": {"people": [{"pose_keypoints_2d": p.pose.reshape(-1).tolist()}]}}


def printed_cloth_fields(side: int = SIDE, color=(200, 40, 60)) -> dict:
    g = sample_images.printed_garment(side, side * 4 // 3, color)
    return {"cloth_image": b64(g), "cloth_mask": b64(sample_images.garment_mask(g))}


def run(inp, job_id="full-res"):
    return handler.handler({"id": job_id, "input": inp})


def pixels(out: dict) -> np.ndarray:
    return np.asarray(decode(out["result_image"]).convert("RGB"))


@pytest.mark.parametrize("given, expected", [({}, "full"), ({"garment_resolution": None}, "full"),
                                             ({"garment_resolution": "MODEL"}, "model")])
def test_the_option_defaults_to_full_resolution(given, expected):
    req = parse_request({"person_image": "x", "cloth_image": "y", **given}, max_items=4)
    assert req.options.garment_resolution == expected
    assert req.options.result_options() == {"output_size": "original", "garment_resolution": expected}


@pytest.mark.parametrize("value", ["4k", 1, True, ["full"]])
def test_a_bad_value_is_invalid_input_naming_the_field(worker, value):
    out = run({**framed_person_fields(), **printed_cloth_fields(), "garment_resolution": value})
    assert out["error"].startswith("INVALID_INPUT: garment_resolution: must be one of full, model"), out


def test_full_and_model_results_differ_only_where_the_garment_goes(worker):
    base = {**framed_person_fields(), **printed_cloth_fields()}
    full, classic = run(base), run({**base, "garment_resolution": "model"})
    assert full["garment_resolution"] == "full" and classic["garment_resolution"] == "model"
    assert (full["width"], full["height"]) == (classic["width"], classic["height"]) == (SIDE, SIDE * 4 // 3)
    a, b = pixels(full), pixels(classic)
    assert not np.array_equal(a, b)
    small = run({**base, "output_size": "model"})
    assert decode(small["result_image"]).size == (192, 256)


def test_a_cached_person_and_batches_give_the_same_full_resolution_pixels(worker):
    person = framed_person_fields()
    colours = [(200, 40, 60), (40, 140, 70)]
    alone = [run({**person, **printed_cloth_fields(color=c)}) for c in colours]
    assert alone[0]["person_cache_hit"] is False and alone[1]["person_cache_hit"] is True
    # the cached person kept its photo and framing: the same pixels as a fresh analysis
    worker.cache.clear()
    assert np.array_equal(pixels(run({**person, **printed_cloth_fields(color=colours[1])})),
                          pixels(alone[1]))
    batch = run({**person, "cloth_images": [printed_cloth_fields(color=c) for c in colours]})
    pairs = run({"pairs": [{**person, **printed_cloth_fields(color=c)} for c in colours]})
    for out in (batch, pairs):
        assert out["succeeded"] == 2, out
        for item, ref in zip(out["results"], alone):
            # Batched convolutions may round differently (1e-6); on the garment's sharp
            # edges at full resolution that moves a few pixels by a few grey levels.
            diff = np.abs(pixels(item).astype(int) - pixels(ref))
            assert (diff <= 1).mean() >= 0.999 and diff.max() <= 8, (diff.max(), (diff > 1).mean())


def test_a_full_resolution_result_goes_to_the_bucket_whole(make_worker, monkeypatch, tmp_path):
    import threading
    from http.server import ThreadingHTTPServer

    from tests.reliability.test_delivery_bounds import KEYS, _S3Stub  # the loopback S3 stub

    monkeypatch.chdir(tmp_path)
    make_worker()
    inp = {**framed_person_fields(), **printed_cloth_fields(), "output_format": "png"}
    inline = base64.b64decode(run(inp)["result_image"])
    _S3Stub.puts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _S3Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        make_worker(max_response_bytes=1_000, **KEYS,
                    bucket_endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
        out = run(inp, job_id="j-full")
    finally:
        server.shutdown()
        server.server_close()
    assert out["success"] and "result_image_url" in out, out
    assert [size for path, size, _ in _S3Stub.puts if "result_image" in path] == [len(inline)]
    assert list(tmp_path.iterdir()) == []             # nothing written locally


def test_the_micro_batcher_joins_only_calls_with_the_same_result_options():
    import threading

    from worker.batcher import MicroBatcher

    passes = []

    def run_fn(persons, cloths, **options):
        passes.append((list(persons), options))
        return [(p, options["garment_resolution"]) for p in persons]

    b = MicroBatcher(run_fn, max_wait_ms=300, max_items=8)
    results = {}
    barrier = threading.Barrier(3)

    def call(name, resolution):
        barrier.wait()
        results[name] = b.run([name], ["c"], output_size="original", garment_resolution=resolution)
    threads = [threading.Thread(target=call, args=a) for a in (("a", "full"), ("b", "model"), ("c", "full"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    b.close()
    assert results == {"a": [("a", "full")], "b": [("b", "model")], "c": [("c", "full")]}
    assert all(persons == ["b"] for persons, _ in passes if "b" in persons)   # never joined


def test_the_full_resolution_image_is_a_real_image(worker):
    """PNG, JPEG and WebP of the full-resolution result decode to the photo's size."""
    base = {**framed_person_fields(), **printed_cloth_fields()}
    for fmt in ("png", "jpeg", "webp"):
        out = run({**base, "output_format": fmt})
        im = Image.open(io.BytesIO(base64.b64decode(out["result_image"])))
        assert im.format.lower() == fmt and im.size == (SIDE, SIDE * 4 // 3)
