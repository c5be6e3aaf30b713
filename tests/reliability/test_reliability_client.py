"""The client under failure: Retry-After in both forms, a bounded give-up, and the API key kept
out of every log line and exception message, including the ones requests itself writes.

A stub server on 127.0.0.1 plays the endpoint; ``time.sleep`` in the client is replaced by a
recorder, so the waits are checked without waiting (no durations are asserted except a
generous guard against a hang).
"""
from __future__ import annotations

import email.utils
import http.server
import json
import logging
import socket
import threading
import time

import pytest

import client_example
from client_example import CPVTONClient, CPVTONError

KEY = "rpa_0123SUPERSECRETKEY456789"


class _Stub(http.server.BaseHTTPRequestHandler):
    script: list = []
    seen: list = []

    def _answer(self):
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        status, headers, body = self.script.pop(0) if self.script else (503, {}, {})
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._answer()

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
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


class _Clock:
    """Stands in for the ``time`` module inside client_example only: sleeping advances a
    virtual clock instead of waiting."""

    def __init__(self):
        self.slept: list = []

    def sleep(self, seconds):
        self.slept.append(seconds)

    def monotonic(self):
        return time.monotonic() + sum(self.slept)

    def time(self):
        return time.time() + sum(self.slept)


@pytest.fixture
def waits(monkeypatch):
    """The client's sleeps, recorded instead of slept (on a virtual clock)."""
    clock = _Clock()
    monkeypatch.setattr(client_example, "time", clock)
    return clock.slept


@pytest.fixture
def all_logs(caplog):
    """Every record of every logger (requests and urllib3 included) at DEBUG."""
    caplog.set_level(logging.DEBUG)
    return caplog


def _no_key(*texts):
    for text in texts:
        assert KEY not in text and KEY[4:20] not in text, text


def test_retry_after_seconds_is_honoured(stub, waits):
    _Stub.script = [(429, {"Retry-After": "7"}, {}), (503, {"Retry-After": "2.5"}, {}),
                    (200, {}, {"ok": 1})]
    client = CPVTONClient(base_url=stub, api_key=KEY, max_retry_s=60)
    assert client.health() == {"ok": 1}
    assert waits == [7.0, 2.5]


def test_retry_after_http_date_is_honoured(stub, waits):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    _Stub.script = [(503, {"Retry-After": when}, {}), (200, {}, {"ok": 2})]
    client = CPVTONClient(base_url=stub, api_key=KEY, max_retry_s=120)
    assert client.health() == {"ok": 2}
    assert len(waits) == 1 and 27.0 <= waits[0] <= 31.0
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    _Stub.script = [(429, {"Retry-After": past}, {}), (200, {}, {"ok": 3})]
    assert client.health() == {"ok": 3} and waits[1] == 0.0


def test_a_retry_after_beyond_the_budget_gives_up_at_once(stub, waits):
    _Stub.script = [(429, {"Retry-After": "3600"}, {})]
    client = CPVTONClient(base_url=stub, api_key=KEY, max_retry_s=10)
    with pytest.raises(CPVTONError) as info:
        client.health()
    assert info.value.code == "UNAVAILABLE" and info.value.status == 429 and waits == []


def test_give_up_time_is_bounded_by_max_retry_s(stub, waits):
    _Stub.script = [(503, {}, {})] * 100            # backoff without Retry-After
    client = CPVTONClient(base_url=stub, api_key=KEY, max_retry_s=20)
    t0 = time.monotonic()
    with pytest.raises(CPVTONError) as info:
        client.run({"a": 1})
    assert info.value.code == "UNAVAILABLE"
    assert sum(waits) <= 20 and len(waits) >= 3             # exponential, within the budget
    assert all(b >= a * 0.74 for a, b in zip(waits, waits[1:]))
    assert time.monotonic() - t0 < 30                       # guard against a hang only
    _no_key(str(info.value))


def test_connection_errors_are_retried_then_reported_without_the_key(waits, all_logs):
    with socket.socket() as s:                              # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = CPVTONClient(base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_retry_s=3)
    with pytest.raises(CPVTONError) as info:
        client.run({"x": 1})
    assert info.value.code == "UNAVAILABLE" and "ConnectionError" in str(info.value)
    assert waits
    _no_key(str(info.value), repr(info.value), all_logs.text)


def test_key_redacted_from_requests_own_exception_messages(stub, all_logs):
    """A key with a newline makes requests refuse the header, quoting its value: the client's
    error must not carry it (nor chain the original exception)."""
    bad_key = KEY + "\n"
    client = CPVTONClient(base_url=stub, api_key=bad_key, max_retry_s=2)
    with pytest.raises(CPVTONError) as info:
        client.health()
    err = info.value
    assert err.code == "REQUEST_FAILED" and "InvalidHeader" in str(err)
    assert err.__cause__ is None and err.__suppress_context__
    _no_key(str(err), repr(err), err.message, all_logs.text)


def test_key_redacted_from_answers_that_echo_it(stub, waits, all_logs):
    client = CPVTONClient(base_url=stub, api_key=KEY, max_retry_s=5)
    _Stub.script = [(503, {}, {"echo": KEY}), (401, {}, {"error": f"bad key Bearer {KEY}"})]
    with pytest.raises(CPVTONError) as info:
        client.health()
    assert info.value.code == "HTTP_401" and "***" in str(info.value)
    _no_key(str(info.value), info.value.message)
    # A failed job whose error text contains the key (a misbehaving proxy, say).
    _Stub.script = [(200, {}, {"id": "j", "status": "FAILED",
                               "error": f"INVALID_INPUT: header {KEY} refused"})]
    with pytest.raises(CPVTONError) as info:
        client.try_on_sync(b"p", b"c")
    assert info.value.code == "INVALID_INPUT"
    _no_key(str(info.value), info.value.message, all_logs.text, repr(client))


def test_client_log_lines_are_redacted_by_one_shared_filter(stub, waits, all_logs):
    before = len(client_example.log.filters)
    clients = [CPVTONClient(base_url=stub, api_key=f"{KEY}-{i}") for i in range(5)]
    assert len(client_example.log.filters) == before                # no filter per client
    client_example.log.warning("a line that quotes %s", clients[3]._api_key)
    assert "***" in all_logs.text
    _no_key(all_logs.text)


# -- the client's basic flows against the stub --------------------------------------------------
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


def test_a_closed_client_forgets_its_key():
    """``with CPVTONClient(...)`` (or ``close()``): the session is closed and the key is neither
    sent again nor kept by the module's log filter (the demo page relies on this)."""
    key = "sk-closed-client-key-0123456789"
    with CPVTONClient(base_url="http://127.0.0.1:9", api_key=key) as client:
        assert key in client_example._REDACTOR.secrets
    assert key not in client_example._REDACTOR.secrets
    assert "Authorization" not in client.session.headers
