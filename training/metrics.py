"""Image metrics of the CP-VTON+ evaluation: SSIM, PSNR, mask IoU, and (from local weights) LPIPS
and the Inception Score.

Conventions: images are B×C×H×W float tensors in [0, 1] (use :func:`to_unit` for [-1, 1]); masks
are B×1×H×W (or B×H×W) booleans or floats thresholded at 0.5. Functions return one value per
image (a B tensor) so callers can average over whichever subset they need. Nothing is downloaded:
LPIPS and IS need their weight files given as paths.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vton_core.weights import load_state_file

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PSNR_MAX_DB = 100.0          # PSNR of identical images (MSE 0) is reported as this


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1]."""
    return (x + 1) * 0.5


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (float64)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image: B×C×H×W, B×C×H×W → B.

    Gaussian window (11 taps, σ = 1.5), K1 = 0.01, K2 = 0.03, population (co)variances; the local
    statistics are taken where the window lies inside the image, and the SSIM map is averaged over
    those positions and over channels. This equals ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=...)``.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two B×C×H×W tensors of one shape, got {x.shape} and {y.shape}")
    c = x.shape[1]
    x64, y64 = x.double(), y.double()
    g = gaussian_window(window, sigma).to(x.device)
    kh = g.view(1, 1, 1, -1).expand(c, 1, 1, window)
    kv = g.view(1, 1, -1, 1).expand(c, 1, window, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:   # separable 'valid' Gaussian filter per channel
        return F.conv2d(F.conv2d(t, kh, groups=c), kv, groups=c)

    mu_x, mu_y = blur(x64), blur(y64)
    var_x = blur(x64 * x64) - mu_x ** 2
    var_y = blur(y64 * y64) - mu_y ** 2
    cov = blur(x64 * y64) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3)).float()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: B×… , B×… → B (capped at ``PSNR_MAX_DB``).

    ``data_range`` is the span of the values: 1 for [0, 1], 2 for [-1, 1], 255 for 8-bit images.
    The project's one PSNR (evaluation, the bf16 test, the benchmark).
    """
    mse = ((x.double() - y.double()) ** 2).mean(dim=tuple(range(1, x.ndim)))
    out = 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-30))
    return out.clamp_max(PSNR_MAX_DB).float()


def mask_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union per image of two masks (B×1×H×W or B×H×W) binarised at
    ``threshold`` (≥). Two empty masks score 1. Returns B."""
    p = (pred >= threshold).flatten(1)
    t = (target >= threshold).flatten(1)
    inter = (p & t).sum(1).double()
    union = (p | t).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).float()


# ------------------------------------------------------------------------------------------------
# LPIPS (Zhang et al. 2018), VGG16 variant, from local weight files
# ------------------------------------------------------------------------------------------------
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
#: VGG16 ``features`` indices that end the slices relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_VGG16_ENDS = (4, 9, 16, 23, 30)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """LPIPS distance with a VGG16 backbone: B×3×H×W, B×3×H×W in [-1, 1] → B (lower = closer).

    ``backbone``: a torchvision ``vgg16`` state dict (full, or ``features`` only);
    ``linear``: the LPIPS v0.1 linear-layer file of the ``lpips`` package (``vgg.pth``, keys
    ``lin{k}.model.1.weight`` of shape 1×C_k×1×1). Features are unit-normalised over channels,
    their squared difference is weighted per channel, averaged over space and summed over layers.
    """

    def __init__(self, backbone: dict, linear: dict):
        super().__init__()
        from training.losses import vgg_features_module

        if any(k.startswith("features.") for k in backbone):
            backbone = {k[len("features."):]: v for k, v in backbone.items() if k.startswith("features.")}
        features = vgg_features_module("D")
        features.load_state_dict(backbone, strict=True)
        starts = (0,) + LPIPS_VGG16_ENDS[:-1]
        self.slices = nn.ModuleList(nn.Sequential(*[features[i] for i in range(a, b)])
                                    for a, b in zip(starts, LPIPS_VGG16_ENDS))
        for m in self.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        lin = []
        for k, ch in enumerate(LPIPS_CHANNELS):
            w = linear.get(f"lin{k}.model.1.weight", linear.get(f"lin{k}.weight"))
            if w is None or tuple(w.shape) != (1, ch, 1, 1):
                raise ValueError(f"LPIPS linear weights: lin{k} missing or not 1×{ch}×1×1")
            lin.append(w.float())
        self.lin = nn.ParameterList(nn.Parameter(w, requires_grad=False) for w in lin)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    @classmethod
    def from_files(cls, backbone_path: str | Path, linear_path: str | Path) -> "LPIPS":
        return cls(load_state_file(backbone_path, "LPIPS VGG16 backbone"),
                   load_state_file(linear_path, "LPIPS linear-layer"))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0])
        for fx, fy, w in zip(self._features(x), self._features(y), self.lin):
            total = total + F.conv2d((fx - fy) ** 2, w).mean(dim=(1, 2, 3))
        return total


# ------------------------------------------------------------------------------------------------
# Inception Score (Salimans et al. 2016), from a local Inception-v3 state dict
# ------------------------------------------------------------------------------------------------
def load_inception(path: str | Path) -> nn.Module:
    """torchvision Inception-v3 (1000 classes) loaded strictly from a local state dict; eval mode."""
    from torchvision.models import inception_v3

    state = load_state_file(path, "Inception-v3")
    net = inception_v3(weights=None, aux_logits=any(k.startswith("AuxLogits.") for k in state),
                       init_weights=False, transform_input=False)
    net.load_state_dict(state, strict=True)
    return net.requires_grad_(False).eval()


def inception_probs(classifier: nn.Module, images: torch.Tensor, size: int = 299,
                    batch_size: int = 16) -> torch.Tensor:
    """Class probabilities N×K of images N×3×H×W in [-1, 1], resized bilinearly to ``size``.

    The [-1, 1] input is what torchvision's Inception expects after ``transform_input``."""
    dev = next(classifier.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = F.interpolate(images[i:i + batch_size].to(dev).float(), size=(size, size),
                          mode="bilinear", align_corners=False)
        logits = classifier(x)
        if isinstance(logits, tuple):
            logits = logits[0]
        out.append(F.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out)


def inception_score(probs: torch.Tensor, splits: int = 1) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) ‖ p(y))) from N×K class probabilities → (mean, std over splits)."""
    n = probs.shape[0]
    splits = max(1, min(splits, n))
    scores = []
    for part in torch.tensor_split(probs.double(), splits):
        py = part.mean(0, keepdim=True)
        kl = (part * (torch.log(part.clamp_min(1e-12)) - torch.log(py.clamp_min(1e-12)))).sum(1)
        scores.append(math.exp(kl.mean().item()))
    t = torch.tensor(scores)
    return float(t.mean()), float(t.std(unbiased=False)) if len(scores) > 1 else 0.0


# ---------------------------------------------------------------------------------------------
# Person parsing
# ---------------------------------------------------------------------------------------------
#: Label groups reported for a person parse (LIP labels + 20 neck, spec §4).
PARSE_GROUPS = {
    "head": (1, 2, 4, 13), "hair": (2,), "face": (13,), "neck": (20,),
    "upper_clothes": (5, 6, 7), "arms": (14, 15), "lower_body": (8, 9, 12, 16, 17, 18, 19),
}


def confusion_matrix(pred, target, num_labels: int):
    """(L, L) int64 counts, rows = ground truth, columns = prediction, over all pixels of two
    integer label arrays of the same shape (values outside 0..L-1 are ignored)."""
    t = np.asarray(target, np.int64).ravel()
    p = np.asarray(pred, np.int64).ravel()
    ok = (t >= 0) & (t < num_labels) & (p >= 0) & (p < num_labels)
    return np.bincount(t[ok] * num_labels + p[ok], minlength=num_labels ** 2).reshape(
        num_labels, num_labels)


def group_iou(conf, labels) -> float | None:
    """IoU of the union of ``labels`` from a confusion matrix (None when absent in both)."""
    g = np.zeros(len(conf), bool)
    g[list(labels)] = True
    tp = conf[np.ix_(g, g)].sum()
    union = conf[g].sum() + conf[:, g].sum() - tp
    return float(tp / union) if union else None


def parse_ious(conf) -> dict:
    """Per-class IoU, the grouped IoUs of :data:`PARSE_GROUPS` and the mean IoU over the classes
    present in the ground truth, from one confusion matrix."""
    per_class = {i: group_iou(conf, (i,)) for i in range(len(conf))}
    present = [per_class[i] for i in range(len(conf)) if conf[i].sum() > 0]
    return {"per_class": per_class,
            "groups": {k: group_iou(conf, v) for k, v in PARSE_GROUPS.items()},
            "miou": float(sum(present) / len(present)) if present else None}
