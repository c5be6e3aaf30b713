"""Which compute device is there, asked without importing torch where the answer is plainly "CPU".

Importing torch costs about a second and 600 MB; a CPU worker on the OpenVINO backend never needs
it. Where no NVIDIA driver is loaded there is no CUDA GPU, so torch is consulted only where one is.
"""
from __future__ import annotations

import sys
from pathlib import Path

#: Present whenever the NVIDIA kernel driver is loaded (also inside containers given a GPU).
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
NVIDIA_DEVICE_GLOB = "nvidia[0-9]*"


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver or GPU device node is visible to this process."""
    return NVIDIA_DRIVER_FILE.exists() or any(Path("/dev").glob(NVIDIA_DEVICE_GLOB))


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch where no NVIDIA driver is present
    (and torch is not loaded already)."""
    if "torch" not in sys.modules and not nvidia_driver_present():
        return False
    try:
        import torch
    except ImportError:          # a torch-free install (the CPU flavour) on a GPU host
        return False
    return torch.cuda.is_available()


def resolve_device_name(device) -> str:
    """"auto" → "cuda" where a CUDA GPU is usable, else "cpu"; anything else (a string or a
    ``torch.device``) as its string. Raises RuntimeError for a CUDA device that is not there."""
    name = str(device)
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name.startswith("cuda") and not cuda_available():
        raise RuntimeError(f"device {name!r} was requested but no CUDA GPU is visible")
    return name
