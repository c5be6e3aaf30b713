"""download_checkpoints.sh against a loopback HTTP server, and build_and_push.sh --dry-run.

The server binds 127.0.0.1 only, is started and stopped by the fixture, and serves files the
test generates (never real weights). It honours Range requests (for resume) and can be told to
cut a body short (an interrupted transfer).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOWNLOAD = ROOT / "download_checkpoints.sh"
BUILD = ROOT / "build_and_push.sh"
TIMEOUT = 60  # seconds for any one script run

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None,
                                reason="curl and bash are needed to run the deployment scripts")


def fake_checkpoint(seed: int, size: int = 200_000) -> bytes:
    """Bytes that start like a torch zip checkpoint, deterministic in ``seed``."""
    body = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return b"PK\x03\x04" + body[: size - 4]


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    truncate: dict[str, int] = {}   # path -> bytes to send before closing the connection
    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        path = self.path.split("?", 1)[0]
        self.requests.append((path, self.headers.get("Range")))
        data = self.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = self.truncate.pop(path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    """A loopback HTTP server; yields (base_url, handler_class) and shuts it down afterwards."""
    handler = type("Handler", (_Handler,), {"files": {}, "truncate": {}, "requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def run_script(script: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run a script with a clean environment (plus ``env``); returns the CompletedProcess."""
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    base.update(env or {})
    return subprocess.run(["bash", str(script), *args], env=base, cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def served(server, tmp_path):
    """Two generated checkpoints on the server; returns (env, gmm_bytes, tom_bytes, handler)."""
    base, handler = server
    gmm, tom = fake_checkpoint(1), fake_checkpoint(2)
    handler.files.update({"/gmm_final.pth": gmm, "/tom_final.pth": tom})
    env = {"CHECKPOINT_DIR": str(tmp_path / "ckpt"),
           "GMM_URL": f"{base}/gmm_final.pth", "TOM_URL": f"{base}/tom_final.pth",
           "CURL_RETRIES": "0"}
    return env, gmm, tom, handler


def leftovers(ckpt: Path) -> list[str]:
    return sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*") if p.is_file())


def test_help_and_unknown_argument():
    assert "GMM_URL" in run_script(DOWNLOAD, "--help").stdout
    bad = run_script(DOWNLOAD, "--bogus")
    assert bad.returncode != 0 and "unknown argument" in bad.stderr


def test_no_source_fails_clearly(tmp_path):
    res = run_script(DOWNLOAD, env={"CHECKPOINT_DIR": str(tmp_path)})
    assert res.returncode != 0
    assert "GMM_URL" in res.stderr and "1drv.ms" in res.stderr
    assert leftovers(tmp_path) == []


def test_no_source_if_configured_is_a_warning(tmp_path):
    res = run_script(DOWNLOAD, "--if-configured", env={"CHECKPOINT_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert "warning" in res.stderr


def test_download_verifies_and_is_idempotent(served, tmp_path):
    env, gmm, tom, handler = served
    env.update(GMM_SHA256=sha(gmm), TOM_SHA256=sha(tom).upper())
    res = run_script(DOWNLOAD, env=env)
    assert res.returncode == 0, res.stderr
    ckpt = Path(env["CHECKPOINT_DIR"])
    assert (ckpt / "GMM/gmm_final.pth").read_bytes() == gmm
    assert (ckpt / "TOM/tom_final.pth").read_bytes() == tom
    assert leftovers(ckpt) == ["GMM/gmm_final.pth", "TOM/tom_final.pth"]

    handler.requests.clear()
    again = run_script(DOWNLOAD, env=env)
    assert again.returncode == 0, again.stderr
    assert handler.requests == []  # verified files are not fetched again
    assert "verified, skipping" in again.stderr

    forced = run_script(DOWNLOAD, "--force", env=env)
    assert forced.returncode == 0 and len(handler.requests) == 2


def test_wrong_hash_fails_and_leaves_nothing(served):
    env, gmm, _, _ = served
    env["GMM_SHA256"] = "0" * 64
    res = run_script(DOWNLOAD, env=env)
    assert res.returncode != 0
    assert "sha256 mismatch" in res.stderr
    ckpt = Path(env["CHECKPOINT_DIR"])
    assert not (ckpt / "GMM/gmm_final.pth").exists()
    assert not (ckpt / "GMM/gmm_final.pth.part").exists()


def test_malformed_hash_is_refused(served):
    env, *_ = served
    env["TOM_SHA256"] = "abc"
    res = run_script(DOWNLOAD, env=env)
    assert res.returncode != 0 and "TOM_SHA256" in res.stderr


def test_html_page_is_not_a_checkpoint(served):
    env, _, _, handler = served
    handler.files["/gmm_final.pth"] = b"<!DOCTYPE html><html>sign in</html>"
    res = run_script(DOWNLOAD, env=env)
    assert res.returncode != 0 and "not a PyTorch checkpoint" in res.stderr
    assert leftovers(Path(env["CHECKPOINT_DIR"])) == []


def test_missing_file_404(served):
    env, *_ = served
    env["TOM_URL"] = env["TOM_URL"].replace("tom_final", "nothing_here")
    res = run_script(DOWNLOAD, env=env)
    assert res.returncode != 0
    assert "download failed" in res.stderr
    ckpt = Path(env["CHECKPOINT_DIR"])
    assert not (ckpt / "TOM/tom_final.pth").exists()
    assert not (ckpt / "TOM/tom_final.pth.part").exists()


def test_interrupted_transfer_then_resume(served):
    env, gmm, tom, handler = served
    env.update(GMM_SHA256=sha(gmm), TOM_SHA256=sha(tom))
    handler.truncate["/gmm_final.pth"] = 70_000
    first = run_script(DOWNLOAD, env=env)
    assert first.returncode != 0
    assert "interrupted" in first.stderr
    ckpt = Path(env["CHECKPOINT_DIR"])
    part = ckpt / "GMM/gmm_final.pth.part"
    assert not (ckpt / "GMM/gmm_final.pth").exists()  # never under its final name
    assert part.read_bytes() == gmm[:70_000]

    handler.requests.clear()
    second = run_script(DOWNLOAD, env=env)
    assert second.returncode == 0, second.stderr
    assert ("/gmm_final.pth", "bytes=70000-") in handler.requests  # resumed, not restarted
    assert (ckpt / "GMM/gmm_final.pth").read_bytes() == gmm
    assert leftovers(ckpt) == ["GMM/gmm_final.pth", "TOM/tom_final.pth"]


def test_file_urls_and_from_dir(tmp_path):
    src = tmp_path / "src"
    (src / "GMM").mkdir(parents=True)
    (src / "TOM").mkdir()
    gmm, tom = fake_checkpoint(3), fake_checkpoint(4)
    (src / "GMM/gmm_final.pth").write_bytes(gmm)
    (src / "TOM/tom_final.pth").write_bytes(tom)

    env = {"CHECKPOINT_DIR": str(tmp_path / "a"), "GMM_URL": (src / "GMM/gmm_final.pth").as_uri(),
           "TOM_URL": (src / "TOM/tom_final.pth").as_uri(), "GMM_SHA256": sha(gmm)}
    res = run_script(DOWNLOAD, env=env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "a/GMM/gmm_final.pth").read_bytes() == gmm

    res = run_script(DOWNLOAD, "--from-dir", str(src), env={"CHECKPOINT_DIR": str(tmp_path / "b")})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "b/TOM/tom_final.pth").read_bytes() == tom

    missing = run_script(DOWNLOAD, env={**env, "CHECKPOINT_DIR": str(tmp_path / "c"),
                                        "GMM_URL": (tmp_path / "none.pth").as_uri()})
    assert missing.returncode != 0
    assert not (tmp_path / "c/GMM/gmm_final.pth").exists()


def test_url_file_and_secrets_not_echoed(served, tmp_path):
    env, *_ = served
    secret_file = tmp_path / "gmm_url"
    secret_file.write_text(env.pop("GMM_URL") + "?X-Signature=TOPSECRET\n")
    env["GMM_URL_FILE"] = str(secret_file)
    res = run_script(DOWNLOAD, env=env)
    assert res.returncode == 0, res.stderr
    assert "TOPSECRET" not in res.stderr + res.stdout


def test_print_hashes(served):
    env, gmm, tom, _ = served
    assert run_script(DOWNLOAD, env=env).returncode == 0
    res = run_script(DOWNLOAD, "--print-hashes", env={"CHECKPOINT_DIR": env["CHECKPOINT_DIR"]})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [f"GMM_SHA256={sha(gmm)}", f"TOM_SHA256={sha(tom)}"]


def test_present_file_with_wrong_hash_is_replaced(served):
    env, gmm, tom, _ = served
    ckpt = Path(env["CHECKPOINT_DIR"])
    (ckpt / "GMM").mkdir(parents=True)
    (ckpt / "GMM/gmm_final.pth").write_bytes(fake_checkpoint(99))
    env.update(GMM_SHA256=sha(gmm), TOM_SHA256=sha(tom))
    res = run_script(DOWNLOAD, env=env)
    assert res.returncode == 0, res.stderr
    assert (ckpt / "GMM/gmm_final.pth").read_bytes() == gmm


# --- build_and_push.sh -------------------------------------------------------------------------

def test_build_help():
    res = run_script(BUILD, "--help")
    assert res.returncode == 0 and "--dry-run" in res.stdout


def test_build_requires_an_image_name():
    res = run_script(BUILD, "--dry-run", "--bake", "0")
    assert res.returncode != 0 and "--image" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["-i", "Bad Name"], "invalid image name"),
    (["-i", "me/x", "-v", "bad tag!", "--bake", "0"], "invalid version"),
    (["-i", "me/x", "--bake", "2"], "--bake"),
    (["-i", "me/x", "--bake", "1"], "GMM_URL"),
])
def test_build_rejects_bad_input(args, message):
    res = run_script(BUILD, "--dry-run", *args)
    assert res.returncode != 0 and message in res.stderr


def test_build_dry_run_prints_the_commands_and_no_secret(tmp_path):
    env = {"GMM_URL": "https://bucket.example/gmm?sig=TOPSECRET1",
           "TOM_URL": "https://bucket.example/tom?sig=TOPSECRET2",
           "REGISTRY_USERNAME": "me", "REGISTRY_PASSWORD": "TOPSECRET3", "GMM_SHA256": "a" * 64}
    res = run_script(BUILD, "-i", "me/cpvton-worker", "-r", "ghcr.io", "-v", "1.2.3", "--dry-run",
                     env=env)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "TOPSECRET" not in out + res.stderr
    assert "docker login --username me --password-stdin ghcr.io" in out
    build = [line for line in out.splitlines() if "buildx build" in line]
    assert len(build) == 1
    for piece in ("--platform linux/amd64", "--tag ghcr.io/me/cpvton-worker:1.2.3",
                  "--tag ghcr.io/me/cpvton-worker:latest", "BAKE_CHECKPOINTS=1", "--push",
                  "id=gmm_url", "env=GMM_URL", f"GMM_SHA256={'a' * 64}"):
        assert piece in build[0], piece


def test_build_dry_run_volume_mode_and_local_checkpoints(tmp_path):
    res = run_script(BUILD, "-i", "me/w", "--bake", "0", "--no-latest", "--no-push", "-n",
                     env={"VERSION": "v1"})
    assert res.returncode == 0, res.stderr
    assert "BAKE_CHECKPOINTS=0" in res.stdout and "--load" in res.stdout
    assert ":latest" not in res.stdout and "me/w:v1" in res.stdout

    res = run_script(BUILD, "-i", "me/w", "--checkpoints-dir", str(tmp_path), "-n")
    assert res.returncode == 0, res.stderr
    assert "local_checkpoints=" in res.stdout


def test_build_without_docker_fails_fast(tmp_path):
    # A PATH with bash and coreutils but no docker: the real (non-dry) run must stop with a clear
    # message before doing anything.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "basename", "dirname", "git", "date"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    res = subprocess.run([str(bindir / "bash"), str(BUILD), "-i", "me/w", "--bake", "0"],
                         env={"PATH": str(bindir)}, capture_output=True, text=True,
                         timeout=TIMEOUT, check=False)
    assert res.returncode != 0
    assert "docker is not installed" in res.stderr
