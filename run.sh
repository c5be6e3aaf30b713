#!/usr/bin/env bash
# Run a command inside the project's virtual environment, creating or updating it first.
#   ./run.sh                            # only install (or update) the environment
#   ./run.sh python runpod_test.py      # local smoke run
#   ./run.sh python -m pytest -q        # the test suite
# The command runs in the current folder, so relative paths mean what they mean there
# (/path/to/run.sh python runpod_test.py --person person.jpg from the photo's folder); a script
# named by a relative path that is not in the current folder is the checkout's, and
# `python -m pytest` from outside the checkout runs the checkout's tests there.
# The environment lives in .venv (override with VENV=...). It is rebuilt when a requirements
# file changes; the project itself is installed in editable mode (pyproject.toml). PYTHON picks
# the interpreter used to create it (CPython 3.10-3.12).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${VENV:-$here/.venv}
python=${PYTHON:-python3}
reqs=("$here/requirements_runpod.txt" "$here/requirements_mediapipe.txt" "$here/requirements-dev.txt"
      "$here/requirements_demo.txt")
stamp="$venv/.requirements.sha256"
want=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)

if [[ ! -x $venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "run.sh: installing the environment into $venv (first run takes a few minutes)" >&2
  [[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  # The demo page's requirements join the worker's in one resolution; gradio itself then goes in
  # without its resolver, like mediapipe (why: requirements_demo.txt). Not in the image.
  grep -v '^gradio==' "$here/requirements_demo.txt" >"$venv/.requirements_demo_deps.txt"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$here/requirements_runpod.txt" -r "$here/requirements-dev.txt" \
    -r "$venv/.requirements_demo_deps.txt" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    -r "$here/requirements_mediapipe.txt" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    "$(grep '^gradio==' "$here/requirements_demo.txt")" >&2
  echo "$want" >"$stamp"
fi
# The browser of the demo's test (tests/demo/): Debian's chromium and chromium-driver, installed
# once when missing and this runs as root with apt-get; otherwise that test skips, saying why.
browser_stamp="$venv/.browser"
if [[ ! -f $browser_stamp ]]; then
  if ! command -v chromedriver >/dev/null && ((EUID == 0)) && command -v apt-get >/dev/null; then
    echo "run.sh: installing chromium and chromium-driver for the demo's browser test" >&2
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends chromium chromium-driver; } >&2 \
      || echo "run.sh: chromium could not be installed; tests/demo will skip" >&2
  fi
  touch "$browser_stamp"
fi
# This checkout, installed in editable mode (no dependencies: they are the requirements above), so
# that scripts in tools/ and benchmarks/ import the project without sys.path edits.
project_stamp="$venv/.project"
want_project="$here $(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -f $project_stamp || $(cat "$project_stamp") != "$want_project" ]]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$here" >&2
  echo "$want_project" >"$project_stamp"
fi
export PATH="$venv/bin:$PATH"
(($#)) || { echo "run.sh: environment ready in $venv ($(du -sh "$venv" | cut -f1))" >&2; exit 0; }
args=("$@")
if [[ ${args[0]} == python* && $# -ge 2 ]]; then
  script=${args[1]}
  if [[ $script != -* && $script != /* && ! -e $script && -f $here/$script ]]; then
    args[1]="$here/$script"                   # the checkout's script, from any folder
  elif [[ $script == -m && ${args[2]:-} == pytest && $PWD != "$here" && $PWD != "$here"/* ]]; then
    cd "$here"                                # the checkout's tests and configuration
  fi
fi
exec "${args[@]}"
