"""Issue 14, item 12: the worker's install (requirements_runpod.txt, then
requirements_mediapipe.txt with --no-deps: what run.sh and the Dockerfile install) is enough for
the worker *and* the smoke run. The smoke run is run with every package outside that install
made unimportable, so a test tool (scikit-image, pytest, ...) it needed would fail it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GUARD = textwrap.dedent('''
    import importlib.abc, importlib.metadata as md, runpy, sys
    from pathlib import Path
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def read(path):
        lines = (line.split("#")[0].strip() for line in Path(path).read_text().splitlines())
        return [Requirement(line) for line in lines if line and not line.startswith("-")]

    def closure(reqs, recurse):
        """Distributions a requirement list installs (with their dependencies)."""
        seen, stack = {}, [(r.name, frozenset(r.extras)) for r in reqs]
        while stack:
            name, extras = stack.pop()
            key = canonicalize_name(name)
            if key in seen and extras <= seen[key]:
                continue
            seen[key] = seen.get(key, frozenset()) | extras
            if not recurse:
                continue
            try:
                requires = md.distribution(key).requires or []
            except md.PackageNotFoundError:
                continue
            for text in requires:
                r = Requirement(text)
                if r.marker is None or any(r.marker.evaluate({"extra": e})
                                           for e in (seen[key] or {""})):
                    stack.append((r.name, frozenset(r.extras)))
        return set(seen)

    root = Path(sys.argv[1])
    allowed = (closure(read(root / "requirements_runpod.txt"), True)
               | closure(read(root / "requirements_mediapipe.txt"), False))
    owners = md.packages_distributions()
    blocked = set()

    class OutsideTheInstall(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if (root / top).is_dir() or (root / f"{top}.py").is_file():
                return None                  # the project's own code (an editable install)
            dists = owners.get(top)
            if dists and not any(canonicalize_name(d) in allowed for d in dists):
                blocked.add(top)
                raise ModuleNotFoundError(f"No module named {top!r}", name=top)
            return None

    sys.meta_path.insert(0, OutsideTheInstall())
    sys.path.insert(0, str(root))
    sys.argv = ["runpod_test.py", *sys.argv[2:]]
    try:
        runpy.run_path(str(root / "runpod_test.py"), run_name="__main__")
    finally:
        print("BLOCKED", sorted(blocked), file=sys.stderr)
''')


@pytest.mark.slow
def test_smoke_run_needs_only_the_worker_install(tmp_path, random_ckpt_dir):
    script = tmp_path / "guarded_smoke_run.py"
    script.write_text(GUARD)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(CHECKPOINT_DIR=str(random_ckpt_dir), WARMUP="0")
    res = subprocess.run([sys.executable, str(script), str(ROOT), "--repeats", "1",
                          "--out-dir", str(out)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "timings.json").read_text())
    assert summary["random_weights"] is True and summary["size"] == [320, 320]
    assert "'skimage'" not in res.stderr.splitlines()[-1]


def test_requirement_files_say_how_they_are_installed():
    runpod = (ROOT / "requirements_runpod.txt").read_text()
    assert "requirements_mediapipe.txt" in runpod and "run.sh" in runpod
    readme = (ROOT / "README.md").read_text()
    assert "./run.sh" in readme and "GB" in readme      # the one install, and its size
