"""End to end over real HTTP: ``python handler.py --rp_serve_api`` as a process on loopback,
driven by ``CPVTONClient`` (/runsync, /run + /status, a batch, a bad request). The client's
retry and redaction behaviour against a stub server is in test_reliability_client.py.
"""
from __future__ import annotations

import json

import pytest
import requests

from client_example import CPVTONClient, CPVTONError, TryOnResult
from tests.helpers.dev_server import dev_server
from tests.helpers.worker_inputs import cloth_fields, decode, person_fields
from worker import sample_images

pytestmark = pytest.mark.slow  # a real dev server process


@pytest.fixture(scope="module")
def server(random_ckpt_dir, tmp_path_factory):
    """One dev server process for the module, torn down at the end."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with dev_server(random_ckpt_dir, log_path, LOG_LEVEL="INFO", PERSON_CACHE_SIZE="4",
                    MAX_BATCH_ITEMS="4") as (base, _proc):
        yield base, log_path


@pytest.fixture(scope="module")
def client(server):
    return CPVTONClient(base_url=server[0], timeout=120, max_retry_s=5)


def _person_options():
    fields = person_fields(240, 320)
    return fields.pop("person_image"), fields


def test_runsync(client, server):
    person, options = _person_options()
    cloth = cloth_fields()
    result = client.try_on_sync(decode(person), decode(cloth["cloth_image"]),
                                cloth_mask=cloth["cloth_mask"], output_format="jpeg",
                                return_intermediates=True, **options)
    assert isinstance(result, TryOnResult)
    assert result.image.size == (240, 320) and result.image.format == "JPEG"
    assert (result.info["width"], result.info["height"]) == (240, 320)
    assert result.intermediates["warped_cloth"].size == (192, 256)
    assert result.info["weights"]["gmm_sha256"] and "total" in result.info["timings_ms"]
    log_text = server[1].read_text()
    assert '"event":"job"' in log_text and "warm-up inference took" in log_text


def test_run_then_status(client):
    person, options = _person_options()
    cloth = cloth_fields((40, 140, 70))
    result = client.try_on_async(decode(person), decode(cloth["cloth_image"]),
                                 cloth_mask=cloth["cloth_mask"], output_size="model", **options)
    assert result.image.size == (192, 256) and result.image.format == "PNG"
    assert result.info["person_cache_hit"] is True          # same person as test_runsync
    assert client._status_method == "POST"                    # learnt from the dev server's 405


def test_batch_with_one_bad_item(client):
    person = sample_images.synthetic_person()
    fields = person_fields()
    good = sample_images.garment(192, 256)
    results = client.try_on_batch(person=person.image, cloths=[good, b"not an image"],
                                  person_parse=fields["person_parse"],
                                  person_mask=fields["person_mask"],
                                  person_pose=fields["person_pose"])
    # The garment mask is computed by the worker for the drawn t-shirt (segmentation path).
    assert len(results) == 2
    assert isinstance(results[0], TryOnResult) and results[0].image.size == (192, 256)
    assert isinstance(results[1], CPVTONError) and results[1].code == "INVALID_IMAGE"
    assert "cloth_images[1]" in results[1].message


def test_bad_request_is_a_failed_job_with_a_typed_error(client, server):
    with pytest.raises(CPVTONError) as info:
        client.try_on_sync(sample_images.synthetic_person().image, b"x", output_format="gif")
    assert info.value.code == "INVALID_INPUT" and "output_format" in info.value.message
    # Raw HTTP too: the dev server marks the job FAILED and returns only the error string.
    body = requests.post(f"{server[0]}/runsync", json={"input": {"pairs": "nope"}}, timeout=30).json()
    assert body["status"] == "FAILED" and body["error"].startswith("INVALID_INPUT: pairs")
    assert "Traceback" not in json.dumps(body)
