"""The Dockerfile, .dockerignore, RunPod Hub files and .env.example, checked without Docker.

Lints (hadolint, shellcheck) run when their binaries are installed (requirements-dev.txt brings
both); the container's entrypoint is run through tools/run_like_container.py.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import run_like_container as rlc

ROOT = Path(__file__).resolve().parents[2]

DOCKERFILE = ROOT / "Dockerfile"
SCRIPTS = [ROOT / "build_and_push.sh", ROOT / "download_checkpoints.sh", ROOT / "run.sh",
           ROOT / ".ci" / "run"]

# Variables in .env.example that no project code reads because the runpod SDK reads them itself.
SDK_ENV_VARS: set[str] = set()   # none today: worker/settings.py reads the bucket's keys too
# Prefixes of variables the platform sets and the SDK reads (never documented in .env.example).
PLATFORM_PREFIXES = ("RUNPOD_",)


def _tool(name: str) -> str:
    """Path of a lint binary: next to this interpreter (the venv) or on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -r requirements-dev.txt)")
    return found


# --- lints -------------------------------------------------------------------------------------

def test_hadolint_dockerfile():
    res = subprocess.run([_tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    if not script.exists():
        pytest.skip(f"{script.name} is not in this checkout")
    res = subprocess.run([_tool("shellcheck"), "--external-sources", str(script)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_scripts_are_executable_and_strict():
    for script in (ROOT / "build_and_push.sh", ROOT / "download_checkpoints.sh"):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        assert "set -euo pipefail" in script.read_text()


# --- Dockerfile --------------------------------------------------------------------------------

def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Approximate Docker's .dockerignore matching (enough for the patterns used here)."""
    ignored = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat[1:] if negate else pat
        pat = pat.strip("/")
        bare = pat[3:] if pat.startswith("**/") else None
        hit = any(fnmatch.fnmatchcase(p, pat) for p in prefixes) or (
            bare is not None and any(fnmatch.fnmatchcase(part, bare) for part in parts))
        if hit:
            ignored = not negate
    return ignored


def test_every_copy_source_exists_and_is_not_dockerignored():
    patterns = _dockerignore_patterns()
    sources = rlc.context_copy_sources(DOCKERFILE.read_text())
    assert sources, "the Dockerfile copies nothing from the build context"
    missing, ignored = [], []
    for src in sources:
        matches = rlc.resolve_sources(src, ROOT)
        if not matches:
            missing.append(src)
        for m in matches:
            rel = str(m.relative_to(ROOT))
            if _ignored(rel, patterns):
                ignored.append(rel)
    assert not missing, f"COPY sources missing from the repository: {missing}"
    assert not ignored, f"COPY sources excluded by .dockerignore: {ignored}"


def _shipped_files() -> set[str]:
    """Every file the Dockerfile copies from the build context (folders expanded), repo-relative."""
    shipped = set()
    for src in rlc.context_copy_sources(DOCKERFILE.read_text()):
        for m in rlc.resolve_sources(src, ROOT):
            found = [f for f in m.rglob("*") if f.is_file()] if m.is_dir() else [m]
            shipped.update(str(f.relative_to(ROOT)) for f in found
                           if not _ignored(str(f.relative_to(ROOT)), _dockerignore_patterns()))
    return shipped


def test_the_handler_and_its_modules_are_copied():
    shipped = _shipped_files()
    for name in ("handler.py", "worker/settings.py", "vton_core/errors.py", "vton_core/images.py",
                 "vton_preprocess/__init__.py", "cpvton_infer.py", "networks.py", "grid.png",
                 "vton_preprocess/assets/person_parser.pt", "vton_preprocess/assets/person_parser.json"):
        if (ROOT / name).exists():
            assert name in shipped, f"{name} is not copied into the image"
    # Every top-level import of the shipped modules that is a local module must ship too.
    local = {p.stem for p in ROOT.glob("*.py")} | {p.name for p in ROOT.iterdir()
                                                    if (p / "__init__.py").exists()}
    shipped_names = {Path(s).parts[0].removesuffix(".py") for s in shipped}
    for rel in shipped:
        if not rel.endswith(".py"):
            continue
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            for name in names:
                if name in local:
                    assert name in shipped_names, f"{rel} imports {name}, which is not copied"


def test_the_image_holds_no_training_code_tests_or_tools():
    """The Dockerfile copies named serving paths only: nothing of training/, tests/, tools/,
    benchmarks/ or docs/, no test files, and no shipped module imports the training package."""
    shipped = _shipped_files()
    assert "handler.py" in shipped
    never = ("training", "tests", "tools", "benchmarks", "docs", "checkpoints")
    # test_input.json is not a test: it is the request the SDK's local test mode runs (issue 14).
    leaked = sorted(f for f in shipped if Path(f).parts[0] in never
                    or (Path(f).name.startswith("test") and f != "test_input.json"))
    assert not leaked, f"the image would contain {leaked}"
    for rel in (f for f in shipped if f.endswith(".py")):
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            assert "training" not in tops, f"{rel} imports the training package"


def test_dockerfile_runtime_contract():
    stage = rlc.parse_final_stage(DOCKERFILE.read_text())
    assert stage.cmd == ["python", "-u", "handler.py"]
    assert stage.env.get("PYTHONUNBUFFERED") == "1"
    assert stage.workdir == "/app"
    assert stage.env.get("CHECKPOINT_DIR") == "/app/checkpoints"
    assert stage.user and stage.user.split(":")[0] not in ("0", "root"), "must not run as root"


def test_dockerfile_build_contract():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)
    assert len(froms) >= 3, "expected a multi-stage build"
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, flags=re.M).group(1)
    assert base.startswith("nvidia/cuda:12.") and "ubuntu24.04" in base
    assert "python3.12" in text  # mediapipe 0.10.21 has wheels for CPython <= 3.12
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu12\d\b", text, re.M)
    # the deliberate two-step install (see requirements_mediapipe.txt and run.sh)
    main_install = text.index("-r /tmp/requirements/requirements_runpod.txt")
    no_deps = text.index("--no-deps -r /tmp/requirements/requirements_mediapipe.txt")
    assert main_install < no_deps
    assert re.search(r"^ARG BAKE_CHECKPOINTS=1$", text, re.M)
    assert "download_checkpoints.sh" in text
    for lib in ("libgl1", "libglib2.0-0", "libegl1", "libgles2"):
        assert lib in text, lib
    # build tools stay out of the shipped stage
    final = text[text.rindex("\nFROM "):]
    for word in ("pip install", "build-essential", "gcc", "curl", "python3.12-venv"):
        assert word not in final, f"{word!r} in the runtime stage"


def test_dockerignore_keeps_development_files_out():
    patterns = _dockerignore_patterns()
    for rel in (".git/HEAD", ".venv/bin/python", "tests/test_x.py", "checkpoints/GMM/gmm_final.pth",
                "x/__pycache__/m.cpython-311.pyc", ".pytest_cache/v", "model.pth", ".env"):
        assert _ignored(rel, patterns), f"{rel} would be sent to the builder"
    assert not _ignored("handler.py", patterns)


# --- RunPod Hub --------------------------------------------------------------------------------

def test_hub_json():
    hub = json.loads((ROOT / ".runpod/hub.json").read_text())
    for key in ("title", "description", "type", "category", "config"):
        assert hub.get(key), key
    assert hub["type"] == "serverless" and hub["category"] == "image"
    cfg = hub["config"]
    assert cfg["runsOn"] == "GPU" and isinstance(cfg["gpuCount"], int) and cfg["gpuIds"]
    assert isinstance(cfg["containerDiskInGb"], int)
    readable = _settings_env_vars() or set()
    for entry in cfg.get("env", []):
        assert "key" in entry and ("value" in entry or "input" in entry)
        if readable:
            assert entry["key"] in readable, f"hub.json sets {entry['key']}, which nothing reads"


def test_tests_json():
    doc = json.loads((ROOT / ".runpod/tests.json").read_text())
    assert doc["tests"], "no test case"
    for case in doc["tests"]:
        assert case["name"] and isinstance(case["input"], dict)
        assert isinstance(case.get("timeout", 0), int)
    assert doc["config"]["gpuCount"] >= 1 and doc["config"]["gpuTypeId"]
    try:
        from worker import schema
    except ImportError:
        pytest.skip("worker/schema.py is not in this checkout: input not checked against the schema")
    for case in doc["tests"]:
        schema.parse_request(case["input"], max_items=8)


# --- .env.example ------------------------------------------------------------------------------

# How the code reads a variable. (os.environ.setdefault is a write: the preprocessing sets
# TF_CPP_MIN_LOG_LEVEL for mediapipe that way, and it is not a setting of the worker.)
_READ_PATTERNS = (
    r"os\.environ\.get\(\s*['\"]([A-Z][A-Z0-9_]*)['\"]",
    r"os\.environ\[\s*['\"]([A-Z][A-Z0-9_]*)['\"]\s*\]",
    r"os\.getenv\(\s*['\"]([A-Z][A-Z0-9_]*)['\"]",
)


def _local_imports(path: Path) -> set[Path]:
    """Project files (modules and package folders' files) that ``path`` imports at top level."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(errors="replace"))):
        mods = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                mods = [str((base / node.module.replace(".", "/")).relative_to(ROOT))]
            else:
                mods = [node.module]
        for mod in mods:
            rel = mod.replace(".", "/")
            top = ROOT / rel.split("/")[0]
            if (ROOT / f"{rel}.py").exists():
                found.add(ROOT / f"{rel}.py")
            elif top.is_dir() and (top / "__init__.py").exists():
                found.update(top.rglob("*.py"))
    return found


def _project_py_files() -> list[Path]:
    """The worker's Python files: everything handler.py (and worker/settings.py) imports, transitively.

    Client-side examples and tools read their own variables (an API key, an endpoint id); those are
    not the worker's and do not belong in .env.example. Without handler.py, every top-level module
    and package is scanned.
    """
    roots = [ROOT / n for n in ("handler.py", "worker/settings.py") if (ROOT / n).exists()]
    if not (ROOT / "handler.py").exists():
        skip = {"tests", ".venv", "venv", ".git", "benchmarks", "tools"}
        return [p for p in ROOT.rglob("*.py") if not set(p.relative_to(ROOT).parts[:-1]) & skip]
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_local_imports(path) - seen)
    return sorted(seen)


def _settings_env_vars() -> set[str] | None:
    """settings.ENV_VARS (read with ast, without importing), or None without settings.py."""
    path = ROOT / "worker" / "settings.py"
    if not path.exists():
        return None
    tree = ast.parse(path.read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == "ENV_VARS" for t in targets):
            return set(ast.literal_eval(node.value))
    return set()


def _code_env_vars() -> set[str]:
    found: set[str] = set()
    for path in _project_py_files():
        text = path.read_text(errors="replace")
        for pat in _READ_PATTERNS:
            found.update(re.findall(pat, text))
    found.update(_settings_env_vars() or ())
    return {v for v in found if not v.startswith(PLATFORM_PREFIXES)}


def _example_env_vars() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def test_env_example_is_well_formed():
    lines = (ROOT / ".env.example").read_text().splitlines()
    names = [ln.split("=", 1)[0] for ln in lines if ln and not ln.startswith("#")]
    assert len(names) == len(set(names)), "duplicate variable"
    for ln in lines:
        assert not ln or ln.startswith("#") or re.match(r"^[A-Z][A-Z0-9_]*=\S*$", ln), ln


def test_env_example_matches_what_the_code_reads():
    if _settings_env_vars() is None:
        pytest.skip("settings.py is not in this checkout yet")
    documented = _example_env_vars()
    read = _code_env_vars()
    assert not (read - documented), f"read by the code but not in .env.example: {read - documented}"
    unread = documented - read - SDK_ENV_VARS
    assert not unread, f"in .env.example but read by nothing: {unread}"


def test_settings_env_table_names_are_really_read():
    """Each name in settings.ENV_VARS appears as a string literal in a call in settings.py."""
    names = _settings_env_vars()
    if not names:
        pytest.skip("settings.py (with ENV_VARS) is not in this checkout yet")
    tree = ast.parse((ROOT / "worker" / "settings.py").read_text())
    called_with = {a.value for n in ast.walk(tree) if isinstance(n, ast.Call)
                   for a in n.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    assert names <= called_with, f"listed in ENV_VARS but never read: {names - called_with}"


def test_env_example_defaults_match_settings():
    """Where .env.example shows a value, it is what settings.py uses when the variable is unset."""
    try:
        from worker import settings
    except ImportError:
        pytest.skip("settings.py is not in this checkout yet")
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m and m.group(2):
            values[m.group(1)] = m.group(2)
    names = set(getattr(settings, "ENV_VARS", ()))
    shown = {k: v for k, v in values.items() if k in names}
    assert settings.Settings.from_env(shown) == settings.Settings.from_env({})


# --- the container's entrypoint, without Docker --------------------------------------------------

def _run_tool(*args: str, timeout: float = 60, env_extra: dict | None = None):
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(ROOT / "tools/run_like_container.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)


def test_run_like_container_check():
    res = _run_tool("--check", "-e", "LOG_LEVEL=DEBUG", "--", "--test_input", "{}")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["cmd"] == ["python", "-u", "handler.py", "--test_input", "{}"]
    assert out["workdir"] == "/app"
    env = out["env"]
    assert env["PYTHONUNBUFFERED"] == "1" and env["LOG_LEVEL"] == "DEBUG"
    assert env["CHECKPOINT_DIR"].startswith(out["local_workdir"])
    assert Path(out["executable"]).parent == Path(sys.executable).parent
    assert "handler.py" in out["copied"] or not (ROOT / "handler.py").exists()


def test_run_like_container_reports_a_missing_copy_source(tmp_path):
    (tmp_path / "Dockerfile").write_text('FROM scratch\nWORKDIR /app\nCOPY nothing.py ./\n'
                                         'CMD ["python", "-c", "pass"]\n')
    res = _run_tool("--dockerfile", str(tmp_path / "Dockerfile"), "--context", str(tmp_path))
    assert res.returncode == 2 and "nothing.py" in res.stderr


def test_run_like_container_runs_cmd_with_image_env(tmp_path):
    (tmp_path / "app.py").write_text(
        "import os, sys\n"
        "print(os.getcwd().endswith('workdir'), os.environ['GREETING'], os.environ.get('LEAK'),"
        " os.path.isfile('app.py'), sys.argv[1:])\n")
    (tmp_path / "Dockerfile").write_text(
        'ARG WHO=world\nFROM scratch\nARG WHO\nENV GREETING="hello ${WHO}" PYTHONUNBUFFERED=1\n'
        'WORKDIR /srv\nCOPY *.py ./\nCMD ["python", "app.py"]\n')
    res = _run_tool("--dockerfile", str(tmp_path / "Dockerfile"), "--context", str(tmp_path),
                    "--", "x", env_extra={"LEAK": "from-host"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True hello world None True ['x']"


@pytest.mark.slow
def test_container_entrypoint_runs_one_job(tmp_path):
    """The image's exact CMD and ENV run the Hub's test request through the runpod SDK's local
    test mode (CPU, random-weight checkpoints in the official format)."""
    if not (ROOT / "handler.py").exists():
        pytest.skip("handler.py is not in this checkout yet")
    try:
        from vton_core.weights import write_random_checkpoints
    except ImportError:
        pytest.skip("weights.py (random checkpoints) is not in this checkout yet")
    ckpt = tmp_path / "checkpoints"
    write_random_checkpoints(ckpt)
    job = json.loads((ROOT / ".runpod/tests.json").read_text())["tests"][0]
    res = _run_tool("--checkpoints", str(ckpt), "-e", "DEVICE=cpu", "-e", "WARMUP=0",
                    "--timeout", "240", "--", "--test_input", json.dumps({"input": job["input"]}),
                    timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "completed successfully" in out
