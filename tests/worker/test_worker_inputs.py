"""Settings, URL inputs (SSRF policy, limits) and fuzzing of the handler's input path."""
from __future__ import annotations

import dataclasses
import http.server
import threading

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import handler
from tests.helpers.worker_inputs import cloth_fields, person_fields, png_bytes
from worker import sample_images
from worker import settings as settings_module
from worker.settings import REPO_DIR, Settings

ALLOW_PRIVATE = "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"


# -- settings ---------------------------------------------------------------------------------------
def test_settings_defaults_and_parsing():
    s = Settings.from_env({})
    assert s == Settings() and s.checkpoint_dir == REPO_DIR / "checkpoints"
    s = Settings.from_env({"CHECKPOINT_DIR": "ck", "MAX_BATCH_ITEMS": "3", "WARMUP": "0",
                           "ALLOW_RANDOM_WEIGHTS": "true", "LOG_LEVEL": "debug",
                           "URL_TIMEOUT_S": "2.5", "PERSON_CACHE_SIZE": "0",
                           "GMM_CHECKPOINT": "/abs/gmm.pth", "BUCKET_ENDPOINT_URL": " "})
    assert s.checkpoint_dir == REPO_DIR / "ck" and s.max_batch_items == 3 and not s.warmup
    assert s.allow_random_weights and s.log_level == "DEBUG" and s.url_timeout_s == 2.5
    assert s.person_cache_size == 0 and str(s.gmm_checkpoint) == "/abs/gmm.pth"
    assert s.bucket_endpoint_url is None


@pytest.mark.parametrize("name, value", [
    ("MAX_BATCH_ITEMS", "0"), ("MAX_BATCH_ITEMS", "many"), ("DEVICE", "tpu"),
    ("PRECISION", "fp8"), ("REQUIRE_GPU", "maybe"), ("URL_TIMEOUT_S", "nan"),
    ("LOG_LEVEL", "LOUD"), ("PERSON_CACHE_SIZE", "-1"), ("BACKEND", "onnx"),
])
def test_settings_reject_bad_values_naming_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_every_setting_has_its_variable():
    assert len(settings_module.ENV_VARS) == len(dataclasses.fields(Settings))
    for name in settings_module.ENV_VARS:
        assert name.lower() in {f.name for f in dataclasses.fields(Settings)}


# -- URL inputs -------------------------------------------------------------------------------------
class _Files(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()
            return
        body = self.files.get(path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def file_server():
    cloth = sample_images.garment(192, 256)
    _Files.files = {"/cloth.png": png_bytes(cloth),
                    "/person.png": png_bytes(sample_images.synthetic_person().image),
                    "/big.png": png_bytes(sample_images.garment(1200, 1600))}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def url_worker(model, random_ckpt_dir):
    worker = handler.Worker(Settings(checkpoint_dir=random_ckpt_dir, warmup=False,
                                     url_max_bytes=50_000, url_timeout_s=5), model)
    handler.set_worker(worker)
    yield worker
    handler.set_worker(None)


def _run(inp):
    return handler.handler({"id": "url-job", "input": inp})


def test_loopback_url_refused_by_default(url_worker, file_server, monkeypatch):
    monkeypatch.delenv(ALLOW_PRIVATE, raising=False)
    person = person_fields()
    out = _run({**person, "cloth_image_url": f"{file_server}/cloth.png",
                "cloth_mask": cloth_fields()["cloth_mask"]})
    assert out["error"].startswith("INVALID_INPUT: cloth_image_url: address not allowed")


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/",
                                 "http://10.0.0.1/a.png", "http://[::1]/a.png",
                                 "http://localhost/a.png"])
def test_private_and_metadata_addresses_refused(url_worker, url, monkeypatch):
    monkeypatch.delenv(ALLOW_PRIVATE, raising=False)
    out = _run({**person_fields(), "cloth_image_url": url})
    assert out["error"].startswith("INVALID_INPUT: cloth_image_url: address not allowed"), out


def test_url_inputs_with_loopback_allowed_for_this_test(url_worker, file_server, monkeypatch):
    # The SDK's own escape hatch, set only here: the test server lives on loopback.
    monkeypatch.setenv(ALLOW_PRIVATE, "true")
    person = person_fields()
    person["person_image_url"] = f"{file_server}/person.png?token=SECRET"
    del person["person_image"]
    out = _run({**person, "cloth_image_url": f"{file_server}/cloth.png",
                "cloth_mask": cloth_fields()["cloth_mask"], "output_size": "model"})
    assert out["success"] is True and (out["width"], out["height"]) == (192, 256)
    assert "fetch" in out["timings_ms"]

    out = _run({**person_fields(), "cloth_image_url": f"{file_server}/missing.png"})
    assert out["error"] == "FETCH_FAILED: cloth_image_url: server answered HTTP 404"
    out = _run({**person_fields(), "cloth_image_url": f"{file_server}/big.png"})
    assert out["error"].startswith("IMAGE_TOO_LARGE: cloth_image_url: download exceeds")


def test_redirect_to_metadata_refused(url_worker, file_server, monkeypatch):
    """With the loopback hatch closed the first hop is refused already; the SDK re-checks
    every redirect hop, so a public URL redirecting to 169.254.169.254 is refused too."""
    monkeypatch.delenv(ALLOW_PRIVATE, raising=False)
    out = _run({**person_fields(), "cloth_image_url": f"{file_server}/redirect"})
    assert out["error"].startswith("INVALID_INPUT: cloth_image_url: address not allowed")


def test_url_not_in_logs_with_query(url_worker, file_server, monkeypatch, caplog):
    monkeypatch.setenv(ALLOW_PRIVATE, "true")
    with caplog.at_level("DEBUG", logger="cpvton.worker"):
        _run({**person_fields(), "cloth_image_url": "http://127.0.0.1:9/x.png?sig=SECRET"})
    assert "SECRET" not in caplog.text


# -- fuzzing: every malformed input is a structured error ---------------------------------------
FIELDS = ["person_image", "person_image_url", "cloth_image", "cloth_image_url", "person_parse",
          "person_pose", "person_mask", "cloth_mask", "output_format", "jpeg_quality",
          "output_size", "garment_resolution", "return_intermediates", "pairs", "cloth_images"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) |
    st.text(max_size=30) | st.sampled_from(["", "iVBORw0KGgo=", "data:image/png;base64,AAAA",
                                            "http://127.0.0.1/a.png", "png", "model"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(FIELDS) | st.text(max_size=8), children, max_size=4),
    max_leaves=12)
CODES = ("INVALID_INPUT", "INVALID_IMAGE", "IMAGE_TOO_LARGE", "NO_PERSON", "NO_CLOTH",
         "BATCH_TOO_LARGE", "FETCH_FAILED", "INTERNAL")


@hsettings(max_examples=150, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=json_values | st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5))
def test_fuzz_handler_returns_structured_errors(url_worker, payload):
    out = handler.handler({"id": "fuzz", "input": payload})
    assert isinstance(out, dict)
    if "error" in out:
        code = out["error"].split(":", 1)[0]
        assert code in CODES and code != "INTERNAL", out
        assert "Traceback" not in out["error"]
    elif "results" in out:
        for item in out["results"]:
            assert item["success"] or item["error"].split(":", 1)[0] in CODES
