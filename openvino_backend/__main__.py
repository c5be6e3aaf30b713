"""Fill the OpenVINO export cache for a checkpoint folder — the try-on pipeline's graph and the
person parser's (the image build runs this when the weights are baked, so that a cold start only
reads and compiles the saved models):

    python -m openvino_backend CHECKPOINT_DIR [--cache-dir DIR]

Exits 0 with the pipeline entry's folder printed (the parser's is logged), or 1 with the reason
(missing or malformed checkpoint, OpenVINO not installed, cache not writable).
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openvino_backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir", help="folder with GMM/gmm_final.pth and TOM/tom_final.pth")
    parser.add_argument("--cache-dir", default=None,
                        help="export cache folder (default: CHECKPOINT_DIR/openvino)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cpvton_infer import CPVTONPlusModel
    from openvino_backend.runtime import BackendUnavailable
    from vton_core.errors import CheckpointError
    try:
        # fp32: compiling works on any CPU; the cache holds the same IR for every precision.
        model = CPVTONPlusModel(args.checkpoint_dir, device="cpu", precision="fp32",
                                backend="openvino", openvino_cache_dir=args.cache_dir)
        runner = model.person_parser                 # exported into the same cache folder
        logging.getLogger("openvino_backend").info("person parser ready (sha256 %s)",
                                                   runner.sha256[:12])
    except (CheckpointError, BackendUnavailable, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(model.networks.model_path.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
