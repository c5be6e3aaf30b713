"""Regenerate grid.png, the 192×256 picture that visualises the TPS warp (black lines on white).

    python tools/make_grid.py [OUT]      # default: grid.png at the repository root
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cp_dataset import GRID_IMAGE, draw_grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", type=Path, default=GRID_IMAGE,
                    help=f"PNG file to write (default: {GRID_IMAGE})")
    out = ap.parse_args(argv).out
    draw_grid().save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
