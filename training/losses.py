"""Training losses of CP-VTON+ (Minar et al. 2020), written from the paper's definitions.

GMM:  L = L1(warped cloth, person's cloth region) + 40 · GIC(grid)
TOM:  L = L1(try-on, person) + VGG perceptual(try-on, person) + L1(composition mask, cloth parse)

All image tensors are B×C×H×W in [-1, 1] unless stated otherwise; masks are B×1×H×W in [0, 1];
grids are B×H×W×2 (x, y) in normalised coordinates. Nothing here downloads anything: the VGG19
weights come from a local state-dict file (:func:`load_vgg19_features`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vton_core.weights import load_state_file

log = logging.getLogger(__name__)

#: Weight of the grid-interval-consistency term in the GMM loss (CP-VTON+ paper).
GIC_WEIGHT = 40.0
#: VGG19 ``features`` indices that end the slices relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
VGG19_SLICE_ENDS = (2, 7, 12, 21, 30)
#: Weights of the five perceptual terms (shallow → deep), as in pix2pixHD / CP-VTON.
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


# ------------------------------------------------------------------------------------------------
# GMM
# ------------------------------------------------------------------------------------------------
def cloth_region(image: torch.Tensor, parse_cloth: torch.Tensor) -> torch.Tensor:
    """The GMM's target: the person's worn garment on white, ``image·pcm + (1 − pcm)``.

    image: B×3×H×W in [-1, 1]; parse_cloth: B×1×H×W in {0, 1} (upper clothes, dress, coat).
    Returns B×3×H×W in [-1, 1] (white = +1 outside the garment).
    """
    return image * parse_cloth + (1 - parse_cloth)


def gic_loss(grid: torch.Tensor) -> torch.Tensor:
    """Grid interval consistency (CP-VTON+ §3.1): a second-order smoothness term of the warp.

    For every interior sampling point, the x-distance to its left neighbour should equal the
    x-distance to its right neighbour, and the y-distance to the point above should equal the
    y-distance to the point below:
    ``Σ | |Gx(i,j−1) − Gx(i,j)| − |Gx(i,j+1) − Gx(i,j)| | + | |Gy(i−1,j) − Gy(i,j)| − |Gy(i+1,j) − Gy(i,j)| |``,
    divided by B·H·W (the number of grid entries per coordinate), as the paper's code did.

    grid: B×H×W×2 (x, y). Returns a scalar ≥ 0; it is 0 for any grid whose spacing is constant
    along rows (x) and columns (y) — the identity and every affine grid included.
    """
    b, h, w, _ = grid.shape
    gx, gy = grid[..., 0], grid[..., 1]
    left = (gx[:, 1:-1, :-2] - gx[:, 1:-1, 1:-1]).abs()
    right = (gx[:, 1:-1, 2:] - gx[:, 1:-1, 1:-1]).abs()
    up = (gy[:, :-2, 1:-1] - gy[:, 1:-1, 1:-1]).abs()
    down = (gy[:, 2:, 1:-1] - gy[:, 1:-1, 1:-1]).abs()
    total = (left - right).abs().sum() + (up - down).abs().sum()
    return total / (b * h * w)


def gmm_loss(warped_cloth: torch.Tensor, target: torch.Tensor, grid: torch.Tensor,
             gic_weight: float = GIC_WEIGHT) -> dict[str, torch.Tensor]:
    """The GMM training loss. warped_cloth, target: B×3×H×W; grid: B×H×W×2.

    Returns {"loss", "l1", "gic"} (scalars; ``loss = l1 + gic_weight · gic``).
    """
    l1 = F.l1_loss(warped_cloth, target)
    gic = gic_loss(grid)
    return {"loss": l1 + gic_weight * gic, "l1": l1, "gic": gic}


# ------------------------------------------------------------------------------------------------
# TOM
# ------------------------------------------------------------------------------------------------
def vgg_features_module(config: str = "E") -> nn.Sequential:
    """An untrained torchvision VGG ``features`` stack (no download): config "E" is VGG19,
    "D" VGG16. Built without the (large) classifier; the layer indices are torchvision's."""
    try:
        from torchvision.models.vgg import cfgs, make_layers
        return make_layers(cfgs[config], batch_norm=False)
    except ImportError:   # pragma: no cover - older/newer torchvision layouts
        from torchvision.models import vgg16, vgg19
        return (vgg19 if config == "E" else vgg16)(weights=None).features


def vgg19_features_module() -> nn.Sequential:
    """An untrained torchvision VGG19 ``features`` stack (no download)."""
    return vgg_features_module("E")


def load_vgg19_features(path: str | Path) -> nn.Sequential:
    """Build VGG19 ``features`` and load them strictly from a local file (``weights_only=True``).

    Accepts a full torchvision ``vgg19`` state dict (``features.N.weight``, ``classifier.*`` —
    the classifier is ignored) or a features-only one (``N.weight``). Raises ``FileNotFoundError``
    or ``ValueError`` (naming the file) on a missing or mismatching file.
    """
    path = Path(path)
    state = load_state_file(path, "VGG19")
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    features = vgg19_features_module()
    try:
        features.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not hold torchvision VGG19 weights: {exc}") from None
    return features


class VGG19Slices(nn.Module):
    """VGG19 ``features`` cut into the five slices ending at relu1_1 … relu5_1 (frozen).

    The input is used as given (B×3×H×W in [-1, 1]), as the CP-VTON reference did: no ImageNet
    re-normalisation, so that the loss matches the one the published checkpoints were trained with.
    """

    def __init__(self, features: nn.Sequential, slice_ends: Sequence[int] = VGG19_SLICE_ENDS):
        super().__init__()
        starts = (0,) + tuple(slice_ends[:-1])
        self.slices = nn.ModuleList(
            nn.Sequential(*[features[i] for i in range(a, b)]) for a, b in zip(starts, slice_ends))
        for m in self.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG19Slices":
        return super().train(False)   # always frozen (no dropout/BN inside anyway)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out


class VGGPerceptualLoss(nn.Module):
    """``Σ_k w_k · L1(φ_k(x), φ_k(y))`` over the relu{1..5}_1 features of VGG19 (targets detached).

    x, y: B×3×H×W in [-1, 1]. Returns a scalar.
    """

    def __init__(self, features: nn.Sequential, weights: Sequence[float] = VGG_LAYER_WEIGHTS):
        super().__init__()
        self.vgg = VGG19Slices(features)
        self.weights = tuple(weights)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.vgg(x)
        with torch.no_grad():
            fy = self.vgg(y)
        return sum(w * F.l1_loss(a, b) for w, a, b in zip(self.weights, fx, fy))


def tom_loss(tryon: torch.Tensor, image: torch.Tensor, composite_mask: torch.Tensor,
             parse_cloth: torch.Tensor, perceptual: nn.Module | None = None
             ) -> dict[str, torch.Tensor]:
    """The TOM training loss.

    tryon, image: B×3×H×W in [-1, 1]; composite_mask: B×1×H×W in [0, 1]; parse_cloth: B×1×H×W in
    {0, 1} (CP-VTON+ supervises the composition mask with the person's cloth mask, not the warped
    one); perceptual: a :class:`VGGPerceptualLoss`, or ``None`` to leave that term out (it is then
    reported as 0). Returns {"loss", "l1", "vgg", "mask"} (scalars).
    """
    l1 = F.l1_loss(tryon, image)
    vgg = perceptual(tryon, image) if perceptual is not None else tryon.new_zeros(())
    mask = F.l1_loss(composite_mask, parse_cloth)
    return {"loss": l1 + vgg + mask, "l1": l1, "vgg": vgg, "mask": mask}
