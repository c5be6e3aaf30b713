"""Start ``python handler.py --rp_serve_api`` on loopback as a real process, for the HTTP tests."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dev_server(checkpoint_dir: Path, log_path: Path, *, python: str = sys.executable,
               **env_overrides: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run the SDK's local dev server on 127.0.0.1 (random-weight checkpoints, CPU) until the
    block ends; yields (base URL, process). The server's output goes to ``log_path``;
    ``python`` is the interpreter that runs it (another install's, e.g. the CPU flavour's)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(CHECKPOINT_DIR=str(checkpoint_dir), WARMUP="1", DEVICE="cpu",
               UVICORN_LOG_LEVEL="warning", **env_overrides)
    base = f"http://127.0.0.1:{port}"
    with served([python, "handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                 "--rp_api_port", str(port)], env, log_path, f"{base}/docs", "dev server") as proc:
        yield base, proc


@contextlib.contextmanager
def served(argv: list[str], env: dict, log_path: Path, ready_url: str,
           name: str) -> Iterator[subprocess.Popen]:
    """Run ``argv`` in the checkout (its own session, output to ``log_path``) until the block
    ends; yields the process once ``ready_url`` answers below 500. A process that exits or does
    not answer within START_TIMEOUT_S fails the test with the end of its log."""
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(ready_url, timeout=2).status_code < 500:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
