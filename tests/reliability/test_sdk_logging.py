"""No image data in any log (issue 13, finding 9): the runpod SDK's own lines ("Retrieved local
job", "Handler output", "run_job return", "Job result") follow LOG_LEVEL and carry no payload, in
the dev server, in both local test modes and in the container's entry point.

Every mode runs as a real process at LOG_LEVEL=DEBUG (the most verbose) with random-weight
checkpoints, and its whole output is searched for base64 image data.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers.dev_server import dev_server
from tests.helpers.worker_inputs import cloth_fields, person_fields

ROOT = Path(__file__).resolve().parents[2]
#: Image data in a log: a long run of base64 (200 characters is 150 bytes; no log line of ours
#: or the SDK's has such a run) or the base64 of a PNG / JPEG signature.
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{200,}")
SIGNATURES = ("iVBORw0KGgo", "/9j/")
TIMEOUT_S = 300


def assert_no_image_data(text: str, job: dict) -> None:
    run = BASE64_RUN.search(text)
    assert run is None, f"base64 in the log: {run.group()[:80]}..."
    assert not any(sig in text for sig in SIGNATURES)
    for value in job["input"].values():
        if isinstance(value, str):
            assert value[:64] not in text


def job() -> dict:
    return {"input": {**person_fields(), **cloth_fields()}}


def env(random_ckpt_dir: Path, **extra) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "LOG_LEVEL"))}
    return {**base, "CHECKPOINT_DIR": str(random_ckpt_dir), "WARMUP": "0", "DEVICE": "cpu",
            "LOG_LEVEL": "DEBUG", **extra}


def test_redact_keeps_the_label_and_drops_the_payload():
    from worker.logs import redact

    payload = json.dumps({"result_image": "QUJD" * 5000})
    for label in ("Handler output:", "run_job return:", "Retrieved local job:", "Job result:"):
        out = redact(f"{label} {payload}")
        assert out.startswith(label) and "QUJD" not in out and len(out) < 100
    assert "QUJD" not in redact("something else " + "QUJD" * 100)
    assert redact("Finished.") == "Finished."


@pytest.mark.slow
def test_dev_server_logs_no_image_data(random_ckpt_dir, tmp_path):
    log_path = tmp_path / "server.log"
    request = job()
    with dev_server(random_ckpt_dir, log_path, LOG_LEVEL="DEBUG") as (base, _proc):
        for _ in range(2):
            res = requests.post(f"{base}/runsync", json=request, timeout=TIMEOUT_S)
            assert res.status_code == 200 and res.json()["output"]["success"] is True
    text = log_path.read_text(errors="replace")
    assert "Handler output:" in text or "run_job return:" in text, text[-2000:]  # DEBUG is on
    assert_no_image_data(text, request)


@pytest.mark.slow
def test_local_test_input_argument_logs_no_image_data(random_ckpt_dir):
    request = job()
    res = subprocess.run([sys.executable, "handler.py", "--test_input", json.dumps(request)],
                         cwd=ROOT, env=env(random_ckpt_dir), capture_output=True, text=True,
                         timeout=TIMEOUT_S, check=False)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-3000:]
    assert "Retrieved local job:" in text and "Job result:" in text
    assert_no_image_data(text, request)


@pytest.mark.slow
def test_local_test_input_file_logs_no_image_data(random_ckpt_dir, tmp_path):
    request = job()
    (tmp_path / "test_input.json").write_text(json.dumps(request))
    res = subprocess.run([sys.executable, str(ROOT / "handler.py")], cwd=tmp_path,
                         env=env(random_ckpt_dir), capture_output=True, text=True,
                         timeout=TIMEOUT_S, check=False)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-3000:]
    assert_no_image_data(text, request)


@pytest.mark.slow
def test_container_entry_point_logs_no_image_data(random_ckpt_dir):
    if not (ROOT / "tools" / "run_like_container.py").is_file():
        pytest.skip("tools/run_like_container.py is not in this checkout")
    request = job()
    res = subprocess.run(
        [sys.executable, "tools/run_like_container.py", "-e", "ALLOW_RANDOM_WEIGHTS=1",
         "-e", "WARMUP=0", "-e", "LOG_LEVEL=DEBUG", "--", "--test_input", json.dumps(request)],
        cwd=ROOT, env={"PATH": os.environ.get("PATH", ""), "HOME": str(random_ckpt_dir)},
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-3000:]
    assert_no_image_data(text, request)


@pytest.mark.slow
def test_log_level_warning_silences_the_sdk_info_lines(random_ckpt_dir):
    request = job()
    res = subprocess.run([sys.executable, "handler.py", "--test_input", json.dumps(request)],
                         cwd=ROOT, env=env(random_ckpt_dir, LOG_LEVEL="WARNING"),
                         capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-3000:]
    assert "Job result" not in text and "Retrieved local job" not in text


def test_the_image_sets_the_sdk_level_above_info():
    """Defence in depth: lines the SDK might print before our routing is installed."""
    from tools import run_like_container as rlc

    stage = rlc.parse_final_stage((ROOT / "Dockerfile").read_text())
    assert stage.env.get("RUNPOD_LOG_LEVEL") in ("WARN", "ERROR")
