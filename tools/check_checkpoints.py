"""Check that checkpoint files load strictly as the CP-VTON+ networks; print their sha256.

    python tools/check_checkpoints.py [CHECKPOINT_DIR]           # default: checkpoints/
    python tools/check_checkpoints.py --gmm GMM.pth --tom TOM.pth

A file passes when ``torch.load(weights_only=True)`` reads a plain state dict with exactly the
keys and shapes of the CP-VTON+ network (GMM input 22 + 1 channels, TOM 26 in / 4 out; the plain
CP-VTON files have other shapes). Prints ``GMM_SHA256=...`` / ``TOM_SHA256=...`` lines for the
worker's environment; our deterministic random test weights pass but are reported as such.
Exit status 0 when every file given passes, 1 otherwise (one line on stderr per problem).
download_checkpoints.sh runs this on every file it fetches. Reads only; writes nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from networks import CLOTH_CHANNELS, DEFAULT_CONFIG, MASK_CHANNELS, TOM_OUTPUT_CHANNELS, build_gmm, build_tom
from vton_core.errors import CheckpointError
from vton_core.weights import GMM_FILE, TOM_FILE, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

PLAIN_CPVTON_HINT = ("a plain CP-VTON checkpoint (not CP-VTON+) has other input channels: its GMM "
                     "takes the cloth's 3 channels instead of the mask's 1, its TOM 25 instead of 26")


def expected_io() -> dict[str, str]:
    """What each stage takes and gives, for the messages (from the network configuration)."""
    a = DEFAULT_CONFIG.agnostic_channels
    return {"GMM": f"input {a} + {MASK_CHANNELS} channels",
            "TOM": f"{a + CLOTH_CHANNELS + MASK_CHANNELS} in / {TOM_OUTPUT_CHANNELS} out"}


def check(stage: str, path: Path) -> str:
    """Load ``path`` strictly as ``stage`` ("GMM" or "TOM"); return its sha256.

    Raises :class:`CheckpointError` with a one-line reason."""
    with torch.device("meta"):                         # names and shapes only, no init
        module = build_gmm() if stage == "GMM" else build_tom()
    try:
        digest = load_checkpoint(module, path)
    except CheckpointError as err:
        reason = str(err).split(". Get the official")[0]
        if "wrong shape" in reason:
            reason += f" ({PLAIN_CPVTON_HINT})"
        raise CheckpointError(reason) from None
    return digest      # load_checkpoint logs a warning for our random test weights


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint_dir", nargs="?", type=Path, default=None,
                    help="folder with GMM/gmm_final.pth and TOM/tom_final.pth "
                         "(default: checkpoints/ in the repository, unless --gmm/--tom are given)")
    ap.add_argument("--gmm", type=Path, help="a GMM checkpoint file")
    ap.add_argument("--tom", type=Path, help="a TOM checkpoint file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    files = {"GMM": args.gmm, "TOM": args.tom}
    if args.checkpoint_dir is not None or not any(files.values()):
        folder = args.checkpoint_dir or ROOT / "checkpoints"
        files = {"GMM": args.gmm or folder / GMM_FILE, "TOM": args.tom or folder / TOM_FILE}
    ok = True
    for stage, path in files.items():
        if path is None:
            continue
        try:
            digest = check(stage, path)
        except CheckpointError as err:
            print(f"{stage}: error: {err}", file=sys.stderr)
            ok = False
            continue
        print(f"{stage}: {path} loads strictly as the CP-VTON+ {stage} "
              f"({expected_io()[stage]})", file=sys.stderr)
        print(f"{stage}_SHA256={digest}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
