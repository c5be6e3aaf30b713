"""Regenerate grid.png, the 192×256 picture that visualises the TPS warp (black lines on white).

    python tools/make_grid.py [OUT]      # default: grid.png at the repository root
"""
from __future__ import annotations

import sys
from pathlib import Path

from cp_dataset import GRID_IMAGE, draw_grid


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else GRID_IMAGE
    draw_grid().save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
