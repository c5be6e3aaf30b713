"""The performance benchmark: every figure of the performance goals, measured in one run.

    python benchmarks/bench.py [--json benchmarks/results/bench.json] [--quick]

Prints a table (figure, value, goal, met?) with the machine description and writes the same to
JSON. Medians over repeated runs; ratios are taken within this one run. Random weights (timings do
not depend on the values). Person and garment photos come from ../shared/data/photos when present,
else from the bundled sample images. Sections:

  networks   fp32 batch 1 time, achieved GFLOP/s vs the fp32 matmul peak measured now;
             bf16 speed-up and PSNR (only where the CPU has native bf16; otherwise reported)
  stages     GMM, warp and TOM medians at batch 1 and 8, fp32 and bf16
  backends   backend × precision rows (PyTorch eager / OpenVINO, fp32 / bf16) interleaved with the
             fp32 and bf16 matmul peaks: networks ms, GFLOP/s, fraction of each peak, speed-up and
             PSNR vs eager fp32; per backend, the model's cold start (process start → first
             forward pass, warm export cache) and its RSS
  repr       person representation per pair
  preprocess person analysis (192×256, 768×1024) and cloth segmentation
  e2e        handler() end to end, two 768×1024 JPEGs in, PNG out: new person / cached person
             (default backend), and new person p50 per backend (torch / openvino, interleaved)
  cold       process start to first request served (warm-up and imports included), per backend,
             with the worker's RSS after that request
  memory     worker RSS after warm-up and after N requests
  cache      RSS growth after 8 distinct 12 MP persons (the person cache's byte budget at work)
  compose    the full-resolution try-on's cost at 768×1024 and 12 MP: handler() p50 with
             garment_resolution full vs model (interleaved), the extra postprocess time as a
             fraction of the request, and a worker's peak RSS serving one 12 MP request each way
  gpu        (CUDA only) batched throughput and single-pair latency, fp16/bf16, channels_last
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import networks
from cp_dataset import person_representations
from training.metrics import psnr
from vton_core.weights import random_weights, write_random_checkpoints

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"


H, W = networks.DEFAULT_CONFIG.height, networks.DEFAULT_CONFIG.width


# ------------------------------------------------------------------------------------------------
def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "date": time.strftime("%Y-%m-%d"),
            "load_average_at_start": os.getloadavg()}   # a busy machine distorts ratios
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import openvino_backend
        from openvino_backend.export_cache import openvino_version
        info["openvino"] = openvino_version()
        info["openvino_cpu_capabilities"] = list(openvino_backend.cpu_capabilities())
    except (ImportError, RuntimeError) as exc:
        info["openvino"] = f"unavailable ({exc})"
    return info


def count_flops(gmm, tom) -> dict:
    """FLOP (2·MAC) of one pair, from the layers actually run (convs, linear, correlation)."""
    macs = {"gmm": 0, "tom": 0}

    def hook(name):
        def f(mod, inp, out):
            if isinstance(mod, torch.nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                macs[name] += out.numel() * k
            elif isinstance(mod, torch.nn.Linear):
                macs[name] += out.numel() * mod.in_features
        return f

    handles = [m.register_forward_hook(hook(n)) for n, net in (("gmm", gmm), ("tom", tom))
               for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.inference_mode():
        gmm(torch.randn(1, 22, H, W), torch.rand(1, 1, H, W))
        tom(torch.randn(1, 26, H, W))
    for h in handles:
        h.remove()
    fh, fw = networks.DEFAULT_CONFIG.feature_size
    macs["gmm"] += (fh * fw) ** 2 * networks.DEFAULT_CONFIG.max_channels      # correlation bmm
    return {k: 2 * v for k, v in macs.items()}


def load_nets(device="cpu"):
    gs, ts = random_weights()
    gmm, tom = networks.build_gmm(), networks.build_tom()
    gmm.load_state_dict(gs)
    tom.load_state_dict(ts)
    return gmm.to(device), tom.to(device)


def nets_forward(gmm, tom, ag_gmm, ag_tom, cloth, mask):
    """The try-on B×3×H×W of GMM → warp → TOM (as CPVTONPlusModel.forward_tensors computes it)."""
    grid, _ = gmm(ag_gmm, mask)
    warped, wmask = networks.warp_cloth(cloth, mask, grid)
    raw = tom(torch.cat([ag_tom, warped, (wmask >= 0.5).to(warped.dtype)], 1))
    return networks.tom_outputs(raw.float(), warped.float())[2]


def tryon_psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR (dB) of a try-on against the eager fp32 one, images in [-1, 1]: the one definition
    of every "PSNR vs fp32" figure of this benchmark (the networks section and the backend
    rows, computed on the same inputs, :func:`pipeline_inputs`)."""
    return psnr(out.reshape(1, -1), ref.reshape(1, -1), data_range=2.0).item()


# ------------------------------------------------------------------------------------------------
def section_networks(results: dict, repeats: int) -> None:
    from cpvton_infer import cpu_has_native_bf16

    gmm, tom = load_nets()
    flops = count_flops(gmm, tom)
    total = flops["gmm"] + flops["tom"]
    # The backend rows' inputs (real VITON pairs when ../shared is there), so that the bf16 PSNR
    # below is the eager bf16 row's figure. Random noise inputs, with one agnostic for both
    # networks, gave 32.6 dB against 36.8 dB on the rows' inputs (eager bf16, emulated, on a
    # 2-core AMD EPYC without native bf16; issue 21 saw 31.2 against 39.1 dB).
    inputs = pipeline_inputs(1)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    # Matmul peak and networks interleaved, so that the ratio is taken pair by pair on a
    # machine whose speed drifts.
    peaks, nets = [], []
    with torch.inference_mode():
        ref = nets_forward(gmm, tom, *inputs)
        a @ b
        for _ in range(repeats):
            peaks.append(2 * n ** 3 / median_ms(lambda: a @ b, 3, warmup=0) / 1e6)
            nets.append(median_ms(lambda: nets_forward(gmm, tom, *inputs), 1, warmup=0))
    fp32_ms = statistics.median(nets)
    results["gflop_per_pair"] = {"gmm": flops["gmm"] / 1e9, "tom": flops["tom"] / 1e9}
    results["matmul_fp32_peak_gflops"] = statistics.median(peaks)
    results["networks_fp32_b1_ms"] = fp32_ms
    results["networks_fp32_b1_gflops"] = total / fp32_ms / 1e6
    results["networks_fp32_b1_fraction_of_peak"] = statistics.median(
        [total / t / 1e6 / p for t, p in zip(nets, peaks)])
    if cpu_has_native_bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_ms = median_ms(lambda: nets_forward(gmm, tom, *inputs), repeats)
            out = nets_forward(gmm, tom, *inputs)
        results["bf16_speedup"] = fp32_ms / bf16_ms
        results["bf16_psnr_db"] = tryon_psnr(out, ref)
    else:
        results["bf16_speedup"] = None
        results["bf16_note"] = "this CPU has no native bf16 (AVX512-BF16/AMX): not measured"


def section_stages(results: dict, repeats: int, batches=(1, 8), precisions=("fp32", "bf16")) -> None:
    """Per-stage medians (GMM, warp, TOM) at each batch size and precision, ms per batch."""
    from cpvton_infer import cpu_has_native_bf16
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gmm, tom = load_nets(dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    rows = []
    for precision in precisions:
        slow = precision == "bf16" and dev.type == "cpu" and not cpu_has_native_bf16()
        for batch in batches:
            if slow and batch > 1:
                continue             # emulated bf16: one batch-1 row says enough
            ag = torch.randn(batch, 22, H, W, device=dev)
            cloth = torch.rand(batch, 3, H, W, device=dev) * 2 - 1
            mask = (torch.rand(batch, 1, H, W, device=dev) > 0.5).float()
            ctx = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16"
                   else contextlib.nullcontext())
            reps = 1 if slow else repeats
            with torch.inference_mode(), ctx:
                grid, _ = gmm(ag, mask)
                warped, wmask = networks.warp_cloth(cloth, mask, grid)
                tom_in = torch.cat([ag, warped, (wmask >= 0.5).to(warped.dtype)], 1)

                def timed(f):
                    return median_ms(lambda: (f(), sync()), reps, warmup=0 if slow else 1)
                row = {"precision": precision, "batch": batch,
                       "gmm_ms": timed(lambda: gmm(ag, mask)),
                       "warp_ms": timed(lambda: networks.warp_cloth(cloth, mask, grid)),
                       "tom_ms": timed(lambda: tom(tom_in))}
            row["pairs_per_s"] = batch * 1000 / (row["gmm_ms"] + row["warp_ms"] + row["tom_ms"])
            rows.append(row)
            print(f"  stages {precision} b{batch}: GMM {row['gmm_ms']:.1f} ms, warp "
                  f"{row['warp_ms']:.1f} ms, TOM {row['tom_ms']:.1f} ms, {row['pairs_per_s']:.2f} pairs/s",
                  file=sys.stderr, flush=True)
    results["stages"] = rows


BACKEND_ROWS = (("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"))
WORKER_BACKENDS = ("torch", "openvino")


def native_bf16() -> dict:
    """Whether each backend has native bf16 kernels on this CPU."""
    import openvino_backend
    from cpvton_infer import cpu_has_native_bf16
    return {"torch": cpu_has_native_bf16(),
            "openvino": "BF16" in openvino_backend.cpu_capabilities()}


def pipeline_inputs(batch: int, seed: int = 0) -> list[torch.Tensor]:
    """agnostic_gmm, agnostic_tom, cloth, cloth_mask: the golden file's inputs when ../shared is
    there (real VITON persons and garments, repeated to ``batch``), else random ones."""
    golden = ROOT.parent / "shared" / "golden" / "cpvton_plus_golden.npz"
    if golden.is_file():
        with np.load(golden) as g:
            xs = [torch.from_numpy(g[k]) for k in ("agnostic_gmm", "agnostic_tom", "cloth", "cloth_mask")]
        idx = torch.arange(batch) % xs[0].shape[0]
        return [x[idx].contiguous() for x in xs]
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 22, H, W, generator=gen) * 2 - 1,
            torch.rand(batch, 22, H, W, generator=gen) * 2 - 1,
            torch.rand(batch, 3, H, W, generator=gen) * 2 - 1,
            (torch.rand(batch, 1, H, W, generator=gen) > 0.5).float()]


def section_backends(results: dict, ckpt: Path, repeats: int, batches=(1, 4)) -> None:
    """Backend × precision rows, every candidate and both matmul peaks interleaved per repeat."""
    from cpvton_infer import CPVTONPlusModel
    native = native_bf16()
    models, notes = {}, []
    for backend, precision in BACKEND_ROWS:
        if precision == "bf16" and not native[backend]:
            notes.append(f"{backend} bf16: this CPU has no native bf16, not measured")
            continue
        models[(backend, precision)] = CPVTONPlusModel(ckpt, device="cpu", precision=precision,
                                                       backend=backend)
    flops = sum(count_flops(*load_nets()).values())
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    peak_args = {"fp32": (a, b)}
    if native["torch"]:
        peak_args["bf16"] = (a.bfloat16(), b.bfloat16())
    rows = []
    for batch in batches:
        inputs = pipeline_inputs(batch)
        outs = {key: m.forward_tensors(*inputs) for key, m in models.items()}   # also warm-up
        times = {key: [] for key in models}
        peaks = {p: [] for p in peak_args}
        with torch.inference_mode():
            for _ in range(repeats):
                for p, (x, y) in peak_args.items():
                    peaks[p].append(2 * n ** 3 / median_ms(lambda: x @ y, 3, warmup=1) / 1e6)
                for key, m in models.items():
                    times[key].append(median_ms(lambda: m.forward_tensors(*inputs), 1, warmup=0))
        base_ms = statistics.median(times[("torch", "fp32")])
        ref = outs[("torch", "fp32")]
        peak = {p: statistics.median(v) for p, v in peaks.items()}
        for (backend, precision), ts in times.items():
            ms = statistics.median(ts)
            out = outs[(backend, precision)]
            row = {"backend": backend, "precision": precision, "batch": batch,
                   "networks_ms": ms, "gflops": flops * batch / ms / 1e6,
                   "speedup_vs_eager_fp32": base_ms / ms,
                   "psnr_vs_eager_fp32_db": tryon_psnr(out["tryon"], ref["tryon"]),
                   "grid_max_error": float((out["grid"] - ref["grid"]).abs().max())}
            for p, v in peak.items():
                row[f"fraction_of_{p}_peak"] = row["gflops"] / v
            rows.append(row)
            print(f"  {backend:>8} {precision} b{batch}: {ms:.1f} ms, {row['gflops']:.0f} GFLOP/s, "
                  f"{row['speedup_vs_eager_fp32']:.2f}x eager fp32, "
                  f"{row['psnr_vs_eager_fp32_db']:.1f} dB", file=sys.stderr, flush=True)
        results[f"matmul_peaks_gflops_b{batch}_run"] = peak
    results["backend_rows"] = rows
    results["backend_notes"] = notes
    for row in rows:
        if row["backend"] == "openvino" and row["batch"] == 1:
            results[f"openvino_{row['precision']}_speedup"] = row["speedup_vs_eager_fp32"]
            results[f"openvino_{row['precision']}_psnr_db"] = row["psnr_vs_eager_fp32_db"]
    section_model_cold(results, ckpt, min(repeats, 5))


MODEL_COLD_START = r"""
import json, sys, time
import numpy as np, psutil
from cpvton_infer import CPVTONPlusModel
m = CPVTONPlusModel(sys.argv[1], device="cpu", backend=sys.argv[2])
m.forward_arrays(*(np.zeros((1, c, m.cfg.height, m.cfg.width), np.float32) for c in (22, 22, 3, 1)))
print(json.dumps({"precision": m.precision, "rss_mb": psutil.Process().memory_info().rss / 2 ** 20,
                  "torch_imported": "torch" in sys.modules}))
"""


def section_model_cold(results: dict, ckpt: Path, repeats: int) -> None:
    """Per backend (PRECISION=auto): process start → model loaded and its first forward pass
    (imports included, export cache warm), and the process's RSS then. Interleaved."""
    times = {b: [] for b in WORKER_BACKENDS}
    info = {}
    for _ in range(repeats):
        for backend in WORKER_BACKENDS:
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", MODEL_COLD_START, str(ckpt), backend],
                                 cwd=ROOT, capture_output=True, text=True, check=True)
            times[backend].append(time.perf_counter() - t0)
            info[backend] = json.loads(out.stdout.strip().splitlines()[-1])
    for backend in WORKER_BACKENDS:
        results[f"model_cold_start_{backend}_s"] = statistics.median(times[backend])
        results[f"model_rss_{backend}_mb"] = info[backend]["rss_mb"]
        results[f"model_precision_{backend}"] = info[backend]["precision"]
        results[f"model_torch_imported_{backend}"] = info[backend]["torch_imported"]


def section_repr(results: dict) -> None:
    rng = np.random.default_rng(0)
    image = torch.rand(3, H, W) * 2 - 1
    parse = rng.integers(0, 21, (H, W)).astype(np.uint8)
    kp = np.column_stack([rng.uniform(2, W, 18), rng.uniform(2, H, 18), np.ones(18)])
    results["representation_ms"] = median_ms(
        lambda: person_representations(image, parse, parse > 0, kp), 200, warmup=5)


def photos() -> tuple[list[bytes], list[bytes]]:
    """(person JPEGs, cloth JPEGs) at 768×1024."""
    def jpeg(im: Image.Image) -> bytes:
        buf = io.BytesIO()
        im.convert("RGB").resize((768, 1024), Image.BICUBIC).save(buf, "JPEG", quality=92)
        return buf.getvalue()
    if PHOTOS.is_dir():
        persons = [jpeg(Image.open(p)) for p in sorted((PHOTOS / "person").glob("*"))]
        cloths = [jpeg(Image.open(p)) for p in sorted((PHOTOS / "cloth").glob("*"))]
        return persons, cloths
    from worker import sample_images
    return [jpeg(sample_images.person_photo())], [jpeg(sample_images.garment())]


def section_preprocess(results: dict, repeats: int) -> None:
    """Person analysis (MediaPipe + the learned parser) with the parser on PyTorch fp32 and on
    OpenVINO at PRECISION=auto (what a CPU worker runs), interleaved; the garment mask."""
    import vton_preprocess
    persons, cloths = photos()
    big = Image.open(io.BytesIO(persons[0])).convert("RGB")
    small = big.resize((W, H), Image.BICUBIC)
    cloth = Image.open(io.BytesIO(cloths[0])).convert("RGB")
    runners = {"torch": vton_preprocess.load_person_parser("torch"),
               "openvino": vton_preprocess.load_person_parser("openvino", precision="auto")}
    results["parser_openvino_precision"] = runners["openvino"].precision
    times = {f"analysis_{size}_{backend}": [] for size in ("192x256", "768x1024") for backend in runners}
    for backend, runner in runners.items():
        vton_preprocess.analyze_person(small, parser=runner)                 # load the models
    for _ in range(repeats):
        for backend, runner in runners.items():
            for size, im in (("192x256", small), ("768x1024", big)):
                times[f"analysis_{size}_{backend}"].append(
                    median_ms(lambda: vton_preprocess.analyze_person(im, parser=runner), 1, warmup=0))
    for key, values in times.items():
        results[f"{key}_ms"] = statistics.median(values)
    for size in ("192x256", "768x1024"):                    # what the worker runs on a CPU
        results[f"analysis_{size}_ms"] = results[f"analysis_{size}_openvino_ms"]
    results["cloth_segmentation_768x1024_ms"] = median_ms(lambda: vton_preprocess.segment_cloth(cloth), repeats)
    results["cloth_segmentation_192x256_ms"] = median_ms(
        lambda: vton_preprocess.segment_cloth(cloth.resize((W, H))), repeats)
    section_parser(results, np.asarray(small), repeats)


def section_parser(results: dict, rgb: np.ndarray, repeats: int) -> None:
    """The person parser alone on one framed 192×256 person: PyTorch fp32 and bf16 autocast,
    OpenVINO fp32 and (on CPUs with native bf16) bf16, interleaved."""
    import openvino_backend
    import vton_preprocess
    from vton_preprocess.parser import get_parser, to_input
    model, x = get_parser(), to_input(rgb)

    def torch_run(dtype):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            model(x)
    runs = {"parser_fp32_ms": lambda: torch_run("fp32"), "parser_bf16_ms": lambda: torch_run("bf16")}
    precisions = ["fp32"] + (["bf16"] if "BF16" in openvino_backend.cpu_capabilities() else [])
    for precision in precisions:
        runner = vton_preprocess.load_person_parser("openvino", precision=precision)
        runs[f"parser_openvino_{precision}_ms"] = lambda r=runner: r(rgb)
    times = {key: [] for key in runs}
    for run in runs.values():
        median_ms(run, 3, warmup=3)
    for _ in range(repeats * 3):
        for key, run in runs.items():
            times[key].append(median_ms(run, 1, warmup=0))
    for key, values in times.items():
        results[key] = statistics.median(values)
    results["parser_serving_ms"] = results[f"parser_openvino_{precisions[-1]}_ms"]


@contextlib.contextmanager
def worker_env(ckpt: Path, **extra):
    old = dict(os.environ)
    os.environ.update({"CHECKPOINT_DIR": str(ckpt), "LOG_LEVEL": "WARNING", "WARMUP": "1",
                       **{k: str(v) for k, v in extra.items()}})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def section_e2e_memory(results: dict, ckpt: Path, repeats: int, memory_requests: int) -> None:
    import psutil

    import handler
    from worker.settings import Settings
    persons, cloths = photos()
    with worker_env(ckpt):
        worker = handler.start_worker(Settings.from_env())
    handler.set_worker(worker)
    proc = psutil.Process()

    def job(p, c):
        out = handler.handler({"id": "bench", "input": {"person_image": b64(p), "cloth_image": b64(c),
                                                        "output_format": "png"}})
        assert "error" not in out, out
        return out

    # New person each time: clear the cache before every request.
    def miss():
        worker.cache.clear()
        job(persons[0], cloths[0])
    results["e2e_new_person_p50_ms"] = median_ms(miss, repeats)
    # Same person, a new garment each time: person analysis served from the cache.
    state = {"i": 0}

    def hit():
        state["i"] += 1
        job(persons[0], cloths[state["i"] % len(cloths)])
    results["e2e_cached_person_p50_ms"] = median_ms(hit, repeats)
    results["e2e_cached_vs_new_ratio"] = (results["e2e_cached_person_p50_ms"]
                                          / results["e2e_new_person_p50_ms"])
    rss0 = proc.memory_info().rss
    for i in range(memory_requests):
        job(persons[i % len(persons)], cloths[i % len(cloths)])
    rss1 = proc.memory_info().rss
    results["rss_after_warmup_mb"] = rss0 / 2 ** 20
    results["rss_after_requests_mb"] = rss1 / 2 ** 20
    results["rss_growth_mb"] = (rss1 - rss0) / 2 ** 20
    results["memory_requests"] = memory_requests
    results["e2e_default_backend"] = f"{worker.model.backend} {worker.model.precision}"
    handler.set_worker(None)
    section_e2e_backends(results, ckpt, repeats, job)


def section_e2e_backends(results: dict, ckpt: Path, repeats: int, job) -> None:
    """handler() p50 for a new person, one worker per backend (PRECISION=auto), interleaved."""
    import handler
    from worker.settings import Settings
    persons, cloths = photos()
    workers = {}
    for backend in WORKER_BACKENDS:
        with worker_env(ckpt, BACKEND=backend):
            workers[backend] = handler.start_worker(Settings.from_env())
    times = {b: [] for b in WORKER_BACKENDS}
    for _ in range(repeats):
        for backend, worker in workers.items():
            handler.set_worker(worker)
            worker.cache.clear()
            t0 = time.perf_counter()
            job(persons[0], cloths[0])
            times[backend].append((time.perf_counter() - t0) * 1000)
    handler.set_worker(None)
    for backend, worker in workers.items():
        results[f"e2e_new_person_p50_ms_{backend}"] = statistics.median(times[backend])
        results[f"e2e_precision_{backend}"] = worker.model.precision


#: Persons of this size fill the cache in the memory figure (12 MP photos, 36 MB as pixels).
CACHE_PERSON_SIZE = (3000, 4000)
CACHE_PERSONS = 8


def section_cache(results: dict, ckpt: Path) -> None:
    """RSS growth of an idle worker after CACHE_PERSONS distinct large persons went through it:
    the person cache keeps at most PERSON_CACHE_MB of them (default settings otherwise)."""
    import psutil

    import handler
    from worker import sample_images
    from worker.settings import Settings
    with worker_env(ckpt, WARMUP="0"):
        settings = Settings.from_env()
    worker = handler.Worker(settings, handler.load_model(settings))
    handler.set_worker(worker)
    p = sample_images.synthetic_person(*CACHE_PERSON_SIZE)
    cloth = sample_images.garment()
    fixed = {"person_parse": b64(_png(Image.fromarray(p.parse))),
             "person_mask": b64(_png(Image.fromarray(p.mask))),
             "person_pose": {"people": [{"pose_keypoints_2d": p.pose.reshape(-1).tolist()}]},
             "cloth_image": b64(_png(cloth)),
             "cloth_mask": b64(_png(Image.fromarray(sample_images.garment_mask(cloth)))),
             "output_size": "model"}
    photo = np.asarray(p.image)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    for i in range(CACHE_PERSONS):
        distinct = photo.copy()
        distinct[:64, :64] = (30 * i, 0, 0)          # survives JPEG: a distinct person each time
        buf = io.BytesIO()
        Image.fromarray(distinct).save(buf, format="JPEG", quality=90)
        out = handler.handler({"id": "bench-cache", "input": {"person_image": b64(buf.getvalue()),
                                                              **fixed}})
        assert "error" not in out, out
    results["person_cache_budget_mb"] = settings.person_cache_mb
    results["person_cache_entries"] = len(worker.cache)
    results["person_cache_held_mb"] = worker.cache.nbytes / 2 ** 20
    results["rss_growth_8_large_persons_mb"] = (proc.memory_info().rss - rss0) / 2 ** 20
    handler.set_worker(None)


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


#: The compose section's photo sizes: VITON-HD's 768×1024 and a 12 MP phone photo.
COMPOSE_SIZES = {"768x1024": (768, 1024), "12MP": (3000, 4000)}

COMPOSE_RSS = r"""
import json, sys
import handler
from worker.settings import Settings

def status_mb(name):          # VmRSS / VmHWM (the peak since the last reset) of this process
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024

handler.set_worker(handler.start_worker(Settings.from_env()))
job = json.loads(sys.stdin.read())
before = status_mb("VmRSS")
with open("/proc/self/clear_refs", "w") as f:   # Linux: "5" resets the peak to the current RSS
    f.write("5")
out = handler.handler(job)
assert "error" not in out, out
print(json.dumps({"peak_mb": status_mb("VmHWM"), "before_mb": before}), flush=True)
"""


def compose_inputs(size: tuple[int, int]) -> tuple[bytes, bytes]:
    """(person JPEG, printed garment JPEG) at ``size``: the first photo of :func:`photos`
    resized, and the bundled t-shirt with fine print drawn at that size."""
    from worker import sample_images
    person = Image.open(io.BytesIO(photos()[0][0])).convert("RGB").resize(size, Image.BICUBIC)
    out = []
    for im in (person, sample_images.printed_garment(*size)):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=92)
        out.append(buf.getvalue())
    return out[0], out[1]


def section_compose(results: dict, ckpt: Path, repeats: int) -> None:
    """The full-resolution composite's cost: handler() for a new person, PNG out, with
    garment_resolution full and model interleaved, at each of COMPOSE_SIZES; the extra time of
    the model's postprocess stage as a fraction of the whole full-resolution request; and the
    peak RSS of a worker process serving one 12 MP request each way."""
    import handler
    from worker.settings import Settings
    with worker_env(ckpt):
        worker = handler.start_worker(Settings.from_env())
    handler.set_worker(worker)
    for label, size in COMPOSE_SIZES.items():
        person, cloth = compose_inputs(size)
        times = {r: [] for r in ("full", "model")}
        post = {r: [] for r in ("full", "model")}
        for _ in range(repeats):
            for resolution in times:
                worker.cache.clear()
                t0 = time.perf_counter()
                out = handler.handler({"id": "bench-compose", "input": {
                    "person_image": b64(person), "cloth_image": b64(cloth),
                    "garment_resolution": resolution}})
                times[resolution].append((time.perf_counter() - t0) * 1000)
                assert "error" not in out, out
                post[resolution].append(out["model_timings_ms"]["postprocess"])
        for resolution in times:
            results[f"compose_{label}_request_{resolution}_ms"] = statistics.median(times[resolution])
            results[f"compose_{label}_postprocess_{resolution}_ms"] = statistics.median(post[resolution])
        extra = (results[f"compose_{label}_postprocess_full_ms"]
                 - results[f"compose_{label}_postprocess_model_ms"])
        results[f"compose_{label}_extra_ms"] = extra
        results[f"compose_{label}_extra_fraction_of_request"] = extra / results[f"compose_{label}_request_full_ms"]
    handler.set_worker(None)
    person, cloth = compose_inputs(COMPOSE_SIZES["12MP"])
    for resolution in ("full", "model"):
        job = json.dumps({"id": "bench-rss", "input": {"person_image": b64(person), "cloth_image": b64(cloth),
                                                       "garment_resolution": resolution}})
        with worker_env(ckpt):
            proc = subprocess.run([sys.executable, "-c", COMPOSE_RSS], input=job, capture_output=True,
                                  text=True, check=True, cwd=ROOT)
        peak = json.loads(proc.stdout.strip().splitlines()[-1])
        results[f"compose_12MP_peak_rss_{resolution}_mb"] = peak["peak_mb"]
        results[f"compose_12MP_rss_before_request_{resolution}_mb"] = peak["before_mb"]


COLD_START = r"""
import base64, json, sys, time
t_import = time.perf_counter()
import handler
from worker.settings import Settings
handler.set_worker(handler.start_worker(Settings.from_env()))
job = json.loads(sys.stdin.read())
out = handler.handler(job)
assert "error" not in out, out
print("served", flush=True)
import psutil
print(psutil.Process().memory_info().rss / 2 ** 20, flush=True)
print("torch" in sys.modules, flush=True)
"""


def section_cold(results: dict, ckpt: Path, repeats: int) -> None:
    persons, cloths = photos()
    job = json.dumps({"id": "cold", "input": {"person_image": b64(persons[0]),
                                              "cloth_image": b64(cloths[0])}})
    times = {b: [] for b in WORKER_BACKENDS}
    rss, torch_loaded = {}, {}
    for _ in range(repeats):
        for backend in WORKER_BACKENDS:       # interleaved; the export cache is warm
            with worker_env(ckpt, BACKEND=backend):
                env = dict(os.environ)
            # From process start to the first response (the child's exit is not counted).
            t0 = time.perf_counter()
            child = subprocess.Popen([sys.executable, "-c", COLD_START], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                                     env=env)
            child.stdin.write(job.encode())
            child.stdin.close()
            line = child.stdout.readline()
            times[backend].append(time.perf_counter() - t0)
            rss[backend] = float(child.stdout.readline())
            torch_loaded[backend] = child.stdout.readline().strip() == b"True"
            if child.wait() != 0 or line.strip() != b"served":
                raise RuntimeError("the cold-start child did not serve its request")
    for backend in WORKER_BACKENDS:
        results[f"cold_start_{backend}_s"] = statistics.median(times[backend])
        results[f"worker_rss_after_first_request_{backend}_mb"] = rss[backend]
        results[f"worker_torch_imported_{backend}"] = torch_loaded[backend]
    results["cold_start_s"] = results["cold_start_openvino_s"]
    results["worker_rss_openvino_vs_torch"] = (results["worker_rss_after_first_request_openvino_mb"]
                                               / results["worker_rss_after_first_request_torch_mb"])


def section_gpu(results: dict, repeats: int) -> None:
    if not torch.cuda.is_available():
        results["gpu_note"] = "no CUDA GPU visible: GPU figures not measured"
        return
    dev = torch.device("cuda")
    gmm, tom = load_nets(dev)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    gmm, tom = gmm.to(memory_format=torch.channels_last), tom.to(memory_format=torch.channels_last)
    for batch in (1, 64):
        ag = torch.randn(batch, 22, H, W, device=dev).to(memory_format=torch.channels_last)
        cloth = (torch.rand(batch, 3, H, W, device=dev) * 2 - 1).to(memory_format=torch.channels_last)
        mask = (torch.rand(batch, 1, H, W, device=dev) > 0.5).float()

        def run():
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
                nets_forward(gmm, tom, ag, ag, cloth, mask)
            torch.cuda.synchronize()
        ms = median_ms(run, repeats, warmup=3)
        results[f"gpu_networks_b{batch}_ms"] = ms
        results[f"gpu_networks_b{batch}_pairs_per_s"] = batch / ms * 1000


#: Requests served before the worker's RSS is read (the rss_after_requests_mb goal).
FULL_MEMORY_REQUESTS = 500

GOALS = [  # (key, label, comparison, goal)
    ("networks_fp32_b1_fraction_of_peak", "networks fp32 b1, fraction of matmul peak", ">=", 0.70),
    ("bf16_speedup", "bf16 speed-up over fp32 (CPU)", ">=", 2.5),
    ("bf16_psnr_db", "bf16 PSNR vs fp32 (dB)", ">=", 35.0),
    ("openvino_fp32_speedup", "OpenVINO fp32 vs eager fp32, networks b1", ">=", 1.3),
    ("openvino_bf16_speedup", "OpenVINO bf16 vs eager fp32, networks b1", ">=", 2.4),
    ("openvino_bf16_psnr_db", "OpenVINO bf16 PSNR vs eager fp32 (dB)", ">=", 35.0),
    ("model_cold_start_openvino_s", "model cold start, OpenVINO, warm cache (s)", "<=", 2.0),
    ("representation_ms", "person representation (ms/pair)", "<=", 3.0),
    ("analysis_192x256_ms", "person analysis 192×256 (ms)", "<=", 40.0),
    ("analysis_768x1024_ms", "person analysis 768×1024 (ms)", "<=", 80.0),
    ("parser_serving_ms", "person parser 192×256, OpenVINO, bf16 where native (ms)", "<=", 10.0),
    ("analysis_768x1024_torch_ms", "person analysis 768×1024, parser on PyTorch fp32 (ms)", "<=", 80.0),
    ("cloth_segmentation_768x1024_ms", "cloth segmentation 768×1024 (ms)", "<=", 10.0),
    ("e2e_new_person_p50_ms", "handler e2e, new person, p50 (ms)", "<=", 250.0),
    ("e2e_cached_person_p50_ms", "handler e2e, cached person, p50 (ms)", "<=", 150.0),
    ("cold_start_s", "cold start to first request served, OpenVINO, warm cache (s)", "<=", 2.0),
    ("worker_rss_openvino_vs_torch", "worker RSS after 1st request, OpenVINO / PyTorch", "<=", 1.0),
    ("rss_after_requests_mb", "worker RSS after the requests (MB)", "<=", 1536.0),
    ("gpu_networks_b64_pairs_per_s", "GPU batched throughput (pairs/s)", ">=", 2000.0),
    ("gpu_networks_b1_ms", "GPU single pair, networks (ms)", "<=", 30.0),
]


#: Goals whose figure --quick does not measure as the goal means it (key -> why), so it is shown
#: without a verdict; the other figures are the same measurement from fewer repeats.
QUICK_UNJUDGED = {"rss_after_requests_mb": "--quick: after {memory_requests} requests, the goal is "
                                           "after " + str(FULL_MEMORY_REQUESTS)}


def print_table(results: dict, quick: bool = False) -> None:
    print(f"machine: {json.dumps(results['machine'])}")
    print(f"{'figure':<46} {'value':>12} {'goal':>10}  met")
    for key, label, op, goal in GOALS:
        v = results.get(key)
        if v is None:
            print(f"{label:<46} {'n/a':>12} {op + str(goal):>10}  -")
            continue
        if quick and key in QUICK_UNJUDGED:
            why = QUICK_UNJUDGED[key].format(memory_requests=results.get("memory_requests", "fewer"))
            print(f"{label:<46} {v:12.3f} {op + str(goal):>10}  - ({why})")
            continue
        met = v >= goal if op == ">=" else v <= goal
        print(f"{label:<46} {v:12.3f} {op + str(goal):>10}  {'yes' if met else 'NO'}")
    for row in results.get("backend_rows", []):
        peaks = ", ".join(f"{row[k]:.0%} of {k[12:-5]} peak" for k in row if k.startswith("fraction_of_"))
        print(f"  {row['backend']:>8} {row['precision']} batch {row['batch']}: "
              f"{row['networks_ms']:.1f} ms, {row['gflops']:.0f} GFLOP/s ({peaks}), "
              f"{row['speedup_vs_eager_fp32']:.2f}x eager fp32, {row['psnr_vs_eager_fp32_db']:.1f} dB, "
              f"grid error {row['grid_max_error']:.1e}")
    for row in results.get("stages", []):
        print(f"  stages {row['precision']:>4} batch {row['batch']}: GMM {row['gmm_ms']:.1f} ms, "
              f"warp {row['warp_ms']:.1f} ms, TOM {row['tom_ms']:.1f} ms ({row['pairs_per_s']:.2f} pairs/s)")
    extra = {k: v for k, v in results.items()
             if k not in {g[0] for g in GOALS} | {"machine", "stages", "backend_rows"}}
    for k, v in extra.items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench.json")
    ap.add_argument("--sections", default="networks,stages,backends,repr,preprocess,e2e,cache,compose,cold,gpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--memory-requests", type=int, default=FULL_MEMORY_REQUESTS)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and requests")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for PyTorch and OpenVINO in this process (default: all cores); "
                         "1 gives steadier ratios on a machine shared with other work")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        import openvino_backend
        openvino_backend.core().set_property("CPU", {"INFERENCE_NUM_THREADS": args.threads})
    if args.quick:
        args.repeats, args.memory_requests = 3, 20
    sections = set(args.sections.split(","))
    results: dict = {"machine": machine()}
    results["machine"]["openvino_threads"] = args.threads or "all"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        write_random_checkpoints(ckpt)
        steps = [("networks", lambda: section_networks(results, args.repeats)),
                 ("stages", lambda: section_stages(results, args.repeats)),
                 ("backends", lambda: section_backends(results, ckpt, args.repeats)),
                 ("repr", lambda: section_repr(results)),
                 ("preprocess", lambda: section_preprocess(results, max(args.repeats, 10))),
                 ("e2e", lambda: section_e2e_memory(results, ckpt, args.repeats, args.memory_requests)),
                 ("cache", lambda: section_cache(results, ckpt)),
                 ("compose", lambda: section_compose(results, ckpt, args.repeats)),
                 ("cold", lambda: section_cold(results, ckpt, min(args.repeats, 3))),
                 ("gpu", lambda: section_gpu(results, args.repeats))]
        for name, step in steps:
            if name in sections:
                t0 = time.perf_counter()
                step()
                print(f"[{name} done in {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    print_table(results, quick=args.quick)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
