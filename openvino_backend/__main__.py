"""Prepare the OpenVINO export of a checkpoint folder — the try-on pipeline's graph, the person
parser's and the record of the weights they were made from — so that a worker without torch, or
without the checkpoint files (the CPU flavour), serves it. The image build runs this when the
weights are baked; for weights on a network volume run it once, with torch (the full environment
or the GPU image):

    python -m openvino_backend CHECKPOINT_DIR [--cache-dir DIR] [--random-weights]

Exits 0 with the pipeline entry's folder printed (the parser's and the record are logged), or 1 with the reason (missing
or malformed checkpoint, OpenVINO or torch not installed, folder not writable).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openvino_backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir", help="folder with GMM/gmm_final.pth and TOM/tom_final.pth")
    parser.add_argument("--cache-dir", "--out", dest="cache_dir", default=None,
                        help="export folder (default: CHECKPOINT_DIR/openvino, where the worker "
                             "looks; else the worker's OPENVINO_CACHE_DIR)")
    parser.add_argument("--random-weights", action="store_true",
                        help="without checkpoint files, export the deterministic random test "
                             "weights (served only with ALLOW_RANDOM_WEIGHTS=1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cpvton_infer import CPVTONPlusModel
    from openvino_backend.prepared import torch_available, write_record
    from openvino_backend.runtime import BackendUnavailable
    from vton_core.checkpoints import GMM_FILE, HOW_TO_GET, TOM_FILE
    from vton_core.errors import CheckpointError
    if not torch_available():
        print("error: preparing an export needs torch: run this in the full environment "
              "(./run.sh python -m openvino_backend ...) or the GPU image", file=sys.stderr)
        return 1
    ckpt = Path(args.checkpoint_dir)
    missing = [ckpt / f for f in (GMM_FILE, TOM_FILE) if not (ckpt / f).is_file()]
    if missing and not args.random_weights:
        print(f"error: checkpoint not found: {missing[0]}. {HOW_TO_GET} (here: --random-weights)",
              file=sys.stderr)
        return 1
    try:
        # fp32: compiling works on any CPU; the cache holds the same IR for every precision.
        model = CPVTONPlusModel(args.checkpoint_dir, device="cpu", precision="fp32",
                                backend="openvino", openvino_cache_dir=args.cache_dir,
                                allow_random_weights=args.random_weights)
        runner = model.person_parser                 # exported into the same cache folder
        weights, networks = model.weights, model.networks
        write_record(networks.cache_dir, {"pipeline": networks.model_path,
                                          "parser": runner.model_path},
                     gmm_sha256=weights.gmm_sha256, tom_sha256=weights.tom_sha256,
                     random=weights.random, generated=weights.gmm_path is None)
        logging.getLogger("openvino_backend").info(
            "pipeline %s, person parser %s (sha256 %s)", networks.model_path.parent.name,
            runner.model_path.parent.name, runner.sha256[:12])
    except (CheckpointError, BackendUnavailable, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(networks.model_path.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
