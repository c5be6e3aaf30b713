"""The learned person parser: CP-VTON+'s 21 labels from a framed 192×256 person photo.

A compact U-Net (random init, trained by ``training/train_parser.py`` on the VITON train split)
maps a 3×256×192 RGB image to per-pixel logits over the LIP labels 0–19 plus CP-VTON+'s neck
label 20 (spec §4). Its weights ship with the project in ``assets/`` (fp16, ``weights_only``
torch file) beside a JSON card that records the data, the recipe, the validation IoUs and the
file's sha256; :func:`load_parser` checks the hash, the keys and every shape before use.

Nothing here picks a device: the caller moves the module, :func:`parse_image` reads the device
off it. This is the torch side (network, training, loading, export to OpenVINO); serving code
that may run without torch uses :mod:`.parser_runtime`, which holds the constants re-exported
here (:data:`NUM_LABELS`, :data:`INPUT_SIZE`, :data:`DEFAULT_WEIGHTS`, :func:`card_path`).
"""
from __future__ import annotations

import functools
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from vton_core.digest import file_sha256
from vton_core.errors import CheckpointError
from vton_core.weights import load_state_file

from .parser_runtime import (
    ASSETS,
    DEFAULT_WEIGHTS,
    INPUT_SIZE,
    NUM_LABELS,
    OPENVINO_INPUT,
    OPENVINO_OUTPUT,
    card_path,
    read_card,
)

__all__ = ["ASSETS", "DEFAULT_WEIGHTS", "INPUT_SIZE", "MIRRORED_LABELS", "NUM_LABELS", "ParserConfig",
           "ParserGraph", "PersonParser", "card_path", "export_openvino", "fold_batchnorm",
           "get_parser", "load_parser", "mirror_permutation", "parse_image", "save_parser", "to_input"]

log = logging.getLogger(__name__)

#: Label pairs that swap under a left/right mirror (arms, legs, shoes).
MIRRORED_LABELS = ((14, 15), (16, 17), (18, 19))
#: The network reads pixels as ``value / PIXEL_SCALE - 1``: uint8 0..255 -> [-1, 1].
PIXEL_SCALE = 127.5


@dataclass(frozen=True)
class ParserConfig:
    """Shape of :class:`PersonParser`; sizes of every layer derive from it."""
    widths: tuple[int, ...] = (24, 48, 96, 160)  # channels at 1/2, 1/4, 1/8, 1/16 of the input
    num_labels: int = NUM_LABELS                 # output classes
    context_dilation: int = 2                    # dilation of the last encoder conv (receptive field)


def mirror_permutation() -> torch.Tensor:
    """(NUM_LABELS,) long: label -> its mirror image's label (identity for unpaired labels)."""
    perm = torch.arange(NUM_LABELS)
    for a, b in MIRRORED_LABELS:
        perm[a], perm[b] = b, a
    return perm


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PersonParser(nn.Module):
    """U-Net: four stride-2 encoder stages, three decoder stages with skip connections, logits at
    half resolution up-sampled bilinearly to the input size.

    forward: (B, 3, H, W) float in [-1, 1] -> (B, num_labels, H, W) logits; H, W multiples of 16.
    """

    def __init__(self, cfg: ParserConfig = ParserConfig()):
        super().__init__()
        self.cfg = cfg
        w1, w2, w3, w4 = cfg.widths
        self.enc1 = nn.Sequential(_conv_bn_relu(3, w1, 2), _conv_bn_relu(w1, w1))       # 1/2
        self.enc2 = nn.Sequential(_conv_bn_relu(w1, w2, 2), _conv_bn_relu(w2, w2))      # 1/4
        self.enc3 = nn.Sequential(_conv_bn_relu(w2, w3, 2), _conv_bn_relu(w3, w3))      # 1/8
        self.enc4 = nn.Sequential(_conv_bn_relu(w3, w4, 2), _conv_bn_relu(w4, w4),
                                  _conv_bn_relu(w4, w4, dilation=cfg.context_dilation))  # 1/16
        self.dec3 = _conv_bn_relu(w4 + w3, w3)
        self.dec2 = _conv_bn_relu(w3 + w2, w2)
        self.dec1 = _conv_bn_relu(w2 + w1, w1)
        self.classifier = nn.Conv2d(w1, cfg.num_labels, 1)

    @staticmethod
    def _up_cat(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([x, skip], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.enc1(x)                                   # (B, w1, H/2, W/2)
        s2 = self.enc2(s1)                                  # (B, w2, H/4, W/4)
        s3 = self.enc3(s2)                                  # (B, w3, H/8, W/8)
        y = self.enc4(s3)                                   # (B, w4, H/16, W/16)
        y = self.dec3(self._up_cat(y, s3))                  # (B, w3, H/8, W/8)
        y = self.dec2(self._up_cat(y, s2))                  # (B, w2, H/4, W/4)
        y = self.dec1(self._up_cat(y, s1))                  # (B, w1, H/2, W/2)
        logits = self.classifier(y)                         # (B, L, H/2, W/2)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) or (H, W, 3) uint8 RGB -> (B, 3, H, W) float32 in [-1, 1]."""
    t = torch.from_numpy(np.require(rgb, np.uint8, ["C", "W"]))
    if t.ndim == 3:
        t = t[None]
    return t.permute(0, 3, 1, 2).float().div_(PIXEL_SCALE).sub_(1.0)


def load_parser(path: str | Path = DEFAULT_WEIGHTS) -> PersonParser:
    """The parser in eval mode (fp32, on the CPU) from a weights file and its card.

    The card's ``sha256`` must match the file and its ``config`` builds the network; keys and
    shapes must match exactly. Raises :class:`errors.CheckpointError` otherwise (the message
    holds no path: the path is logged).
    """
    path = Path(path)
    card, digest = read_card(path)
    cfg = ParserConfig(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in card["config"].items()})
    model = PersonParser(cfg)
    state = load_state_file(path, "person parser")
    expected = model.state_dict()
    if set(state) != set(expected):
        raise CheckpointError("person parser weights: keys differ from the network")
    bad = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"person parser weights: {len(bad)} tensors have the wrong shape")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    model = fold_batchnorm(model.eval())
    model.sha256 = digest
    return model


def fold_batchnorm(model: PersonParser) -> PersonParser:
    """Fold every BatchNorm into the convolution before it (inference only: the same outputs
    to float rounding, ~17 % less time on a CPU). ``model`` must be in eval mode; changed in
    place and returned."""
    for block in model.modules():
        if isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], nn.BatchNorm2d):
            block[0] = fuse_conv_bn_eval(block[0], block[1])
            block[1] = nn.Identity()
    return model


def save_parser(model: PersonParser, path: str | Path, card: dict) -> str:
    """Write the fp16 state dict and its card (with ``config`` and ``sha256`` added) atomically;
    returns the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).clone()
             for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    digest = file_sha256(path)
    card = {**card, "config": asdict(model.cfg), "sha256": digest}
    tmp_card = card_path(path).with_suffix(".json.tmp")
    tmp_card.write_text(json.dumps(card, indent=2) + "\n")
    tmp_card.replace(card_path(path))
    return digest


@functools.lru_cache(maxsize=1)
def get_parser() -> PersonParser:
    """The committed parser (:data:`DEFAULT_WEIGHTS`), loaded once per process on the CPU."""
    model = load_parser(DEFAULT_WEIGHTS)
    log.info("person parser loaded (sha256 %s)", model.sha256[:12])
    return model


@torch.inference_mode()
def parse_image(model: PersonParser, rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 framed person (H, W = 256, 192) -> (H, W) uint8 labels in 0–20."""
    device = next(model.parameters()).device
    logits = model(to_input(rgb).to(device))
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


class ParserGraph(nn.Module):
    """What the OpenVINO runner runs: :func:`to_input`'s normalisation, the parser and the argmax
    in one traceable module.

    forward: (B, H, W, 3) float32 RGB in [0, 255] (integer values) -> (B, H, W) uint8 labels.
    """

    def __init__(self, parser: PersonParser):
        super().__init__()
        self.parser = parser

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = rgb.permute(0, 3, 1, 2).div(PIXEL_SCALE).sub(1.0)   # (B, 3, H, W) in [-1, 1]
        logits = self.parser(x)                             # (B, L, H, W)
        return logits.argmax(1).to(torch.uint8)             # (B, H, W)


def export_openvino(model: PersonParser, xml_path: Path) -> None:
    """Convert ``model`` (eval mode, BatchNorm folded, CPU, fp32) with its normalisation and argmax
    (:class:`ParserGraph`) to OpenVINO IR at ``xml_path`` (plus its ``.bin``): one input
    ``rgb`` (1, 256, 192, 3) float32 in [0, 255], one output ``labels`` (1, 256, 192) uint8."""
    import openvino as ov

    w, h = INPUT_SIZE
    example = torch.zeros(1, h, w, 3)
    graph = ParserGraph(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # OpenVINO traces with TorchScript, which warns that it is deprecated and that shape
        # checks become constants: both expected here (the shapes are fixed).
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        converted = ov.convert_model(graph, example_input=example,
                                     input=[(OPENVINO_INPUT, ov.PartialShape([1, h, w, 3]), ov.Type.f32)])
    converted.outputs[0].get_tensor().set_names({OPENVINO_OUTPUT})
    ov.save_model(converted, str(xml_path), compress_to_fp16=False)
