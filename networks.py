"""CP-VTON+ networks: the Geometric Matching Module (GMM) and the Try-On Module (TOM).

Module layouts and parameter names follow the published checkpoints exactly, so that
``gmm_final.pth`` and ``tom_final.pth`` load with ``strict=True`` (key list:
``../shared/spec/state_dict_keys.json``). Geometry constants (the TPS kernel, the output grid) are
non-persistent buffers: they follow ``.to(device, dtype)`` and never enter a state dict. Nothing here
picks a device; the caller does.

Conventions (spec §1–2): images are B×C×H×W in [-1, 1] at H×W = 256×192; ``grid_sample`` uses
``align_corners=True`` (the only behaviour of PyTorch 0.4.1, which trained the checkpoints) and the
TOM's bilinear ×2 up-sampling uses ``align_corners=False`` (the 0.4.x default).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vton_core.model_spec import DEFAULT_CONFIG, CPVTONConfig  # noqa: F401 - re-exported

# Channels of the TOM input: agnostic (22) + warped cloth RGB (3) + warped cloth mask (1).
CLOTH_CHANNELS = 3
MASK_CHANNELS = 1
# Channels of the TOM output: rendered person RGB (3) + composition mask (1).
TOM_OUTPUT_CHANNELS = CLOTH_CHANNELS + MASK_CHANNELS
L2_NORM_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# GMM
# --------------------------------------------------------------------------------------------
class FeatureExtraction(nn.Module):
    """Stride-2 conv pyramid: B×in_ch×256×192 → B×512×16×12.

    Layer order (and so state-dict indices) as in the checkpoints: conv, ReLU, BatchNorm — ReLU
    *before* BatchNorm — then two 3×3 convs, the last one without a norm.
    """

    def __init__(self, in_channels: int, cfg: CPVTONConfig = DEFAULT_CONFIG):
        super().__init__()
        layers: list[nn.Module] = []
        ch_in = in_channels
        for i in range(cfg.gmm_downsamplings):
            ch_out = min(cfg.ngf * 2 ** i, cfg.max_channels)
            layers += [nn.Conv2d(ch_in, ch_out, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                       nn.BatchNorm2d(ch_out)]
            ch_in = ch_out
        layers += [nn.Conv2d(ch_in, cfg.max_channels, 3, padding=1), nn.ReLU(inplace=True),
                   nn.BatchNorm2d(cfg.max_channels),
                   nn.Conv2d(cfg.max_channels, cfg.max_channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def l2_normalize(f: torch.Tensor) -> torch.Tensor:
    """Normalise B×C×h×w features over channels: ``f / sqrt(sum_c f² + 1e-6)``."""
    return f / torch.sqrt(torch.sum(f * f, dim=1, keepdim=True) + L2_NORM_EPS)


def feature_correlation(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """Correlation volume of two B×C×h×w feature maps → B×(h·w)×h×w.

    Output channel k enumerates the positions of ``fa`` in column-major order (k = x·h + y);
    the spatial positions are those of ``fb``: ``out[b, x·h + y, i, j] = <fa[b, :, y, x], fb[b, :, i, j]>``.
    """
    b, c, h, w = fa.shape
    fa_cols = fa.transpose(2, 3).reshape(b, c, h * w)    # B×C×(w·h), column-major positions
    fb_rows = fb.reshape(b, c, h * w)                    # B×C×(h·w), row-major positions
    corr = torch.bmm(fa_cols.transpose(1, 2), fb_rows)   # B×(hw)_a×(hw)_b
    return corr.view(b, h * w, h, w)


class FeatureRegression(nn.Module):
    """Correlation B×192×16×12 → TPS offsets B×50 in [-1, 1] (x offsets, then y offsets)."""

    def __init__(self, cfg: CPVTONConfig = DEFAULT_CONFIG):
        super().__init__()
        fh, fw = cfg.feature_size
        widths = (cfg.max_channels, cfg.max_channels // 2, cfg.max_channels // 4, cfg.max_channels // 8)
        kernels = (4, 4, 3, 3)
        strides = (2, 2, 1, 1)
        layers: list[nn.Module] = []
        ch_in = fh * fw
        for ch_out, k, s in zip(widths, kernels, strides):
            layers += [nn.Conv2d(ch_in, ch_out, k, stride=s, padding=1), nn.BatchNorm2d(ch_out),
                       nn.ReLU(inplace=True)]
            ch_in = ch_out
        self.conv = nn.Sequential(*layers)
        reduction = int(np.prod(strides))
        self.linear = nn.Linear(ch_in * (fh // reduction) * (fw // reduction),
                                2 * cfg.num_control_points)

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        x = self.conv(corr)                       # B×64×4×3
        x = self.linear(torch.flatten(x, 1))      # B×50
        return torch.tanh(x)


def tps_control_points(grid_size: int) -> np.ndarray:
    """Regular grid_size² control points over [-1, 1], N×2 (x, y), x varying slowest."""
    axis = np.linspace(-1.0, 1.0, grid_size)
    px, py = np.meshgrid(axis, axis, indexing="ij")     # px[i, j] = axis[i], py[i, j] = axis[j]
    return np.stack([px.reshape(-1), py.reshape(-1)], axis=1)


def _tps_u(d2: np.ndarray) -> np.ndarray:
    """TPS radial basis U(r²) = r²·log(r²), with U(0) = 0."""
    safe = np.where(d2 == 0, 1.0, d2)
    return d2 * np.log(safe)


def tps_kernel(cfg: CPVTONConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The linear map from target control points to the sampling grid, (H·W)×N float64.

    For target points Q (N per axis) the TPS interpolant evaluated at the output pixel p is
    ``[U(|p − P_n|²)_n, 1, p_x, p_y] · L⁻¹[:, :N] · Q``, with L the TPS system matrix of the
    control points P. The product of the first two factors depends on the geometry only, so it is
    computed once here (in float64) and the per-image work is one (H·W)×N by N×2 product.
    """
    ctrl = tps_control_points(cfg.grid_size)                          # N×2
    n = len(ctrl)
    d2 = ((ctrl[:, None, :] - ctrl[None, :, :]) ** 2).sum(-1)         # N×N
    p = np.concatenate([np.ones((n, 1)), ctrl], axis=1)               # N×3
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = _tps_u(d2)
    system[:n, n:] = p
    system[n:, :n] = p.T
    system_inv = np.linalg.inv(system)                                # (N+3)×(N+3)

    xs = np.linspace(-1.0, 1.0, cfg.width)
    ys = np.linspace(-1.0, 1.0, cfg.height)
    gx, gy = np.meshgrid(xs, ys)                                      # H×W each
    pts = np.stack([gx.reshape(-1), gy.reshape(-1)], axis=1)          # (H·W)×2
    d2p = ((pts[:, None, :] - ctrl[None, :, :]) ** 2).sum(-1)         # (H·W)×N
    basis = np.concatenate([_tps_u(d2p), np.ones((len(pts), 1)), pts], axis=1)  # (H·W)×(N+3)
    return basis @ system_inv[:, :n]                                  # (H·W)×N


class TpsGridGen(nn.Module):
    """TPS offsets θ (B×2N: x offsets then y offsets) → sampling grid B×H×W×2 (x, y) in [-1, 1]-ish."""

    def __init__(self, cfg: CPVTONConfig = DEFAULT_CONFIG):
        super().__init__()
        self.height, self.width = cfg.height, cfg.width
        self.num_points = cfg.num_control_points
        ctrl = tps_control_points(cfg.grid_size)
        self.register_buffer("kernel", torch.from_numpy(tps_kernel(cfg)).float(), persistent=False)
        self.register_buffer("control_points", torch.from_numpy(ctrl.T.copy()).float(),
                             persistent=False)                        # 2×N (x row, y row)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        b = theta.shape[0]
        q = theta.view(b, 2, self.num_points) + self.control_points  # B×2×N target points
        grid = torch.matmul(q, self.kernel.t())                      # B×2×(H·W)
        return grid.transpose(1, 2).reshape(b, self.height, self.width, 2)


class GMM(nn.Module):
    """Geometric Matching Module: (agnostic B×22×H×W, cloth mask B×1×H×W) → (grid B×H×W×2, θ B×50)."""

    def __init__(self, cfg: CPVTONConfig = DEFAULT_CONFIG):
        super().__init__()
        self.cfg = cfg
        self.extractionA = FeatureExtraction(cfg.agnostic_channels, cfg)
        self.extractionB = FeatureExtraction(MASK_CHANNELS, cfg)
        self.regression = FeatureRegression(cfg)
        self.gridGen = TpsGridGen(cfg)

    def forward(self, agnostic: torch.Tensor, cloth_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        fa = l2_normalize(self.extractionA(agnostic))    # B×512×16×12
        fb = l2_normalize(self.extractionB(cloth_mask))  # B×512×16×12
        theta = self.regression(feature_correlation(fa, fb))  # B×50
        # The TPS solve is done in float32 even under autocast: it is tiny and the grid must be exact.
        with torch.autocast(device_type=theta.device.type, enabled=False):
            grid = self.gridGen(theta.float())
        return grid, theta


def warp_cloth(cloth: torch.Tensor, cloth_mask: torch.Tensor, grid: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp cloth B×3×H×W (border padding) and mask B×1×H×W (zero padding) with grid B×H×W×2."""
    grid = grid.to(cloth.dtype)
    warped = F.grid_sample(cloth, grid, mode="bilinear", padding_mode="border", align_corners=True)
    warped_mask = F.grid_sample(cloth_mask, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=True)
    return warped, warped_mask


def warp_image(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Warp any B×C×H×W image with zero padding (used for the grid visualisation)."""
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


# --------------------------------------------------------------------------------------------
# TOM
# --------------------------------------------------------------------------------------------
class UnetBlock(nn.Module):
    """One level of the U-Net. ``self.model`` is a Sequential whose indices match the checkpoint:

    outermost: [down-conv, sub, ReLU, up, conv, norm]                 (no skip connection)
    middle:    [LeakyReLU, down-conv, norm, sub, ReLU, up, conv, norm] (output = cat(x, model(x)))
    innermost: [LeakyReLU, down-conv, ReLU, up, conv, norm]            (output = cat(x, model(x)))
    """

    def __init__(self, outer_ch: int, inner_ch: int, *, in_ch: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False):
        super().__init__()
        self.outermost = outermost
        innermost = submodule is None
        in_ch = outer_ch if in_ch is None else in_ch
        down_conv = nn.Conv2d(in_ch, inner_ch, 4, stride=2, padding=1, bias=True)
        up_in = inner_ch if innermost else inner_ch * 2
        up = [nn.ReLU(inplace=True), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
              nn.Conv2d(up_in, outer_ch, 3, stride=1, padding=1, bias=True), nn.InstanceNorm2d(outer_ch)]
        if outermost:
            layers = [down_conv, submodule, *up]
        elif innermost:
            layers = [nn.LeakyReLU(0.2), down_conv, *up]
        else:
            layers = [nn.LeakyReLU(0.2), down_conv, nn.InstanceNorm2d(inner_ch),
                      submodule, *up]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        # The skip connection carries the *activated* input: in the reference the LeakyReLU ran
        # in place on x before the concatenation, and the checkpoints were trained that way.
        h = self.model[0](x)
        y = h
        for i in range(1, len(self.model)):
            y = self.model[i](y)
        return torch.cat([h, y], 1)


class TOM(nn.Module):
    """Try-On Module (U-Net): B×26×H×W → B×4×H×W (pre-activation rendered RGB and composite mask).

    Use :func:`tom_outputs` to turn the raw output into the rendered person, mask and try-on.
    """

    def __init__(self, cfg: CPVTONConfig = DEFAULT_CONFIG):
        super().__init__()
        self.cfg = cfg
        in_ch = cfg.agnostic_channels + CLOTH_CHANNELS + MASK_CHANNELS
        top = cfg.max_channels
        widths = [min(cfg.ngf * 2 ** i, top) for i in range(cfg.tom_downsamplings)]  # 64..512
        block = UnetBlock(widths[-2], widths[-1])                                      # innermost
        for i in range(len(widths) - 2, 0, -1):
            block = UnetBlock(widths[i - 1], widths[i], submodule=block)
        self.model = UnetBlock(TOM_OUTPUT_CHANNELS, widths[0], in_ch=in_ch, submodule=block,
                               outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def tom_outputs(raw: torch.Tensor, warped_cloth: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw TOM output B×4×H×W → (rendered B×3×H×W in [-1, 1], mask B×1×H×W in [0, 1], try-on)."""
    rendered = torch.tanh(raw[:, :CLOTH_CHANNELS])
    mask = torch.sigmoid(raw[:, CLOTH_CHANNELS:])
    tryon = warped_cloth * mask + rendered * (1 - mask)
    return rendered, mask, tryon


def build_gmm(cfg: CPVTONConfig = DEFAULT_CONFIG) -> GMM:
    """A GMM in eval mode (BatchNorm uses running statistics)."""
    return GMM(cfg).eval()


def build_tom(cfg: CPVTONConfig = DEFAULT_CONFIG) -> TOM:
    """A TOM in eval mode."""
    return TOM(cfg).eval()
