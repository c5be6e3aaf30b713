"""Issue 23: the CPU flavour — requirements_cpu.txt installs a worker without torch that serves a
prepared OpenVINO export (the smoke run and an HTTP request through the runpod dev server), and the
files that describe the flavour (requirements, Dockerfile target, Hub config) agree.

The venv test builds a fresh virtual environment from requirements_cpu.txt with pip (its wheel
cache makes a second run cheap: ~50 s on 2 cores from a warm cache) and serves an export that the
full environment (this test's own) prepared beforehand, with no checkpoint files beside it: what
the CPU image holds.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers.dev_server import dev_server

ROOT = Path(__file__).resolve().parents[2]
CPU_REQUIREMENTS = ROOT / "requirements_cpu.txt"
#: What the CPU flavour must never install (the point of it: 4.3 GB of the full install).
NOT_IN_THE_CPU_FLAVOUR = ("torch", "torchvision", "triton")
INSTALL_TIMEOUT_S = 900


def _requirements(path: Path) -> dict[str, str]:
    """name → the requirement line (without comment) of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            out[re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0].lower()] = line
    return out


def test_cpu_requirements_pin_what_the_full_install_pins_and_no_torch():
    cpu, full = _requirements(CPU_REQUIREMENTS), _requirements(ROOT / "requirements_runpod.txt")
    assert not set(cpu) & set(NOT_IN_THE_CPU_FLAVOUR)
    assert not [name for name in cpu if name.startswith("nvidia")]
    for name, line in cpu.items():
        assert full.get(name) == line, f"{name}: {line!r} here, {full.get(name)!r} in requirements_runpod.txt"
    for needed in ("runpod", "openvino", "numpy", "pillow", "opencv-contrib-python"):
        assert needed in cpu, needed


def _cpu_env(venv: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RUNPOD_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               **extra)
    return env


@pytest.fixture(scope="module")
def cpu_venv(tmp_path_factory) -> Path:
    """A fresh venv with requirements_cpu.txt, then requirements_mediapipe.txt with --no-deps."""
    venv = tmp_path_factory.mktemp("cpu") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (["-r", str(CPU_REQUIREMENTS)],
                 ["--no-deps", "-r", str(ROOT / "requirements_mediapipe.txt")]):
        res = subprocess.run(pip + args, capture_output=True, text=True, env=_cpu_env(venv),
                             timeout=INSTALL_TIMEOUT_S, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def export_only(random_ckpt_dir, tmp_path_factory) -> Path:
    """A checkpoint folder holding only the prepared export (made here, with torch)."""
    from openvino_backend.__main__ import main as prepare
    from openvino_backend.export_cache import RECORD
    assert prepare([str(random_ckpt_dir)]) == 0
    source = random_ckpt_dir / "openvino"
    ckpt = tmp_path_factory.mktemp("cpu-image") / "checkpoints"
    record = json.loads((source / RECORD).read_text())
    for name in record["entries"].values():
        shutil.copytree(source / name, ckpt / "openvino" / name)
    shutil.copy(source / RECORD, ckpt / "openvino" / RECORD)
    return ckpt


@pytest.mark.slow
def test_the_cpu_install_has_no_torch_and_serves_a_prepared_export(cpu_venv, export_only,
                                                                    tmp_path):
    python = str(cpu_venv / "bin" / "python")
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True,
                           env=_cpu_env(cpu_venv), timeout=60, check=False)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True,
                            text=True, env=_cpu_env(cpu_venv), timeout=120, check=True)
    names = {d["name"].lower() for d in json.loads(listed.stdout)}
    assert not names & set(NOT_IN_THE_CPU_FLAVOUR) and not any(n.startswith("nvidia") for n in names)

    # the smoke run, as README.md gives it, in the CPU install
    out = tmp_path / "smoke"
    smoke = subprocess.run([python, "runpod_test.py", "--repeats", "1", "--out-dir", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
                           env=_cpu_env(cpu_venv, CHECKPOINT_DIR=str(export_only), WARMUP="0"))
    assert smoke.returncode == 0, (smoke.stdout + smoke.stderr)[-3000:]
    summary = json.loads((out / "timings.json").read_text())
    assert summary["random_weights"] is True and summary["size"] == [320, 320]

    # one HTTP request through the runpod SDK's dev server, run by the CPU install
    job = json.loads((ROOT / ".runpod" / "tests.json").read_text())["tests"][0]
    log_path = tmp_path / "server.log"
    with dev_server(export_only, log_path, python=python,
                    PATH=_cpu_env(cpu_venv)["PATH"]) as (base, _proc):
        body = requests.post(f"{base}/runsync", json={"input": job["input"]}, timeout=300).json()
    assert body.get("status") == "COMPLETED", json.dumps(body)[:2000]
    assert body["output"]["random_weights"] is True and body["output"]["result_image"]
    assert "Traceback" not in log_path.read_text()


# --- the Dockerfile's cpu target -----------------------------------------------------------------
DOCKERFILE = ROOT / "Dockerfile"


def _stages() -> dict[str, str]:
    """Stage name → its instructions (from its FROM line to the next; comments dropped)."""
    text = "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    parts = re.split(r"^(?=FROM\s)", text, flags=re.M)[1:]
    return {re.match(r"FROM\s+\S+\s+AS\s+(\S+)", p, re.I).group(1): p for p in parts}


def test_the_default_target_stays_the_gpu_image():
    assert list(_stages())[-1] == "runtime"
    assert "nvidia/cuda" in re.search(r"^ARG BASE_IMAGE=(\S+)", DOCKERFILE.read_text(), re.M).group(1)


def test_the_cpu_target_has_no_torch_and_no_cuda():
    from tools import run_like_container as rlc
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG CPU_BASE_IMAGE=(\S+)", text, re.M).group(1)
    assert "nvidia" not in base and "cuda" not in base
    stages = _stages()
    for name in ("cpu-builder", "cpu"):
        assert stages[name].startswith("FROM ${CPU_BASE_IMAGE} AS"), name
    assert "-r /tmp/requirements/requirements_cpu.txt" in stages["cpu-builder"]
    assert "requirements_runpod.txt" not in stages["cpu-builder"] and "TORCH_INDEX_URL" not in stages["cpu-builder"]
    cpu = stages["cpu"]
    for word in ("pip install", "python3.12-venv", "curl", "--from=builder", "--from=checkpoints"):
        assert word not in cpu, f"{word!r} in the cpu stage"
    # what reaches the image from other stages: the CPU venv and the export, nothing else
    assert sorted(re.findall(r"--from=(\S+)", cpu)) == ["cpu-builder", "cpu-export"]
    assert "python -m openvino_backend" in stages["cpu-export"]
    stage = rlc.parse_final_stage(text, "cpu")
    gpu = rlc.parse_final_stage(text)
    assert stage.cmd == gpu.cmd and stage.workdir == gpu.workdir == "/app"
    assert stage.copies == gpu.copies                 # the same serving code as the GPU image
    assert stage.env["CHECKPOINT_DIR"] == "/app/checkpoints" and stage.env["BACKEND"] == "openvino"
    assert stage.user and stage.user.split(":")[0] not in ("0", "root")


def test_build_and_push_builds_the_cpu_target():
    res = subprocess.run([str(ROOT / "build_and_push.sh"), "--image", "me/cpvton", "--version",
                          "1", "--flavour", "cpu", "--dry-run"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "--target cpu" in res.stdout and "me/cpvton:1-cpu" in res.stdout
    gpu = subprocess.run([str(ROOT / "build_and_push.sh"), "--image", "me/cpvton", "--version",
                          "1", "--dry-run"], capture_output=True, text=True, timeout=60, check=False)
    assert gpu.returncode == 0 and "--target" not in gpu.stdout and "me/cpvton:1 " in gpu.stdout + " "


@pytest.mark.slow
def test_the_cpu_image_entrypoint_runs_one_job(cpu_venv, export_only):
    """The cpu target's CMD and ENV (tools/run_like_container.py --target cpu), run by the CPU
    install on the prepared export: the Hub's test request through the SDK's local test mode."""
    job = json.loads((ROOT / ".runpod" / "tests.json").read_text())["tests"][0]
    res = subprocess.run([str(cpu_venv / "bin" / "python"), str(ROOT / "tools/run_like_container.py"),
                          "--target", "cpu", "--checkpoints", str(export_only), "-e", "WARMUP=0",
                          "--timeout", "240", "--", "--test_input", json.dumps({"input": job["input"]})],
                         capture_output=True, text=True, timeout=300, check=False,
                         env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "completed successfully" in out and "backend openvino" in out


# --- the RunPod Hub config of the CPU flavour ----------------------------------------------------
def test_the_cpu_hub_config_describes_a_cpu_endpoint():
    from tests.deploy.test_deploy_docker_and_env import _settings_env_vars
    hub = json.loads((ROOT / ".runpod/cpu/hub.json").read_text())
    gpu_hub = json.loads((ROOT / ".runpod/hub.json").read_text())
    assert hub["type"] == gpu_hub["type"] and hub["category"] == gpu_hub["category"]
    cfg = hub["config"]
    assert cfg["runsOn"] == "CPU" and isinstance(cfg["cpuFlavor"], str) and cfg["cpuFlavor"]
    assert isinstance(cfg["containerDiskInGb"], int)
    assert not {"gpuIds", "gpuCount", "allowedCudaVersions"} & set(cfg)
    env = {e["key"]: e for e in cfg["env"]}
    assert set(env) <= _settings_env_vars()
    assert env["BACKEND"]["value"] == "openvino"
    assert env["CHECKPOINT_DIR"]["input"]["default"] == "/app/checkpoints"
    assert "fp16" not in {o["value"] for o in env["PRECISION"]["input"]["options"]}   # GPU only


def test_the_cpu_hub_tests_are_the_gpu_ones_on_a_cpu():
    from worker import schema
    doc = json.loads((ROOT / ".runpod/cpu/tests.json").read_text())
    gpu_doc = json.loads((ROOT / ".runpod/tests.json").read_text())
    assert doc["tests"] == gpu_doc["tests"]            # the same requests, one set of them
    assert doc["config"]["cpuFlavor"] and "gpuTypeId" not in doc["config"]
    for case in doc["tests"]:
        schema.parse_request(case["input"], max_items=8)
