"""URL inputs under attack: forbidden addresses are refused before any connection, every redirect
hop is checked again, and the size and time limits hold against hostile servers.

Only loopback traffic: the test's own server listens on 127.0.0.1, and it is allowed *only* by
replacing the SDK's address check with one that also accepts exactly 127.0.0.1 (the real check
stays in force for every other address, so a redirect from the test server to a private or
metadata address must be refused). Every connection attempt is recorded: the refused addresses
must never be dialled. Time bounds asserted here are generous guards against hangs.
"""
from __future__ import annotations

import gzip
import http.server
import threading
import time
from urllib.parse import unquote

import pytest
import urllib3.util.connection as u3conn
from runpod.serverless.utils import rp_ssrf

import handler
from tests.helpers.worker_inputs import cloth_fields, person_fields, png_bytes
from worker import sample_images
from worker.settings import Settings

ALLOW_PRIVATE = "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"
URL_TIMEOUT_S = 1.5
URL_MAX_BYTES = 60_000
#: Guard against hangs: a refused address answers at once, a stalled server within the timeout.
REFUSE_BOUND_S = 5.0
STALL_BOUND_S = 3 * URL_TIMEOUT_S + 5.0


class _Hostile(http.server.BaseHTTPRequestHandler):
    stop = threading.Event()
    cloth = b""

    def _head(self, status=200, length=None, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", "image/png")
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def do_GET(self):  # noqa: N802
        path, _, query = self.path.partition("?")
        try:
            if path == "/cloth.png":
                self._head(length=len(self.cloth))
                self.wfile.write(self.cloth)
            elif path == "/redirect":                      # to wherever ?to= says
                self.send_response(302)
                self.send_header("Location", unquote(query.split("to=", 1)[1]))
                self.end_headers()
            elif path == "/no-length":                      # close-delimited, over the cap
                self._head(extra=[("Connection", "close")])
                for _ in range(40):
                    self.wfile.write(b"\x89PNG" + b"\0" * 4092)
            elif path == "/lying-length":                   # claims 100 bytes, sends more
                self._head(length=100)
                self.wfile.write(b"\0" * 200_000)
            elif path == "/gzip-bomb":                      # small on the wire, huge decoded
                body = gzip.compress(b"\0" * 5_000_000)
                self._head(length=len(body), extra=[("Content-Encoding", "gzip")])
                self.wfile.write(body)
            elif path == "/stall-headers":                  # accepts, then says nothing
                self.stop.wait(3 * URL_TIMEOUT_S + 2)
            elif path == "/stall-body":                     # headers, a little, then nothing
                self._head(length=50_000)
                self.wfile.write(self.cloth[:100])
                self.wfile.flush()
                self.stop.wait(3 * URL_TIMEOUT_S + 2)
            elif path == "/drip":                           # one byte every 50 ms, forever
                self._head(length=50_000)
                for i in range(50_000):
                    if self.stop.wait(0.05):
                        break
                    self.wfile.write(b"\0")
                    self.wfile.flush()
            else:
                self._head(status=404, length=0)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hostile_server():
    _Hostile.cloth = png_bytes(sample_images.garment(192, 256))
    _Hostile.stop.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Hostile.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def dialled(monkeypatch):
    """Every address the download code connects to (the real connect still happens)."""
    seen = []
    real = u3conn.create_connection

    def record(address, *a, **k):
        seen.append(address[0])
        return real(address, *a, **k)
    monkeypatch.setattr(u3conn, "create_connection", record)
    return seen


@pytest.fixture
def loopback_allowed(monkeypatch):
    """Allow exactly 127.0.0.1 (the test's server); the SDK's check holds for all else."""
    monkeypatch.delenv(ALLOW_PRIVATE, raising=False)
    real = rp_ssrf.is_safe_address
    monkeypatch.setattr(rp_ssrf, "is_safe_address", lambda ip: ip == "127.0.0.1" or real(ip))


@pytest.fixture
def url_worker(model, random_ckpt_dir, monkeypatch):
    monkeypatch.delenv(ALLOW_PRIVATE, raising=False)
    w = handler.Worker(Settings(checkpoint_dir=random_ckpt_dir, warmup=False,
                                url_max_bytes=URL_MAX_BYTES, url_timeout_s=URL_TIMEOUT_S), model)
    handler.set_worker(w)
    yield w
    handler.set_worker(None)


def _cloth_url(url):
    t0 = time.monotonic()
    out = handler.handler({"id": "url", "input": {**person_fields(), "cloth_image_url": url,
                                                   "output_size": "model"}})
    return out, time.monotonic() - t0


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/a.png", "http://127.1.2.3:8080/a.png", "http://localhost/a.png",
    "http://2130706433/a.png",                       # 127.0.0.1 as one decimal number
    "http://0.0.0.0/a.png", "http://10.0.0.1/a.png", "http://10.255.255.254/a.png",
    "http://172.16.0.1/a.png", "http://172.31.255.1/a.png", "http://192.168.1.1/a.png",
    "http://100.64.0.1/a.png",                       # CGNAT
    "http://169.254.169.254/latest/meta-data/iam/", "http://169.254.1.1/a.png",
    "http://[::1]/a.png", "http://[fd00::1]/a.png", "http://[fc12:3456::1]/a.png",
    "http://[fe80::1]/a.png", "http://[::ffff:169.254.169.254]/a.png",
    "http://[::ffff:10.0.0.1]/a.png", "https://192.168.0.10:8443/x.png?sig=SECRET",
    "http://user:pass@10.0.0.1/a.png",
])
def test_forbidden_addresses_refused_before_any_connection(url_worker, dialled, url):
    out, elapsed = _cloth_url(url)
    assert out["error"].startswith("INVALID_INPUT: cloth_image_url: address not allowed"), out
    assert dialled == [] and elapsed < REFUSE_BOUND_S
    assert "SECRET" not in out["error"] and "pass" not in out["error"]


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/a.png",
    "http://192.168.1.1/a.png", "http://[fd00::1]/a.png", "http://[::1]:{port}/cloth.png",
    "http://[fe80::1]/a.png",
])
def test_redirect_to_a_forbidden_address_is_refused(url_worker, hostile_server, loopback_allowed,
                                                    dialled, target):
    port = hostile_server.rsplit(":", 1)[1]
    out, elapsed = _cloth_url(f"{hostile_server}/redirect?to={target.format(port=port)}")
    assert out["error"].startswith("INVALID_INPUT: cloth_image_url: address not allowed"), out
    assert set(dialled) == {"127.0.0.1"} and elapsed < REFUSE_BOUND_S


def test_allowed_redirect_is_followed(url_worker, hostile_server, loopback_allowed, dialled):
    out, _ = _cloth_url(f"{hostile_server}/redirect?to=/cloth.png")
    assert out.get("success") is True, out
    assert dialled == ["127.0.0.1", "127.0.0.1"]


@pytest.mark.parametrize("path", ["/no-length", "/lying-length", "/gzip-bomb"])
def test_size_limit_holds_without_an_honest_content_length(url_worker, hostile_server,
                                                           loopback_allowed, path):
    out, elapsed = _cloth_url(hostile_server + path)
    if path == "/lying-length":
        # The client reads exactly the declared 100 bytes: not an image, and nothing more read.
        assert out["error"].startswith("INVALID_IMAGE: cloth_image_url"), out
    else:
        assert out["error"] == (f"IMAGE_TOO_LARGE: cloth_image_url: download exceeds "
                                f"{URL_MAX_BYTES} bytes"), out
    assert elapsed < STALL_BOUND_S


@pytest.mark.parametrize("path", ["/stall-headers", "/stall-body", "/drip"])
def test_time_limit_holds_against_stalling_and_trickling_servers(url_worker, hostile_server,
                                                                 loopback_allowed, path):
    out, elapsed = _cloth_url(hostile_server + path)
    assert out["error"] == (f"FETCH_FAILED: cloth_image_url: download took longer than "
                            f"{URL_TIMEOUT_S:g} s"), out
    assert elapsed < STALL_BOUND_S, elapsed


def test_worker_still_serves_after_hostile_urls(url_worker, hostile_server, loopback_allowed):
    out = handler.handler({"id": "after", "input": {**person_fields(), **cloth_fields(),
                                                     "output_size": "model"}})
    assert out["success"] is True
