"""Where the shared reference material lives (../shared beside the checkout) and how to read it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
VITON = SHARED / "data" / "viton"
PHOTOS = SHARED / "data" / "photos"
GOLDEN = SHARED / "golden" / "cpvton_plus_golden.npz"
SPEC_KEYS = SHARED / "spec" / "state_dict_keys.json"
NO_SHARED = "../shared (golden file, spec and VITON samples) is not beside this checkout"

needs_shared = pytest.mark.skipif(not GOLDEN.is_file(), reason=NO_SHARED)


def viton_pairs() -> list[tuple[str, str]]:
    lines = (VITON / "test_pairs.txt").read_text().split("\n")
    return [tuple(line.split()[:2]) for line in lines if line.strip()]


def viton_sample(person: str, cloth: str) -> dict:
    """try_on keyword inputs (paths / JSON) for one VITON pair."""
    stem = Path(person).stem
    t = VITON / "test"
    return {
        "person": t / "image" / person, "cloth": t / "cloth" / cloth,
        "parse": t / "image-parse-new" / f"{stem}.png",
        "pose": json.loads((t / "pose" / f"{stem}_keypoints.json").read_text()),
        "person_mask": t / "image-mask" / f"{stem}.png", "cloth_mask": t / "cloth-mask" / cloth,
    }
