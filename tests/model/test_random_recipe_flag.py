"""Issue 14, item 6: our deterministic random weights are flagged however they are loaded."""
from __future__ import annotations

import logging

import torch

from cpvton_infer import CPVTONPlusModel
from networks import build_gmm
from vton_core.weights import (
    GMM_FILE,
    GMM_SEED,
    TOM_FILE,
    TOM_SEED,
    is_random_recipe,
    load_checkpoint,
    matches_random_recipe,
    random_weights,
)


def test_recipe_recognised_in_memory_and_real_weights_are_not():
    gmm_state, tom_state = random_weights()
    assert matches_random_recipe(gmm_state, GMM_SEED) and matches_random_recipe(tom_state, TOM_SEED)
    assert is_random_recipe(gmm_state) and is_random_recipe(tom_state)
    # Any other weights (here: PyTorch's default init, or the recipe after one training-like
    # nudge) are not the recipe.
    assert not is_random_recipe(build_gmm().state_dict())
    nudged = {k: v.clone() for k, v in tom_state.items()}
    first = sorted(k for k in nudged if not k.endswith("num_batches_tracked"))[0]
    nudged[first].view(-1)[0] += 1e-6
    assert not is_random_recipe(nudged)


def test_recipe_files_are_flagged_by_the_model_and_warned_about(random_ckpt_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="weights"):
        load_checkpoint(build_gmm(), random_ckpt_dir / GMM_FILE)
    assert "RANDOM WEIGHTS" in caplog.text
    m = CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32")
    assert m.weights.random and m.weights.short()["random"]


def test_recipe_flagged_after_resaving_in_another_container(random_ckpt_dir, tmp_path):
    # Re-saved as float64 tensors in the legacy (non-zip) format: other bytes, other sha256,
    # same weights -> still flagged.
    for name in (GMM_FILE, TOM_FILE):
        state = torch.load(random_ckpt_dir / name, weights_only=True)
        out = tmp_path / name
        out.parent.mkdir(parents=True)
        torch.save({k: v.double() if v.is_floating_point() else v for k, v in state.items()}, out,
                   _use_new_zipfile_serialization=False)
    state = torch.load(tmp_path / GMM_FILE, weights_only=True)
    assert is_random_recipe(state)


def test_result_of_recipe_files_says_random(model):
    from PIL import Image

    person = Image.new("RGB", (192, 256), (200, 200, 200))
    cloth = Image.new("RGB", (192, 256), (255, 255, 255))
    import numpy as np
    parse = np.zeros((256, 192), np.uint8)
    parse[60:200, 60:130] = 5
    pose = [[96.0, 40.0, 1.0]] * 18
    res = model.try_on(person, cloth, parse=parse, pose=pose,
                       person_mask=(parse > 0).astype(np.uint8) * 255,
                       cloth_mask=np.full((256, 192), 255, np.uint8))
    assert res.random_weights
    assert any("random weights" in n for n in res.notes)
