"""Issue 21: a new user's path, round three. Each test runs the documented command (or API call)
as a user would: in a subprocess from another folder where the issue says command.

No durations are asserted: where time matters (retries within --timeout) the tests count the
attempts and check what the client itself reports, against a closed loopback port.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DOWNLOAD = ROOT / "download_checkpoints.sh"
IN_PROJECT_VENV = Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()
#: MediaPipe's native start-up lines (issue 21, item 8).
NATIVE_NOISE = ("Created TensorFlow Lite XNNPACK delegate", "before absl::InitializeLog",
                "inference_feedback_manager.cc", "landmark_projection_calculator")


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RUNPOD_") and k not in ("ALLOW_RANDOM_WEIGHTS", "LOG_LEVEL")}
    env.update(extra)
    return env


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """The interpreter of a fresh venv with nothing installed (no requests, no Pillow)."""
    target = tmp_path_factory.mktemp("bare") / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    return target / "bin" / "python"


# -- item 1: one random-weights switch ------------------------------------------------------------
def test_python_api_follows_allow_random_weights_and_says_both_switches(tmp_path, monkeypatch):
    from cpvton_infer import CPVTONPlusModel, build_model
    from vton_core.errors import CheckpointError

    monkeypatch.delenv("ALLOW_RANDOM_WEIGHTS", raising=False)
    with pytest.raises(CheckpointError) as info:
        build_model(tmp_path, "cpu", backend="torch")
    assert "ALLOW_RANDOM_WEIGHTS=1" in str(info.value) and "allow_random_weights=True" in str(info.value)
    monkeypatch.setenv("ALLOW_RANDOM_WEIGHTS", "1")
    model = CPVTONPlusModel(tmp_path, device="cpu", backend="torch")
    assert model.weights.random and "ALLOW_RANDOM_WEIGHTS=1" in model.weights.random_reason
    with pytest.raises(CheckpointError):                    # the keyword wins over the variable
        build_model(tmp_path, "cpu", backend="torch", allow_random_weights=False)


# -- item 2: the client needs requests + Pillow only, and says so --------------------------------
def test_client_help_and_message_with_a_bare_interpreter(bare_python, tmp_path):
    client = str(ROOT / "client_example.py")
    res = subprocess.run([str(bare_python), "-I", client, "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and "usage" in res.stdout and "--garment-resolution" in res.stdout
    res = subprocess.run([str(bare_python), "-I", client, "--base-url", "http://127.0.0.1:9"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "pip install requests pillow" in res.stderr
    res = subprocess.run([str(bare_python), "-I", "-c",
                          f"import sys; sys.path.insert(0, {str(ROOT)!r}); import client_example"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1 and "pip install requests pillow" in res.stderr


def test_client_runs_with_requests_and_pillow_alone(tmp_path):
    """The project's other packages blocked: the client still builds its default request."""
    copy = tmp_path / "client_example.py"
    shutil.copy(ROOT / "client_example.py", copy)           # as a shop developer copies it
    shutil.copy(ROOT / "test_input.json", tmp_path)
    blocked = ("numpy", "torch", "worker", "vton_core", "cpvton_infer", "runpod")
    code = (f"import sys; sys.modules.update(dict.fromkeys({blocked!r}));"
            "sys.argv = ['client_example.py', '--base-url', 'http://127.0.0.1:%d', '--timeout', '1'];"
            "import client_example; sys.exit(client_example.main())" % closed_port())
    res = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 1, res.stderr
    assert "UNAVAILABLE" in res.stderr and "Traceback" not in res.stderr


def test_run_like_container_without_the_venv_says_how(bare_python):
    res = subprocess.run([str(bare_python), "-I", str(ROOT / "tools/run_like_container.py")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "./run.sh python tools/run_like_container.py" in res.stderr and "runpod" in res.stderr


def test_client_garment_resolution_choices_are_the_workers():
    import client_example
    from client_example import CPVTONClient
    from vton_core.model_spec import GARMENT_RESOLUTIONS

    assert client_example.GARMENT_RESOLUTIONS == tuple(GARMENT_RESOLUTIONS)
    payload = CPVTONClient.build_input(b"p", b"c", garment_resolution="model")
    assert payload["garment_resolution"] == "model"
    assert "garment_resolution" not in CPVTONClient.build_input(b"p", b"c")
    with pytest.raises(ValueError, match="garment_resolution"):
        CPVTONClient.build_input(b"p", b"c", garment_resolution="huge")


# -- item 3: run.sh keeps the caller's folder; the client's output is not left untracked -----------
@pytest.mark.skipif(not IN_PROJECT_VENV, reason="run.sh would install .venv: run the tests through it")
def test_run_sh_keeps_relative_paths_of_the_callers_folder(tmp_path):
    (tmp_path / "person.jpg").write_bytes(b"not a picture")       # found, then refused as such
    res = subprocess.run(["bash", str(ROOT / "run.sh"), "python", "runpod_test.py",
                          "--person", "person.jpg"], cwd=tmp_path, env=clean_env(),
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stderr
    assert "not a decodable image" in res.stderr and "file not found" not in res.stderr


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="not a git checkout")
def test_default_outputs_and_env_file_are_git_ignored():
    for name in ("tryon.png", "tryon.jpg", "tryon.webp", ".env", "outputs/runpod_test/montage.png",
                 "outputs/handler/result.png"):
        res = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, check=False)
        assert res.returncode == 0, f"{name} is not git-ignored"


# -- item 4: download_checkpoints.sh without network ---------------------------------------------
def run_download(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
            "CURL_RETRIES": "0", "LOAD_CHECK": "0", **env}
    return subprocess.run(["bash", str(DOWNLOAD), *args], env=base, capture_output=True,
                          text=True, timeout=120, check=False)


def offline_urls() -> dict:
    port = closed_port()
    return {"GMM_URL": f"http://127.0.0.1:{port}/gmm_final.pth",
            "TOM_URL": f"http://127.0.0.1:{port}/tom_final.pth"}


def test_download_offline_is_one_clear_line_and_leaves_no_folders(tmp_path):
    ckpt = tmp_path / "ckpt"
    res = run_download(CHECKPOINT_DIR=str(ckpt), **offline_urls())
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, res.stderr
    assert "cannot reach the source" in errors[0] and "runpod_test.py" in errors[0]
    assert "works without the weights" in errors[0] and "--from-dir DIR" in errors[0]
    assert not (ckpt / "GMM").exists() and not (ckpt / "TOM").exists()


def test_download_if_configured_offline_ends_with_what_it_means(tmp_path):
    ckpt = tmp_path / "ckpt"
    res = run_download("--if-configured", CHECKPOINT_DIR=str(ckpt), **offline_urls())
    assert res.returncode == 0, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "without checkpoints" in last and not last.endswith(":")
    assert res.stderr.count("works without the weights") == 1            # said once
    assert not (ckpt / "GMM").exists() and not (ckpt / "TOM").exists()


def test_download_from_dir_without_the_files_is_an_error_naming_them(tmp_path):
    (tmp_path / "src" / "GMM").mkdir(parents=True)
    res = run_download("--from-dir", str(tmp_path / "src"), CHECKPOINT_DIR=str(tmp_path / "ckpt"))
    assert res.returncode == 1
    assert "GMM/gmm_final.pth" in res.stderr and "TOM/tom_final.pth" in res.stderr
    assert "downloading" not in res.stderr and "nothing was downloaded" in res.stderr


# -- item 5: .env ---------------------------------------------------------------------------------
def test_env_example_says_how_a_dot_env_is_used():
    head = (ROOT / ".env.example").read_text().split("\n\n")[0]
    assert "--env-file .env" in head and "git-ignored" in head and "Nothing reads a .env" in head


# -- item 6: retries within --timeout, each said ------------------------------------------------
def retry_report(stderr: str) -> tuple[int, float, list[str]]:
    """(attempts, seconds spent, retry lines) as the client reports them."""
    m = re.search(r"gave up after (\d+) attempts? in ([\d.]+) s", stderr)
    assert m, stderr
    return int(m.group(1)), float(m.group(2)), [ln for ln in stderr.splitlines() if "retrying in" in ln]


def test_client_against_a_down_server_stays_within_timeout(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    res = subprocess.run([sys.executable, str(ROOT / "client_example.py"), "--base-url", url,
                          "--timeout", "3"], cwd=tmp_path, env=clean_env(), capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 1 and "UNAVAILABLE" in res.stderr and "Traceback" not in res.stderr
    attempts, spent, retries = retry_report(res.stderr)
    assert spent <= 3.0 and 2 <= attempts <= 6 and len(retries) == attempts - 1
    assert all("ConnectionError" in ln and "POST /runsync" in ln for ln in retries)
    assert list(tmp_path.iterdir()) == []                   # no result, no partial file


def test_smoke_run_api_against_a_down_server_stays_within_timeout(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    res = subprocess.run([sys.executable, str(ROOT / "runpod_test.py"), "--api", url,
                          "--timeout", "3"], cwd=tmp_path, env=clean_env(), capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 1
    assert res.stdout.startswith(f"calling {url}")          # says something at once
    attempts, spent, retries = retry_report(res.stderr)
    assert spent <= 3.0 and len(retries) == attempts - 1 >= 1


def test_client_call_budget_bounds_polling_and_retries(monkeypatch):
    """One ``timeout`` for a whole call: a retry that would end after it is not made."""
    import client_example
    from client_example import CPVTONClient, CPVTONError

    class Clock:                      # client_example's ``time``: sleeping advances it
        now = 0.0

        def monotonic(self):
            return self.now

        def sleep(self, seconds):
            self.now += seconds

        def time(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(client_example, "time", clock)
    client = CPVTONClient(base_url=f"http://127.0.0.1:{closed_port()}", timeout=4, max_retry_s=60)
    with pytest.raises(CPVTONError) as info:
        client.try_on_sync(b"p", b"c")
    assert info.value.code == "UNAVAILABLE" and 0 < clock.now <= 4.0


# -- item 7: the worker's reason for random weights ---------------------------------------------
def test_worker_logs_the_true_reason_for_random_weights(random_ckpt_dir, tmp_path, caplog):
    import handler
    from worker.settings import Settings

    caplog.set_level(logging.WARNING, logger="cpvton.worker")
    handler.start_worker(Settings(checkpoint_dir=random_ckpt_dir, backend="torch", device="cpu",
                                  warmup=False))
    line = next(r.getMessage() for r in caplog.records if "RANDOM WEIGHTS" in r.getMessage()
                and r.name == "cpvton.worker")
    assert "checkpoint files are the deterministic random test weights" in line
    assert "ALLOW_RANDOM_WEIGHTS" not in line
    caplog.clear()
    handler.start_worker(Settings(checkpoint_dir=tmp_path, allow_random_weights=True,
                                  backend="torch", device="cpu", warmup=False))
    line = next(r.getMessage() for r in caplog.records if "RANDOM WEIGHTS" in r.getMessage()
                and r.name == "cpvton.worker")
    assert "checkpoint not found" in line and "ALLOW_RANDOM_WEIGHTS=1" in line


# -- item 8: the worker's log is its own lines ---------------------------------------------------
def run_local_job(ckpt: Path, **env: str) -> subprocess.CompletedProcess:
    """``python handler.py`` (the SDK's local test run of test_input.json), as the image runs it
    (tools/run_like_container.py: a copy of the image's files, so nothing is written here)."""
    args = [sys.executable, str(ROOT / "tools/run_like_container.py"), "--checkpoints", str(ckpt),
            "-e", "DEVICE=cpu", "-e", "BACKEND=torch"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_native_log_noise_only_at_debug(random_ckpt_dir):
    quiet = run_local_job(random_ckpt_dir)
    out = quiet.stdout + quiet.stderr
    assert quiet.returncode == 0, out[-3000:]
    assert "completed successfully" in out and "loading MediaPipe pose model" in out
    assert [n for n in NATIVE_NOISE if n in out] == [], out[-3000:]
    # item 10: the local run says where its result is
    assert re.search(r"local test run: result written to \S+outputs/handler/result\.jpg", out)
    debug = run_local_job(random_ckpt_dir, LOG_LEVEL="DEBUG")
    assert debug.returncode == 0
    assert any(n in debug.stdout + debug.stderr for n in NATIVE_NOISE)   # still there at DEBUG


# -- item 9: run() with paths ----------------------------------------------------------------------
def test_run_takes_paths_and_refuses_other_types_by_name(model, tmp_path):
    from vton_core.errors import InvalidInput
    from worker import sample_images

    person, cloth = sample_images.request_images()
    person.save(tmp_path / "person.jpg")
    cloth.save(tmp_path / "cloth.png")
    prepared = model.prepare_person(tmp_path / "person.jpg")
    results = model.run(prepared, [str(tmp_path / "cloth.png"), tmp_path / "cloth.png"],
                        output_size="model")
    assert len(results) == 2 and results[0].image.size == (192, 256)
    with pytest.raises(InvalidInput) as info:
        model.run(prepared, [str(tmp_path / "cloth.png"), 3])
    assert info.value.field == "cloths[1]"


# -- item 10: handler --help, the smoke montage, bench --quick -------------------------------------
def test_handler_help_prints_help_and_starts_nothing(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "handler.py"), "--help"], cwd=tmp_path,
                         env=clean_env(CHECKPOINT_DIR=str(tmp_path)), capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.startswith("usage:")
    assert "--rp_serve_api" in res.stdout and "outputs/handler" in res.stdout
    assert "model loaded" not in res.stderr and "checkpoint" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_montage_says_random_weights_on_the_picture():
    import runpod_test

    panel = [("a", Image.new("RGB", (192, 256), (255, 255, 255)))]
    marked = runpod_test.montage(panel, banner=runpod_test.RANDOM_BANNER)
    plain = runpod_test.montage(panel)
    assert marked.getpixel((2, 2)) == (200, 0, 0) and plain.getpixel((2, 2)) == (255, 255, 255)
    assert marked.height == plain.height + runpod_test.BANNER_HEIGHT


def test_bench_quick_judges_only_what_it_measured(capsys):
    from benchmarks import bench

    results = {"machine": {}, "rss_after_requests_mb": 5000.0, "e2e_new_person_p50_ms": 1000.0}
    bench.print_table(results, quick=True)
    lines = capsys.readouterr().out.splitlines()
    rss = next(ln for ln in lines if ln.startswith("worker RSS after the requests"))
    assert "NO" not in rss and "--quick" in rss
    e2e = next(ln for ln in lines if ln.startswith("handler e2e, new person"))
    assert e2e.rstrip().endswith("NO")                      # measured in quick mode too


def test_bench_networks_and_backend_rows_compute_the_same_tryon(model):
    """The bf16 PSNR of the networks section and of the backend rows are one computation: the
    same inputs through the same networks give the model's try-on."""
    import torch

    from benchmarks import bench

    inputs = bench.pipeline_inputs(1)
    with torch.inference_mode():
        direct = bench.nets_forward(model.gmm, model.tom, *inputs)
    via_model = model.forward_tensors(*inputs)["tryon"]
    assert bench.tryon_psnr(direct, via_model) > 80.0
