"""Issue 14, item 9: every command-line tool has a working ``--help`` that changes nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Every Python command-line program: a script with argparse and a ``__main__`` block, at the
#: top level or in tools/, benchmarks/, training/ (handler.py's flags belong to the runpod SDK).
PY_TOOLS = sorted(p for d in (ROOT, ROOT / "tools", ROOT / "benchmarks", ROOT / "training")
                  for p in d.glob("*.py")
                  if p.name != "handler.py" and "argparse" in (text := p.read_text())
                  and '__name__ == "__main__"' in text)
SH_TOOLS = [ROOT / "download_checkpoints.sh", ROOT / "build_and_push.sh"]
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".hypothesis", ".venv"}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under ``root`` outside caches."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("script", PY_TOOLS + SH_TOOLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_help_works_and_changes_nothing(script, tmp_path):
    before = snapshot(ROOT)
    cmd = ["bash", str(script)] if script.suffix == ".sh" else [sys.executable, str(script)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}          # as run.sh's editable install does
    res = subprocess.run([*cmd, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage" in res.stdout.lower(), res.stdout[:500]
    assert snapshot(ROOT) == before, "--help changed files in the repository"
    assert list(tmp_path.iterdir()) == [], "--help wrote files in the working directory"
