"""What sizes CP-VTON+ and the predictor's option values, with no torch import.

The serving path on OpenVINO never imports torch (cold start, memory): everything it needs to know
about the model — its geometry and the names of backends, precisions and output sizes — lives
here, and ``networks`` / ``cpvton_infer`` import it from here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CPVTONConfig:
    """Everything that sizes the model. The defaults are those of the published checkpoints."""

    height: int = 256              # model input/output height (pixels)
    width: int = 192               # model input/output width (pixels)
    grid_size: int = 5             # TPS control points per side
    pose_radius: int = 5           # half-size of the square drawn per keypoint
    num_keypoints: int = 18        # COCO-18
    ngf: int = 64                  # base width of both networks
    gmm_downsamplings: int = 4     # stride-2 convs in each GMM feature extractor
    tom_downsamplings: int = 6     # U-Net depth
    max_channels: int = 512

    @property
    def agnostic_channels(self) -> int:
        """shape (1) + head RGB (3) + one map per keypoint."""
        return 1 + 3 + self.num_keypoints

    @property
    def feature_size(self) -> tuple[int, int]:
        """(h, w) of the GMM feature maps: 16×12 at 256×192."""
        f = 2 ** self.gmm_downsamplings
        return self.height // f, self.width // f

    @property
    def num_control_points(self) -> int:
        return self.grid_size * self.grid_size


DEFAULT_CONFIG = CPVTONConfig()

#: Numeric precisions of the networks (``PRECISION``; "auto" picks one per device).
PRECISIONS = ("fp32", "bf16", "fp16")
#: Where the networks run: PyTorch eager, or one OpenVINO graph (CPU only; see openvino_backend).
BACKENDS = ("torch", "openvino")
#: Size of the returned try-on: the person photo's, or the model's 192×256.
OUTPUT_SIZES = ("original", "model")
#: How the garment is drawn into a photo-size result: sampled from the garment photo at the
#: photo's resolution ("full"), or the model's 192×256 image upscaled ("model").
GARMENT_RESOLUTIONS = ("full", "model")
