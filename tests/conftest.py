"""Shared fixtures: paths to ../shared, random-weight checkpoints, the golden file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
VITON = SHARED / "data" / "viton"
PHOTOS = SHARED / "data" / "photos"
GOLDEN = SHARED / "golden" / "cpvton_plus_golden.npz"
SPEC_KEYS = SHARED / "spec" / "state_dict_keys.json"
NO_SHARED = "../shared (golden file, spec and VITON samples) is not beside this checkout"

needs_shared = pytest.mark.skipif(not GOLDEN.is_file(), reason=NO_SHARED)


@pytest.fixture(scope="session")
def random_ckpt_dir(tmp_path_factory) -> Path:
    """A checkpoint folder with the deterministic random weights in the official format."""
    from weights import write_random_checkpoints

    d = tmp_path_factory.mktemp("checkpoints")
    write_random_checkpoints(d)
    return d


@pytest.fixture(scope="session")
def model(random_ckpt_dir):
    """A CPU fp32 PyTorch model loaded from the random-weight checkpoint files (the reference
    that the OpenVINO backend is compared with)."""
    from cpvton_infer import CPVTONPlusModel

    return CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32", backend="torch")


@pytest.fixture(scope="session")
def golden():
    if not GOLDEN.is_file():
        pytest.skip(NO_SHARED)
    with np.load(GOLDEN) as g:
        return {k: g[k] for k in g.files}


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
