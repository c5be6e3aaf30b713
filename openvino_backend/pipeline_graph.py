"""The whole of ``CPVTONPlusModel.forward_tensors`` as one traceable module, and its export.

GMM → TPS grid → warp of cloth and mask → binarised mask → TOM → composite, with the same
inputs and outputs as the eager path (``PIPELINE_INPUTS`` → ``PIPELINE_OUTPUTS``). One
difference of form, none of meaning: the TPS grid is written as an elementwise multiply and a
sum instead of a matrix product, because OpenVINO's CPU plugin runs matrix products in bf16
under a bf16 precision hint (grid error ~1e-2, 34 dB) but keeps elementwise arithmetic in fp32.

Only the export imports this module (it needs torch); loading a cached export does not.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from cp_dataset import grid_image_array
from networks import GMM, TOM, feature_correlation, l2_normalize, tom_outputs, warp_cloth, warp_image
from openvino_backend.export_cache import PIPELINE_INPUTS, PIPELINE_OUTPUTS

#: Batch size of the example inputs used for tracing (the exported batch axis is dynamic).
TRACE_BATCH = 2


class PipelineGraph(nn.Module):
    """(agnostic_gmm, agnostic_tom B×22×H×W, cloth B×3×H×W, cloth_mask B×1×H×W) → the eight
    float32 outputs of ``forward_tensors``, in ``PIPELINE_OUTPUTS`` order (the last: grid.png
    warped by the grid, 3×H×W in [-1, 1], a constant of the graph)."""

    def __init__(self, gmm: GMM, tom: TOM):
        super().__init__()
        self.gmm, self.tom = gmm, tom
        self.register_buffer("grid_image", torch.from_numpy(grid_image_array(gmm.cfg))[None],
                             persistent=False)

    def tps_grid(self, theta: torch.Tensor) -> torch.Tensor:
        """θ B×2N → grid B×H×W×2, as ``TpsGridGen`` but as multiply + reduce (stays fp32)."""
        gen = self.gmm.gridGen
        b = theta.shape[0]
        q = theta.view(b, 2, gen.num_points) + gen.control_points            # B×2×N
        grid = (q.unsqueeze(2) * gen.kernel.view(1, 1, *gen.kernel.shape)).sum(-1)  # B×2×(H·W)
        return grid.transpose(1, 2).reshape(b, gen.height, gen.width, 2)

    def forward(self, agnostic_gmm, agnostic_tom, cloth, cloth_mask):
        gmm = self.gmm
        fa = l2_normalize(gmm.extractionA(agnostic_gmm))                      # B×512×16×12
        fb = l2_normalize(gmm.extractionB(cloth_mask))                        # B×512×16×12
        theta = gmm.regression(feature_correlation(fa, fb))                   # B×50
        grid = self.tps_grid(theta)                                           # B×H×W×2
        warped, warped_mask = warp_cloth(cloth, cloth_mask, grid)             # B×3×H×W, B×1×H×W
        binary = (warped_mask >= 0.5).to(warped.dtype)
        raw = self.tom(torch.cat([agnostic_tom, warped, binary], 1))          # B×4×H×W
        rendered, composite, tryon = tom_outputs(raw, warped)
        warped_grid = warp_image(self.grid_image.expand(theta.shape[0], -1, -1, -1), grid)
        return theta, grid, warped, warped_mask, rendered, composite, tryon, warped_grid


def export_pipeline(gmm: GMM, tom: TOM, xml_path: Path) -> None:
    """Convert the pipeline of ``gmm`` and ``tom`` (eval mode, CPU, fp32) to OpenVINO IR at
    ``xml_path`` (plus its ``.bin``), with a dynamic batch axis and named inputs/outputs."""
    import openvino as ov

    cfg = gmm.cfg
    h, w = cfg.height, cfg.width
    channels = {"agnostic_gmm": cfg.agnostic_channels, "agnostic_tom": cfg.agnostic_channels,
                "cloth": 3, "cloth_mask": 1}
    example = tuple(torch.zeros(TRACE_BATCH, channels[name], h, w) for name in PIPELINE_INPUTS)
    inputs = [(name, ov.PartialShape([-1, channels[name], h, w]), ov.Type.f32)
              for name in PIPELINE_INPUTS]
    graph = PipelineGraph(gmm, tom).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # OpenVINO traces with TorchScript, which warns that it is deprecated and that shape
        # checks become constants: both expected here (the shapes are fixed but the batch).
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = ov.convert_model(graph, example_input=example, input=inputs)
    for port, name in zip(model.outputs, PIPELINE_OUTPUTS):
        port.get_tensor().set_names({name})
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
