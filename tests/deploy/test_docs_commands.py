"""Issue 14: the commands of README.md, README_RUNPOD.md and docs/API.md run as written.

The curl examples are extracted from the documents and run with bash against the SDK's dev
server (random-weight checkpoints) on real photos, whose base64 is longer than a command-line
argument may be (item 1); the asynchronous one polls the dev server's POST /status (item 2).
Then: the container-like run (item 3), a fresh checkout's dev server without checkpoints says
how to get going (item 5), the client's command line (item 7), and every other documented
command line names a script and options that exist.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.dev_server import dev_server

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "README_RUNPOD.md", ROOT / "docs" / "API.md"]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
#: The longest single argument Linux accepts (MAX_ARG_STRLEN): the photos below exceed it.
MAX_ARG_STRLEN = 32 * 4096
DOC_PORT = "127.0.0.1:8000"             # the port the documents use for the dev server

pytestmark = pytest.mark.slow            # a real dev server and CLI subprocesses


def bash_blocks(path: Path) -> list[str]:
    return re.findall(r"```(?:bash|sh)\n(.*?)```", path.read_text(), flags=re.S)


CURL_BLOCKS = [pytest.param(block, id=f"{doc.name}#{i}") for doc in DOCS
               for i, block in enumerate(bash_blocks(doc)) if "curl " in block]
needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("bash", "curl", "jq", "base64")),
                                 reason="bash, curl, jq and base64 are needed")
needs_photos = pytest.mark.skipif(not PHOTOS.is_dir(), reason="../shared photos not present")


def command_lines() -> list[str]:
    """Every command line of the documents' bash blocks (comments and heredoc bodies dropped)."""
    lines = []
    for doc in DOCS:
        for block in bash_blocks(doc):
            if "curl " in block:
                continue
            heredoc = None
            for line in block.replace("\\\n", " ").splitlines():     # join continuations
                if heredoc:
                    heredoc = None if line.strip() == heredoc else heredoc
                    continue
                m = re.search(r"<<-?'?(\w+)'?", line)
                heredoc = m.group(1) if m else None
                line = line.split(" #")[0].strip()
                if line and not line.startswith("#"):
                    lines.append(line)
    return lines


@pytest.fixture(scope="module")
def server(random_ckpt_dir, tmp_path_factory):
    with dev_server(random_ckpt_dir, tmp_path_factory.mktemp("devlog") / "server.log") as (base, _):
        yield base


@pytest.fixture()
def workdir(tmp_path):
    """A folder with the documents' person.jpg and shirt.png: real photos."""
    shutil.copy(PHOTOS / "person" / "01008_00.jpg", tmp_path / "person.jpg")
    Image.open(PHOTOS / "cloth" / "00126_00.jpg").save(tmp_path / "shirt.png")
    for name in ("person.jpg", "shirt.png"):
        assert (tmp_path / name).stat().st_size * 4 / 3 > MAX_ARG_STRLEN    # too long for argv
    return tmp_path


def run_block(block: str, cwd: Path, base: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8", "EP": base,
           "ENDPOINT_ID": "test-endpoint", "RUNPOD_API_KEY": "test-key"}
    return subprocess.run(["bash", "-c", block], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_documents_have_curl_examples():
    assert len(CURL_BLOCKS) >= 1
    assert all("-d @" in p.values[0] for p in CURL_BLOCKS)


@needs_tools
@needs_photos
@pytest.mark.parametrize("block", CURL_BLOCKS)
def test_curl_examples_run_as_written(block, server, workdir):
    res = run_block(block, workdir, server)
    assert res.returncode == 0, res.stderr[-3000:]
    written = [workdir / name for name in re.findall(r"> (tryon\.(?:jpg|png|webp))", block)]
    assert written
    for path in written:
        with Image.open(path) as im:
            assert im.size == (768, 1024)           # the person photo's size: pasted back


@needs_tools
@needs_photos
@pytest.mark.parametrize("block", CURL_BLOCKS)
def test_curl_examples_fail_loudly(block, server, workdir):
    (workdir / "shirt.png").write_bytes(b"not an image at all" * 10_000)
    res = run_block(block, workdir, server)
    assert res.returncode != 0
    assert "INVALID_IMAGE" in res.stderr, res.stderr[-2000:]
    assert not (workdir / "tryon.jpg").exists() and not (workdir / "tryon.png").exists()


def test_container_like_run_from_readme_runpod():
    text = (ROOT / "README_RUNPOD.md").read_text()
    command = re.search(r"`(?:\./run\.sh )?(python tools/run_like_container\.py[^`]*)`", text).group(1)
    argv = shlex.split(command)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    res = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "completed successfully" in res.stdout + res.stderr


def test_dev_server_without_checkpoints_says_how_to_get_going(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(CHECKPOINT_DIR=str(tmp_path / "empty"), ALLOW_RANDOM_WEIGHTS="0")
    res = subprocess.run([sys.executable, "handler.py", "--rp_serve_api", "--rp_api_host",
                          "127.0.0.1", "--rp_api_port", "1"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "checkpoint not found" in out
    assert "./download_checkpoints.sh" in out and "ALLOW_RANDOM_WEIGHTS=1" in out


def test_documented_command_lines_name_real_scripts_and_options():
    helps: dict[str, str] = {}
    seen = 0
    for line in command_lines():
        words = shlex.split(line)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):     # VAR=value prefixes
            words = words[1:]
        if words[:2] == ["./run.sh", "python"] or words[:1] == ["python"]:
            words = words[2:] if words[0] == "./run.sh" else words[1:]
            if not words or words[0] in ("-", "-m") or words[0] == "handler.py":
                continue                    # stdin, modules, and the SDK's own flags
        elif not words or not words[0].startswith("./"):
            continue
        script = words[0].removeprefix("./")
        assert (ROOT / script).is_file(), f"{line}: {script} does not exist"
        if script == "run.sh":
            continue
        if script not in helps:
            cmd = ["bash", script] if script.endswith(".sh") else [sys.executable, script]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}   # run.sh's editable install
            helps[script] = subprocess.run([*cmd, "--help"], cwd=ROOT, env=env, capture_output=True,
                                           text=True, timeout=120, check=True).stdout
        for option in (w.split("=")[0] for w in words[1:] if w.startswith("--")):
            assert option in helps[script], f"{line}: {script} has no option {option}"
        seen += 1
    assert seen >= 5


def test_build_commands_of_readme_runpod_parse(tmp_path):
    lines = [line for line in command_lines() if line.startswith("./build_and_push.sh")]
    assert lines
    for line in lines:
        words = shlex.split(line)
        if "--help" in words:
            continue
        (tmp_path / "checkpoints").mkdir(exist_ok=True)
        words = [str(tmp_path / "checkpoints") if w == "./checkpoints" else w for w in words]
        res = subprocess.run(["bash", str(ROOT / "build_and_push.sh"), *words[1:], "--dry-run"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, f"{line}: {res.stderr}"


# -- the client's command line against the dev server (item 7) ---------------------------------
def run_client(args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    return subprocess.run([sys.executable, str(ROOT / "client_example.py"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_client_help_explains_the_commands(tmp_path):
    res = run_client(["--help"], tmp_path, timeout=60)
    assert res.returncode == 0
    for word in ("try-on", "health", "examples", "--base-url", "--endpoint-id"):
        assert word in res.stdout


def test_client_without_a_target_says_what_to_give(tmp_path):
    res = run_client(["examples"], tmp_path, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--endpoint-id" in res.stderr and "--base-url" in res.stderr


def test_client_format_jpeg_writes_tryon_jpg_and_health_is_explained(server, tmp_path):
    res = run_client(["--base-url", server, "--format", "jpeg"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tryon.jpg"]
    with Image.open(tmp_path / "tryon.jpg") as im:
        assert im.format == "JPEG"
    health = run_client(["--base-url", server, "health"], tmp_path, timeout=60)
    assert health.returncode == 1
    assert "has no /health" in health.stderr and "dev server" in health.stderr


def test_smoke_run_against_the_dev_server_as_documented(server, tmp_path):
    line = next(line for line in command_lines()
                if "runpod_test.py --api" in line and DOC_PORT in line)
    words = shlex.split(line.replace(f"http://{DOC_PORT}", server))
    words = words[words.index("runpod_test.py"):]
    res = subprocess.run([sys.executable, str(ROOT / words[0]), *words[1:], "--out-dir",
                          str(tmp_path), "--repeats", "1"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "result.png").is_file()
    with Image.open(tmp_path / "montage.png") as im:        # random weights: said on the picture
        assert im.convert("RGB").getpixel((2, 2)) == (200, 0, 0)
