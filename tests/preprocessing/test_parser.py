"""The committed person parser: strict loading against its card, valid labels, and an IoU floor on
the ../shared VITON samples (never the VITON test split's other persons)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers.shared_data import VITON, needs_shared
from vton_preprocess.parser import (
    DEFAULT_WEIGHTS,
    NUM_LABELS,
    ParserConfig,
    PersonParser,
    card_path,
    fold_batchnorm,
    load_parser,
    parse_image,
    save_parser,
)

#: Grouped IoU floors on the three shared samples (pooled confusion matrix; the committed parser
#: measured head 0.938, hair 0.873, face 0.924, upper clothes 0.960, arms 0.890, lower body 0.915).
IOU_FLOORS = {"head": 0.90, "hair": 0.83, "face": 0.88, "upper_clothes": 0.92, "arms": 0.85,
              "lower_body": 0.87}


def test_committed_weights_load_strictly_and_match_their_card():
    from vton_core.weights import file_sha256

    card = json.loads(card_path(DEFAULT_WEIGHTS).read_text())
    assert file_sha256(DEFAULT_WEIGHTS) == card["sha256"]
    assert DEFAULT_WEIGHTS.stat().st_size <= 10_000_000
    model = load_parser()
    assert model.sha256 == card["sha256"] and not model.training
    state = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    assert set(state) == set(PersonParser(ParserConfig(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in card["config"].items()})).state_dict())


def test_tampered_or_reshaped_weights_are_refused(tmp_path):
    from vton_core.errors import CheckpointError

    model = PersonParser(ParserConfig())
    path = tmp_path / "p.pt"
    save_parser(model, path, {"what": "test"})
    load_parser(path)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="do not match"):
        load_parser(path)
    save_parser(PersonParser(ParserConfig(widths=(8, 16, 32, 64))), path, {"what": "test"})
    card = json.loads(card_path(path).read_text())
    card["config"]["widths"] = [24, 48, 96, 160]
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="shape"):
        load_parser(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_parser(tmp_path / "missing.pt")


@needs_shared
def test_parser_labels_the_shared_samples():
    from training.metrics import confusion_matrix, parse_ious
    from vton_core.images import load_label_map, load_rgb

    model = load_parser()
    conf = np.zeros((NUM_LABELS, NUM_LABELS), np.int64)
    for f in sorted((VITON / "test" / "image").glob("*.jpg")):
        labels = parse_image(model, np.asarray(load_rgb(f)))
        assert labels.shape == (256, 192) and labels.dtype == np.uint8
        assert labels.max() < NUM_LABELS
        gt = load_label_map(VITON / "test" / "image-parse-new" / f"{f.stem}.png")
        conf += confusion_matrix(labels, gt, NUM_LABELS)
    groups = parse_ious(conf)["groups"]
    for k, floor in IOU_FLOORS.items():
        assert groups[k] >= floor, (k, groups[k])


def test_folding_batchnorm_keeps_the_outputs():
    torch.manual_seed(0)
    model = PersonParser(ParserConfig())
    for m in model.modules():                     # non-trivial statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.rand(2, 3, 256, 192) * 2 - 1
    with torch.inference_mode():
        expected = model(x)
        got = fold_batchnorm(model)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
