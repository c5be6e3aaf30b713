"""The CPU flavour against the full environment: installed size, cold start to the first request,
peak RSS and per-pair time at 1 and 2 threads, from one run (issue 23).

    ./run.sh python benchmarks/cpu_flavour.py --cpu-venv DIR [--repeats 5]

DIR is a venv of requirements_cpu.txt (then requirements_mediapipe.txt with --no-deps); without
``--cpu-venv`` one is built in a temporary folder first (pip, ~1 min with a warm cache). The full
environment is the one running this script (``./run.sh``'s .venv). Both serve the same prepared
export (random weights: the graph, and so the time, is the one of the trained weights) without
checkpoint files beside it, as the CPU image does. Each measurement is a fresh process of that
venv: the cold start is from the process's start to its first response (page cache warm: the
files were just read; an image pull is not included), the per-pair time is the median of
``--repeats`` requests of an ordinary photo pair with the person cache off (each request analyses
the person), pinned to 1 or 2 cores (``sched_setaffinity`` and OpenVINO's INFERENCE_NUM_THREADS).

Prints the machine and the figures; writes them to benchmarks/results/cpu_flavour.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cpu_flavour.json"
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
PAIR = (PHOTOS / "person" / "01008_00.jpg", PHOTOS / "cloth" / "00126_00.jpg")
THREADS = (1, 2)
MB = 1e6

# One worker process: start, serve `repeats` requests, report. Runs in the venv being measured.
CHILD = r"""
import base64, json, os, sys, time
threads = int(sys.argv[3])
if threads:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
import handler
from worker.settings import Settings
if threads:
    import cv2
    import openvino_backend
    cv2.setNumThreads(threads)
    openvino_backend.core().set_property("CPU", {"INFERENCE_NUM_THREADS": threads})
worker = handler.start_worker(Settings.from_env())
handler.set_worker(worker)
image = lambda path: base64.b64encode(open(path, "rb").read()).decode()
job = {"id": "bench", "input": {"person_image": image(sys.argv[1]), "cloth_image": image(sys.argv[2]),
                                "output_format": "jpeg"}}
times, first = [], None
for _ in range(int(sys.argv[4])):
    t0 = time.perf_counter()
    out = handler.handler(job)
    times.append((time.perf_counter() - t0) * 1000)
    first = first or time.time()
    if "error" in out:
        raise SystemExit(out["error"])
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"first_response_at": first, "times_ms": times,
                  "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
                  "torch_imported": "torch" in sys.modules, "backend": worker.model.backend,
                  "precision": worker.model.precision}))
"""


def machine() -> dict:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import openvino_backend
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "openvino_cpu_capabilities": list(openvino_backend.cpu_capabilities()),
            "date": time.strftime("%Y-%m-%d"), "load_average_at_start": os.getloadavg()}


def du_bytes(path: Path) -> int:
    """Bytes on disk under ``path`` (``du -sb``: apparent sizes, hard links once)."""
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def largest_packages(venv: Path, n: int = 5) -> list[tuple[str, float]]:
    site = next(venv.glob("lib/python*/site-packages"))
    sizes = [(p.name, du_bytes(p) / MB) for p in site.iterdir() if p.is_dir()]
    return sorted(sizes, key=lambda s: -s[1])[:n]


def build_cpu_venv(where: Path) -> Path:
    venv = where / "cpu-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["-r", str(ROOT / "requirements_cpu.txt")], check=True)
    subprocess.run(pip + ["--no-deps", "-r", str(ROOT / "requirements_mediapipe.txt")], check=True)
    return venv


def prepare_export(where: Path) -> Path:
    """A checkpoint folder holding only a prepared export (of the random test weights)."""
    from openvino_backend.__main__ import main as prepare
    from openvino_backend.export_cache import RECORD
    from vton_core.weights import write_random_checkpoints
    full = where / "full"
    write_random_checkpoints(full)
    if prepare([str(full)]) != 0:
        raise SystemExit("the export failed")
    ckpt = where / "export-only"
    record = json.loads((full / "openvino" / RECORD).read_text())
    for name in record["entries"].values():
        shutil.copytree(full / "openvino" / name, ckpt / "openvino" / name)
    shutil.copy(full / "openvino" / RECORD, ckpt / "openvino" / RECORD)
    return ckpt


def image_code_bytes() -> int:
    """The serving code the cpu stage copies from the build context (as
    tools/run_like_container.py reads the Dockerfile)."""
    check = subprocess.run([sys.executable, "-m", "tools.run_like_container", "--target", "cpu",
                            "--check"], cwd=ROOT, capture_output=True, text=True, check=True)
    return sum(du_bytes(ROOT / rel) for rel in json.loads(check.stdout)["copied"])


def apt_packages(stage: str) -> list[str]:
    """The packages a Dockerfile stage installs with apt-get (its first install line)."""
    text = (ROOT / "Dockerfile").read_text()
    body = re.split(rf"^FROM \S+ AS {re.escape(stage)}$", text, flags=re.M)[1].split("\nFROM ")[0]
    install = re.search(r"--no-install-recommends\s+((?:[^&\\]|\\\n)+)", body).group(1)
    return [w for w in install.split() if w != "\\"]


def apt_installed_bytes(packages: list[str]) -> int | None:
    """Installed-Size of ``packages`` and their recursive dependencies (no recommends) in this
    machine's apt index (not necessarily Ubuntu 24.04's): an upper bound of the apt layer, base
    image packages included."""
    if not shutil.which("apt-cache"):
        return None

    def known(name: str) -> str:          # Ubuntu 24.04's t64 names, where this index has none
        found = subprocess.run(["apt-cache", "show", name], capture_output=True, check=False)
        return name if found.returncode == 0 else name.removesuffix("t64")

    packages = [known(p) for p in packages]
    deps = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                           "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
                           *packages], capture_output=True, text=True, check=False).stdout
    names = {line.strip() for line in deps.splitlines() if line and not line.startswith(" ")}
    names = {n for n in names if not n.startswith("<")}
    show = subprocess.run(["apt-cache", "show", "--no-all-versions", *sorted(names)],
                          capture_output=True, text=True, check=False).stdout
    return sum(int(m) * 1024 for m in re.findall(r"^Installed-Size: (\d+)", show, re.M)) or None


def run_worker(python: Path, ckpt: Path, threads: int, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(CHECKPOINT_DIR=str(ckpt), WARMUP="0", PERSON_CACHE_SIZE="0", LOG_LEVEL="WARNING",
               DEVICE="cpu", PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}")
    env.pop("PYTHONPATH", None)
    start = time.time()
    res = subprocess.run([str(python), "-c", CHILD, str(PAIR[0]), str(PAIR[1]), str(threads),
                          str(repeats)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1200, check=False)
    if res.returncode != 0:
        raise SystemExit(f"worker in {python} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["cold_start_to_first_response_s"] = out["first_response_at"] - start
    out["median_ms"] = statistics.median(out["times_ms"][1:] or out["times_ms"])   # 1st: cold
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-venv", type=Path, help="venv of requirements_cpu.txt (default: build one)")
    ap.add_argument("--repeats", type=int, default=5, help="requests per process (the first is cold)")
    args = ap.parse_args(argv)
    if not all(p.is_file() for p in PAIR):
        raise SystemExit(f"the photo pair {PAIR} is not there (../shared)")
    full_venv = Path(sys.prefix)
    results: dict = {"machine": machine()}
    print("machine:", json.dumps(results["machine"]))
    with tempfile.TemporaryDirectory(prefix="cpu-flavour-") as tmp:
        cpu_venv = args.cpu_venv or build_cpu_venv(Path(tmp))
        ckpt = prepare_export(Path(tmp))
        sizes = {"cpu_venv_mb": du_bytes(cpu_venv) / MB, "full_venv_mb": du_bytes(full_venv) / MB,
                 "export_mb": du_bytes(ckpt / "openvino") / MB, "code_mb": image_code_bytes() / MB}
        sizes["ratio_full_over_cpu"] = sizes["full_venv_mb"] / sizes["cpu_venv_mb"]
        apt = apt_installed_bytes(apt_packages("cpu"))
        sizes["apt_layer_upper_bound_mb"] = apt / MB if apt else None
        sizes["cpu_largest"] = largest_packages(cpu_venv)
        sizes["full_largest"] = largest_packages(full_venv)
        results["sizes"] = sizes
        print("sizes:", json.dumps(sizes))
        runs = {}
        for name, venv in (("cpu", cpu_venv), ("full", full_venv)):
            for threads in THREADS:
                runs[f"{name}_{threads}t"] = run = run_worker(venv / "bin" / "python", ckpt,
                                                               threads, args.repeats)
                print(f"{name} venv, {threads} thread(s): cold start to first response "
                      f"{run['cold_start_to_first_response_s']:.1f} s, per pair (median of "
                      f"{len(run['times_ms']) - 1}) {run['median_ms']:.0f} ms, peak RSS "
                      f"{run['peak_rss_mb']:.0f} MB, torch imported {run['torch_imported']}, "
                      f"{run['backend']} {run['precision']}")
        results["runs"] = runs
        results["ratios"] = {
            "cpu_1t_over_2t": runs["cpu_1t"]["median_ms"] / runs["cpu_2t"]["median_ms"],
            "cpu_over_full_2t": runs["cpu_2t"]["median_ms"] / runs["full_2t"]["median_ms"],
            "cold_start_full_over_cpu": (runs["full_2t"]["cold_start_to_first_response_s"]
                                         / runs["cpu_2t"]["cold_start_to_first_response_s"]),
        }
        print("ratios:", json.dumps(results["ratios"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
