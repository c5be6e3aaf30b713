"""End to end over real HTTP: ``python handler.py --rp_serve_api`` as a process on loopback,
driven by ``CPVTONClient`` (/runsync, /run + /status, a batch, a bad request); plus the client's
retry and key-redaction behaviour against a small stub server."""
from __future__ import annotations

import http.server
import json
import logging
import threading
import time

import pytest
import requests

from client_example import CPVTONClient, CPVTONError, TryOnResult
from dev_server import dev_server
from worker_inputs import cloth_fields, decode, person_fields

import sample_images



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


# -- the client against a stub server ---------------------------------------------------------------
class _Stub(http.server.BaseHTTPRequestHandler):
    script: list = []
    seen: list = []

    def _answer(self):
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        status, headers, body = self.script.pop(0) if self.script else (500, {}, {})
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        data = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._answer()

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self._answer()

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    _Stub.script, _Stub.seen = [], []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


KEY = "rpa_SUPERSECRETKEY123"


def test_client_retries_429_honouring_retry_after_then_polls(stub):
    _Stub.script = [(429, {"Retry-After": "0"}, {}), (503, {}, {}),
                    (200, {}, {"id": "j1", "status": "IN_QUEUE"}),
                    (200, {}, {"id": "j1", "status": "IN_PROGRESS"}),
                    (200, {}, {"id": "j1", "status": "COMPLETED", "output": {"x": 1}})]
    client = CPVTONClient(base_url=stub, api_key=KEY, timeout=30, max_retry_s=10)
    job_id = client.run({"a": 1})
    assert job_id == "j1"
    assert client.wait(job_id, poll_interval=0.01)["output"] == {"x": 1}
    assert [m for m, _, _ in _Stub.seen] == ["POST", "POST", "POST", "GET", "GET"]
    assert all(auth == f"Bearer {KEY}" for _, _, auth in _Stub.seen)


def test_client_gives_up_in_bounded_time_and_never_shows_the_key(stub, caplog):
    _Stub.script = [(503, {}, {"echo": KEY})] * 50
    client = CPVTONClient(base_url=stub, api_key=KEY, max_retry_s=1.0)
    t0 = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(CPVTONError) as info:
            client.health()
    assert info.value.code == "UNAVAILABLE" and time.monotonic() - t0 < 10
    _Stub.script = [(401, {}, {"error": f"bad key {KEY}"})]
    with pytest.raises(CPVTONError) as info:
        client.health()
    assert info.value.code == "HTTP_401" and KEY not in str(info.value) and "***" in str(info.value)
    assert KEY not in caplog.text and KEY not in repr(client)


@pytest.mark.parametrize("status", ["FAILED", "CANCELLED", "TIMED_OUT"])
def test_client_terminal_statuses(stub, status):
    body = {"id": "j2", "status": status}
    if status == "FAILED":
        body["error"] = "NO_PERSON: person_image: no person found in the image"
    _Stub.script = [(200, {}, body)]
    client = CPVTONClient(base_url=stub)
    with pytest.raises(CPVTONError) as info:
        client.try_on_sync(b"p", b"c")
    assert info.value.code == ("NO_PERSON" if status == "FAILED" else status)
