"""Delivery of large responses to a bucket (issue 13, findings 4 and 5): uploads are bounded in
time and tries, a bucket without keys is refused at start-up, and no local path ever comes back.

S3 cannot run here, so the bucket is a loopback HTTP server speaking just enough of S3 for
boto3's ``put_object`` (or, for the time bound, one that accepts connections and never answers);
boto3 itself is real.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import handler
from tests.helpers.worker_inputs import cloth_fields, person_fields
from worker import delivery
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
#: Guard against a hang, not a benchmark: the unbounded client took 243 s against a silent
#: bucket; with a 1 s timeout and 2 tries the upload must give up far sooner.
SILENT_BUCKET_BOUND_S = 30.0
KEYS = dict(bucket_access_key_id="AKIDEXAMPLE", bucket_secret_access_key="not-a-real-secret")


class _S3Stub(BaseHTTPRequestHandler):
    puts: list = []

    def do_PUT(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).puts.append((self.path, len(body), self.headers.get("Content-Type")))
        self.send_response(200)
        self.send_header("ETag", '"0"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def s3_stub():
    _S3Stub.puts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _S3Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _S3Stub.puts
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_bucket():
    """Accepts TCP connections and never answers (the finding's endpoint)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held, stop = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


@pytest.fixture
def make_worker(make_worker, monkeypatch, tmp_path):
    """The shared fixture, run where the SDK's fallback would write ./local_upload (it must not)."""
    monkeypatch.chdir(tmp_path)
    yield make_worker
    assert not (tmp_path / "local_upload").exists()


def run(inp, job_id="j-s3"):
    return handler.handler({"id": job_id, "input": inp})


def test_large_response_is_uploaded_and_returned_as_urls(make_worker, s3_stub):
    endpoint, puts = s3_stub
    make_worker(max_response_bytes=1_000, bucket_endpoint_url=endpoint, **KEYS)
    out = run({**person_fields(), **cloth_fields(), "return_intermediates": True})
    assert out["success"] and "result_image" not in out, out
    assert out["result_image_url"].startswith(f"{endpoint}/{delivery.bucket_name_for()}/j-s3/"
                                              "result_image")
    assert "X-Amz-Signature=" in out["result_image_url"]
    assert set(out["intermediate_urls"]) == {"warped_cloth", "warped_mask", "warped_grid",
                                             "rendered", "composite_mask", "parse", "pose_overlay"}
    assert len(puts) == 8 and all("/j-s3/" in path and size > 0 for path, size, _ in puts)
    assert {ctype for _, _, ctype in puts} == {"image/png"}


def test_upload_to_a_silent_bucket_is_bounded(make_worker, silent_bucket):
    make_worker(max_response_bytes=1_000, bucket_endpoint_url=silent_bucket, upload_timeout_s=1.0,
                upload_attempts=2, **KEYS)
    t0 = time.monotonic()
    out = run({**person_fields(), **cloth_fields(), "return_intermediates": True})
    elapsed = time.monotonic() - t0
    assert out["error"].startswith("UPLOAD_FAILED: output: "), out
    assert "127.0.0.1" not in out["error"] and "AKID" not in out["error"]
    assert elapsed < SILENT_BUCKET_BOUND_S, elapsed


def test_unreachable_bucket_is_a_typed_error(make_worker):
    with socket.socket() as s:                 # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    make_worker(max_response_bytes=1_000, bucket_endpoint_url=f"http://127.0.0.1:{port}",
                upload_timeout_s=1.0, upload_attempts=1, **KEYS)
    out = run({**person_fields(), **cloth_fields()})
    assert out["error"].startswith("UPLOAD_FAILED: "), out


@pytest.mark.parametrize("env,missing", [
    ({"BUCKET_ENDPOINT_URL": "https://s3.example.com"},
     ["BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY"]),
    ({"BUCKET_ENDPOINT_URL": "https://s3.example.com", "BUCKET_ACCESS_KEY_ID": "k"},
     ["BUCKET_SECRET_ACCESS_KEY"]),
    ({"BUCKET_ENDPOINT_URL": "https://s3.example.com", "BUCKET_SECRET_ACCESS_KEY": "s"},
     ["BUCKET_ACCESS_KEY_ID"]),
    ({"BUCKET_ENDPOINT_URL": "file:///tmp/out", "BUCKET_ACCESS_KEY_ID": "k",
      "BUCKET_SECRET_ACCESS_KEY": "s"}, ["http(s)"]),
])
def test_bucket_without_keys_is_refused_naming_the_variables(env, missing):
    with pytest.raises(ValueError) as info:
        Settings.from_env(env)
    assert all(name in str(info.value) for name in missing)
    assert "not-a-real" not in str(info.value)


def test_keys_never_appear_in_the_settings_repr():
    s = Settings.from_env({"BUCKET_ENDPOINT_URL": "https://s3.example.com",
                           "BUCKET_ACCESS_KEY_ID": "AKIDSECRETID",
                           "BUCKET_SECRET_ACCESS_KEY": "SUPERSECRETKEY"})
    assert "SUPERSECRETKEY" not in repr(s) and "AKIDSECRETID" not in repr(s)
    assert "SUPERSECRETKEY" not in repr(s.bucket)
    assert s.bucket.timeout_s == 10.0 and s.bucket.attempts == 2


@pytest.mark.slow
def test_worker_refuses_to_start_with_a_bucket_but_no_keys(tmp_path, random_ckpt_dir):
    env = {"PATH": "/usr/bin:/bin", "CHECKPOINT_DIR": str(random_ckpt_dir), "WARMUP": "0",
           "BUCKET_ENDPOINT_URL": "https://s3.example.com", "RUNPOD_LOG_LEVEL": "ERROR"}
    res = subprocess.run([sys.executable, "handler.py"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert res.returncode != 0
    assert "BUCKET_ACCESS_KEY_ID" in res.stderr and "BUCKET_SECRET_ACCESS_KEY" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (ROOT / "local_upload").exists()
