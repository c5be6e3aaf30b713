"""Per-stage timings of the CP-VTON+ core on this machine (a benchmark, not a test).

    python benchmarks/bench_core.py [--batches 1,8] [--precisions fp32,bf16] [--repeats 5]
                                    [--device cpu] [--json OUT.json]

Stages: person representation (both 22-channel variants, one pair), GMM, warp (cloth, mask),
TOM. Random weights (timings do not depend on the values). Prints medians (ms) and the
per-pair throughput; bf16 runs under autocast. Quote medians from one run only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cp_dataset import person_representations  # noqa: E402
from networks import DEFAULT_CONFIG, build_gmm, build_tom, warp_cloth  # noqa: E402
from weights import random_weights  # noqa: E402

H, W = DEFAULT_CONFIG.height, DEFAULT_CONFIG.width
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def synthetic_person(rng: np.random.Generator):
    image = torch.rand(3, H, W) * 2 - 1
    parse = rng.integers(0, 21, (H, W)).astype(np.uint8)
    kp = np.column_stack([rng.uniform(2, W, 18), rng.uniform(2, H, 18), np.ones(18)])
    return image, parse, parse > 0, kp


def bench(device: str, precision: str, batch: int, repeats: int) -> dict:
    dev = torch.device(device)
    gmm_state, tom_state = random_weights()
    gmm, tom = build_gmm(), build_tom()
    gmm.load_state_dict(gmm_state)
    tom.load_state_dict(tom_state)
    gmm.to(dev)
    tom.to(dev)
    ag = torch.randn(batch, 22, H, W, device=dev)
    cloth = torch.rand(batch, 3, H, W, device=dev) * 2 - 1
    mask = (torch.rand(batch, 1, H, W, device=dev) > 0.5).float()
    ctx = (torch.autocast(dev.type, dtype=DTYPES[precision]) if precision in DTYPES
           else contextlib.nullcontext())
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    with torch.inference_mode(), ctx:
        grid, _ = gmm(ag, mask)
        warped, wmask = warp_cloth(cloth, mask, grid)
        tom_in = torch.cat([ag, warped, (wmask >= 0.5).to(warped.dtype)], 1)

        def run(f):
            def g():
                f()
                sync()
            return median_ms(g, repeats)

        row = {
            "gmm_ms": run(lambda: gmm(ag, mask)),
            "warp_ms": run(lambda: warp_cloth(cloth, mask, grid)),
            "tom_ms": run(lambda: tom(tom_in)),
        }
    row["networks_ms"] = row["gmm_ms"] + row["warp_ms"] + row["tom_ms"]
    row["pairs_per_s"] = batch / row["networks_ms"] * 1000
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    person = synthetic_person(rng)
    rep_ms = median_ms(lambda: person_representations(*person), max(args.repeats, 20))
    rows = []
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {args.device}")
    print(f"person representation (both stages, one pair): {rep_ms:.2f} ms")
    print(f"{'precision':>9} {'batch':>5} {'GMM ms':>9} {'warp ms':>9} {'TOM ms':>9} {'total ms':>9} {'pairs/s':>8}")
    for precision in args.precisions.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = bench(args.device, precision, batch, args.repeats)
            rows.append({"precision": precision, "batch": batch, **r})
            print(f"{precision:>9} {batch:>5} {r['gmm_ms']:9.1f} {r['warp_ms']:9.1f} {r['tom_ms']:9.1f} "
                  f"{r['networks_ms']:9.1f} {r['pairs_per_s']:8.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"representation_ms": rep_ms, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
