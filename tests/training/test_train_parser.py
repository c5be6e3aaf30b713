"""The person parser's training command on the ../shared VITON samples: a few steps lower the
loss, an interrupted run resumes to the same weights, and the result loads strictly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.shared_data import VITON, needs_shared

pytestmark = needs_shared


def _args(tmp_path, steps, workdir="run"):
    from training.train_parser import parse_args
    return parse_args(["--dataroot", str(VITON / "test"), "--workdir", str(tmp_path / workdir),
                       "--out", str(tmp_path / workdir / "parser.pt"), "--steps", str(steps),
                       "--batch", "2", "--val", "1", "--save-every", "3", "--val-every", "100",
                       "--threads", "1", "--lr", "3e-3"])


def _plain_loss(model, root) -> float:
    """Cross-entropy of ``model`` on every sample of ``root``, without augmentation."""
    from training.parser_data import person_stems, read_person
    from vton_preprocess.parser import to_input
    pairs = [read_person(root, s) for s in person_stems(root)]
    x = to_input(np.stack([p[0] for p in pairs]))
    y = torch.from_numpy(np.stack([p[1] for p in pairs])).long()
    model.eval()
    with torch.inference_mode():
        return F.cross_entropy(model(x), y).item()


def test_neck_label_derived_like_cpvton_plus():
    """The derivation puts label 20 only on unlabelled pixels in the top half, and on the shared
    samples it agrees with CP-VTON+'s own image-parse-new on most neck pixels."""
    from training.parser_data import NECK, derive_neck
    from vton_core.images import load_label_map, load_rgb

    for f in sorted((VITON / "test" / "image-parse-new").glob("*.png")):
        new = load_label_map(f)
        rgb = np.asarray(load_rgb(VITON / "test" / "image" / f"{f.stem}.jpg"))
        lip = np.where(new == NECK, 0, new).astype(np.uint8)
        ours = derive_neck(rgb, lip)
        assert set(np.unique(ours)) <= set(np.unique(lip)) | {NECK}
        assert not (ours[ours.shape[0] // 2:] == NECK).any()
        assert (ours[lip > 0] == lip[lip > 0]).all()
        theirs = new == NECK
        if theirs.sum() > 50:
            inter = (theirs & (ours == NECK)).sum()
            assert inter / theirs.sum() > 0.6


def test_augmentation_keeps_labels_valid_and_mirrors_pairs():
    from training.parser_data import Augment, augment, make_backgrounds

    img = torch.full((2, 256, 192, 3), 255, dtype=torch.uint8)
    lab = torch.zeros((2, 256, 192), dtype=torch.uint8)
    lab[:, 100:200, 20:60] = 14           # a "left arm" on the image's left side
    img[:, 100:200, 20:60] = 90
    bgs = torch.from_numpy(make_backgrounds(4, seed=0))
    cfg = Augment(flip_p=1.0, scale=(1.0, 1.0), shift=0.0, rotate_deg=0.0)
    x, y = augment(img, lab, bgs, torch.Generator().manual_seed(0), cfg)
    assert x.shape == (2, 3, 256, 192) and y.shape == (2, 256, 192)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert set(torch.unique(y).tolist()) == {0, 15}        # mirrored: now the right arm
    assert (y[:, 150, 192 - 40] == 15).all()


@pytest.mark.slow
def test_few_steps_lower_the_loss_and_resume_matches(tmp_path, monkeypatch):
    import training.train_parser as tp
    from training.train_parser import train
    from vton_preprocess.parser import ParserConfig, PersonParser, load_parser

    torch.manual_seed(0)
    before = _plain_loss(PersonParser(ParserConfig()), VITON / "test")
    card = train(_args(tmp_path, 8, "full"))
    trained = load_parser(tmp_path / "full" / "parser.pt")
    after = _plain_loss(trained, VITON / "test")
    assert after < before, (before, after)
    assert card["recipe"]["steps"] == 8 and len(card["sha256"]) == 64
    assert set(card["validation_iou"]) >= {"head", "arms", "miou"}

    save = tp._save_state

    def save_then_stop(path, model, opt, step, args):
        save(path, model, opt, step, args)
        raise KeyboardInterrupt                        # the run is stopped after its first save

    monkeypatch.setattr(tp, "_save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(_args(tmp_path, 8, "split"))
    monkeypatch.setattr(tp, "_save_state", save)
    train(_args(tmp_path, 8, "split"))                 # the same command continues to 8
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_rare_label_batches_are_deterministic_and_dice_rewards_every_class():
    from training.train_parser import RARE_MIN_PIXELS, mixed_batch, rare_persons, soft_dice_loss

    labels = np.zeros((10, 16, 8), np.uint8)
    labels[3] = 6                                    # a dress over the whole map
    labels[7, :RARE_MIN_PIXELS // 8 + 1] = 16        # a leg just above the pixel floor
    labels[8, 0, :4] = 12                            # a few skirt pixels: below it
    rare = rare_persons(labels, chunk=4)
    assert rare.tolist() == [3, 7]
    batch = mixed_batch(5, 8, 10, rare, 0.5, seed=0)
    assert len(batch) == 8 and np.isin(batch[4:], rare).all()
    assert (batch == mixed_batch(5, 8, 10, rare, 0.5, seed=0)).all()
    assert (mixed_batch(5, 8, 10, rare, 0.0, seed=0) == mixed_batch(5, 8, 10, rare[:0], 0.5, 0)).all()

    target = torch.from_numpy(labels[[3, 7]].astype(np.int64))
    exact = F.one_hot(target, 21).permute(0, 3, 1, 2).float() * 50
    assert float(soft_dice_loss(exact, target)) < 1e-3
    assert float(soft_dice_loss(torch.zeros_like(exact), target)) > 0.5


@pytest.mark.slow
def test_a_second_phase_starts_from_the_first_and_its_card_lists_both(tmp_path):
    from training.train_parser import parse_args, train
    from vton_preprocess.parser import load_parser

    first = train(_args(tmp_path, 3, "phase1"))
    second_args = parse_args([
        "--dataroot", str(VITON / "test"), "--workdir", str(tmp_path / "phase2"),
        "--out", str(tmp_path / "phase2" / "parser.pt"), "--steps", "2", "--batch", "2",
        "--val", "1", "--threads", "1", "--init", str(tmp_path / "phase1" / "parser.pt"),
        "--rare-fraction", "0.5", "--dice", "1"])
    card = train(second_args)
    assert card["init"]["sha256"] == first["sha256"]
    assert card["recipe"]["rare_fraction"] == 0.5 and card["recipe"]["dice"] == 1.0
    assert len(card["retrain"]) == 2
    assert "--out /tmp/parser_phase1.pt" in card["retrain"][0]
    assert "--init /tmp/parser_phase1.pt" in card["retrain"][1]
    load_parser(tmp_path / "phase2" / "parser.pt")
