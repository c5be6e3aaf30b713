"""Write CP-VTON+ checkpoints with deterministic random weights in the official format.

    python tools/make_random_checkpoints.py OUT_DIR
        -> OUT_DIR/GMM/gmm_final.pth, OUT_DIR/TOM/tom_final.pth

The recipe is that of the golden file (../shared/spec/CPVTON_PLUS.md §7): for tests and smoke runs
only. The outputs are meaningless images; the official weights come from download_checkpoints.sh.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from vton_core.weights import file_sha256, write_random_checkpoints


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path, help="folder to write GMM/ and TOM/ into")
    args = ap.parse_args(argv)
    for path in write_random_checkpoints(args.out_dir):
        print(f"{path}  sha256 {file_sha256(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
