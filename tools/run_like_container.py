"""Run the worker the way its Docker image would, without Docker.

Reads the Dockerfile's final stage, or the one ``--target`` names (its ``ENV``, ``WORKDIR``, ``USER``, ``CMD`` and the ``COPY``
instructions that take files from the build context), copies those files into a temporary folder
that stands for ``WORKDIR``, and runs ``CMD`` there with the image's environment: the image's
``ENV`` values on top of a minimal base (no variables leak in from the calling shell except those
passed with ``-e``). Paths inside ``WORKDIR`` are mapped into the temporary folder, ``HOME`` to a
temporary home, and ``python`` resolves to the interpreter running this tool (the image's
``/opt/venv`` does not exist here).

    python tools/run_like_container.py --check                 # print the resolved command and env
    python tools/run_like_container.py -e ALLOW_RANDOM_WEIGHTS=1 -- --test_input '{"input": {}}'
    CPU_VENV/bin/python tools/run_like_container.py --target cpu --checkpoints EXPORT_DIR -- ...

Arguments after ``--`` are appended to ``CMD`` (the runpod SDK's ``--test_input`` runs one job
locally and exits). Exit status: that of the command; 2 for a Dockerfile this tool cannot read.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("run_like_container")

REPO = Path(__file__).resolve().parent.parent
# What every container gets from the runtime, before the image's ENV.
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


#: Longer command-line arguments (a --test_input job with its images) are logged as their length.
MAX_LOGGED_ARG = 200


class DockerfileError(ValueError):
    """The Dockerfile uses a form this tool does not understand."""


@dataclass
class Stage:
    """What the final stage of a Dockerfile tells about the running container."""

    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str | None = None
    cmd: list[str] = field(default_factory=list)
    copies: list[tuple[list[str], str]] = field(default_factory=list)  # (sources, destination)


def logical_lines(text: str) -> list[str]:
    """Join backslash continuations and drop comments and blank lines."""
    out: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            out.append(buf.strip())
        buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def expand(value: str, variables: dict[str, str]) -> str:
    """Expand ``$VAR`` and ``${VAR}`` (and ``${VAR:-default}``) the way Dockerfile ENV does."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        default = m.group(3)
        val = variables.get(name, "")
        if not val and default is not None:
            return default
        return val

    return re.sub(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})",
                  sub, value)


def parse_env_args(rest: str, variables: dict[str, str]) -> dict[str, str]:
    """Parse the arguments of ENV (``K=V K2="V 2"`` or the legacy ``K V`` form)."""
    tokens = shlex.split(rest, posix=True)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: expand(" ".join(tokens[1:]), variables)}
    result: dict[str, str] = {}
    for tok in tokens:
        if "=" not in tok:
            raise DockerfileError(f"cannot parse ENV item {tok!r}")
        key, val = tok.split("=", 1)
        result[key] = expand(val, {**variables, **result})
    return result


def parse_final_stage(text: str, target: str | None = None) -> Stage:
    """Return what the last ``FROM`` stage of a Dockerfile sets up, or with ``target`` the stage
    of that name (``docker build --target``); DockerfileError when there is none."""
    global_args: dict[str, str] = {}
    stage: Stage | None = None
    stage_args: dict[str, str] = {}
    for line in logical_lines(text):
        word, _, rest = line.partition(" ")
        instr = word.upper()
        rest = rest.strip()
        if instr == "FROM":
            if target is not None and stage is not None and stage.name == target:
                break                            # the target is complete
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stage = Stage(name=name)
            stage_args = {}
        elif instr == "ARG":
            for item in shlex.split(rest):
                key, eq, val = item.partition("=")
                if stage is None:
                    global_args[key] = val
                else:
                    stage_args[key] = val if eq else global_args.get(key, "")
        elif stage is None:
            continue
        elif instr == "ENV":
            stage.env.update(parse_env_args(rest, {**BASE_ENV, **stage_args, **stage.env}))
        elif instr == "WORKDIR":
            wd = expand(rest, {**stage_args, **stage.env})
            stage.workdir = wd if wd.startswith("/") else str(Path(stage.workdir) / wd)
        elif instr == "USER":
            stage.user = rest
        elif instr == "CMD":
            if not rest.startswith("["):
                raise DockerfileError("CMD must use the JSON (exec) form")
            stage.cmd = json.loads(rest)
        elif instr == "COPY":
            args = shlex.split(rest)
            flags = [a for a in args if a.startswith("--")]
            paths = [a for a in args if not a.startswith("--")]
            if any(f.startswith("--from=") for f in flags):
                continue  # from another stage: not part of the build context
            if len(paths) < 2:
                raise DockerfileError(f"cannot parse COPY {rest!r}")
            stage.copies.append((paths[:-1], paths[-1]))
    if stage is None:
        raise DockerfileError("no FROM instruction")
    if target is not None and stage.name != target:
        raise DockerfileError(f"no stage named {target!r}")
    if not stage.cmd:
        raise DockerfileError(f"the {'final' if target is None else target!r} stage has no CMD")
    return stage


def context_copy_sources(dockerfile_text: str) -> list[str]:
    """Every build-context source that any stage COPYs or ADDs (globs unexpanded)."""
    sources: list[str] = []
    for line in logical_lines(dockerfile_text):
        word, _, rest = line.partition(" ")
        if word.upper() not in ("COPY", "ADD"):
            continue
        args = shlex.split(rest)
        if any(a.startswith("--from=") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        sources.extend(paths[:-1])
    return sources


def resolve_sources(pattern: str, root: Path) -> list[Path]:
    """The files or folders a COPY source names, relative to the build context ``root``."""
    return sorted(Path(p) for p in glob.glob(str(root / pattern.rstrip("/"))))


def map_path(value: str, workdir: str, root: Path) -> str:
    """Map an absolute container path inside ``workdir`` into the local ``root``."""
    wd = workdir.rstrip("/") or "/"
    if wd != "/" and (value == wd or value.startswith(wd + "/")):
        return str(root / value[len(wd):].lstrip("/"))
    return value


def materialize(stage: Stage, context: Path, root: Path) -> list[str]:
    """Copy the stage's build-context COPY sources into ``root`` (standing for WORKDIR)."""
    copied: list[str] = []
    for sources, dest in stage.copies:
        dest_abs = dest if dest.startswith("/") else str(Path(stage.workdir) / dest)
        local_dest = Path(map_path(dest_abs, stage.workdir, root))
        for src in sources:
            matches = resolve_sources(src, context)
            if not matches:
                raise FileNotFoundError(f"COPY source {src!r} matches nothing in {context}")
            for m in matches:
                if m.is_dir():
                    # COPY dir/ dest/ copies the folder's contents into dest.
                    shutil.copytree(m, local_dest, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    target = local_dest / m.name if (dest.endswith("/") or len(matches) > 1
                                                     or len(sources) > 1) else local_dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(m, target)
                copied.append(str(m.relative_to(context)))
    return copied


def container_env(stage: Stage, root: Path, home: Path, overrides: dict[str, str]) -> dict[str, str]:
    """The environment the CMD sees: base + image ENV (paths mapped) + ``-e`` overrides."""
    env = dict(BASE_ENV)
    for key, val in stage.env.items():
        env[key] = map_path(val, stage.workdir, root)
    env["HOME"] = str(home)
    # `python` must be this interpreter: put its folder first on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(overrides)
    return env


#: Packages every image's CMD (handler.py) imports, whatever its target: without them here the
#: run would end in a ModuleNotFoundError from inside the worker.
WORKER_PACKAGES = ("runpod", "numpy", "PIL")


def missing_worker_packages() -> list[str]:
    """The :data:`WORKER_PACKAGES` that this interpreter (the CMD's ``python``) cannot import."""
    import importlib.util
    return [name for name in WORKER_PACKAGES if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dockerfile", type=Path, default=REPO / "Dockerfile")
    ap.add_argument("--context", type=Path, default=REPO, help="build context (default: repo)")
    ap.add_argument("--target", default=None,
                    help="the stage to run, as `docker build --target` (default: the last, the "
                         "GPU image; `cpu`: the CPU flavour, to be run by a torch-free "
                         "interpreter such as a venv of requirements_cpu.txt)")
    ap.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                    help="set a variable, as `docker run -e` would (repeatable)")
    ap.add_argument("--checkpoints", type=Path,
                    help="folder to expose as the image's CHECKPOINT_DIR (symlinked)")
    ap.add_argument("--check", action="store_true",
                    help="resolve and print the command, workdir and environment as JSON; run nothing")
    ap.add_argument("--timeout", type=float, default=None, help="seconds before the CMD is killed")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="-- then arguments appended to CMD")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    overrides: dict[str, str] = {}
    for item in args.env:
        key, eq, val = item.partition("=")
        if not eq:
            ap.error(f"-e {item!r}: expected KEY=VALUE")
        overrides[key] = val
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra

    try:
        stage = parse_final_stage(args.dockerfile.read_text(), args.target)
    except (OSError, DockerfileError, json.JSONDecodeError) as exc:
        log.error("cannot read %s: %s", args.dockerfile, exc)
        return 2

    with tempfile.TemporaryDirectory(prefix="like-container-") as tmp:
        root = Path(tmp) / "workdir"
        home = Path(tmp) / "home"
        root.mkdir()
        home.mkdir()
        try:
            copied = materialize(stage, args.context, root)
        except FileNotFoundError as exc:
            log.error("%s", exc)
            return 2
        env = container_env(stage, root, home, overrides)
        if args.checkpoints is not None and "CHECKPOINT_DIR" in env:
            ckpt = Path(env["CHECKPOINT_DIR"])
            if ckpt.exists() and not any(ckpt.iterdir()):
                ckpt.rmdir()
            if not ckpt.exists():
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                ckpt.symlink_to(args.checkpoints.resolve(), target_is_directory=True)
        cmd = list(stage.cmd) + list(extra)
        if args.check:
            json.dump({"cmd": cmd, "workdir": stage.workdir, "local_workdir": str(root),
                       "user": stage.user, "env": env, "copied": copied,
                       "executable": shutil.which(cmd[0], path=env["PATH"])},
                      sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
            return 0
        missing = missing_worker_packages()
        if missing:
            log.error("%s cannot import %s, which the worker needs: run this tool with the "
                      "project's environment: ./run.sh python tools/run_like_container.py ...",
                      sys.executable, ", ".join(missing))
            return 2
        shown = [a if len(a) <= MAX_LOGGED_ARG else f"<{len(a)} characters>" for a in cmd]
        log.info("running %s in %s (as the image's WORKDIR %s)", shown, root, stage.workdir)
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, timeout=args.timeout, check=False)
        except subprocess.TimeoutExpired:
            log.error("timed out after %s s", args.timeout)
            return 124
        return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
