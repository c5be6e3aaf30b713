"""Fitness checks run before a worker takes jobs (on RunPod the SDK runs them; locally
:func:`handler.main` does): each raises with a message naming what is wrong."""
from __future__ import annotations

import logging

from vton_core.devices import cuda_available
from vton_core.errors import CheckpointError
from worker.settings import Settings

log = logging.getLogger("cpvton.worker")


def check_gpu(settings: Settings) -> None:
    """Fitness check: with REQUIRE_GPU=1 (or DEVICE=cuda) a CUDA GPU must be visible."""
    if (settings.require_gpu or settings.device == "cuda") and not cuda_available():
        raise RuntimeError("REQUIRE_GPU=1 or DEVICE=cuda, but no CUDA GPU is visible")


def check_backend(settings: Settings) -> None:
    """Fitness check: BACKEND=openvino needs OpenVINO's CPU runtime (an error saying why not);
    with BACKEND=auto on a CPU worker, its absence is reported here (PyTorch runs the networks)."""
    from openvino_backend.prepared import torch_available
    if settings.backend == "torch":
        if not torch_available():
            raise RuntimeError("BACKEND=torch, but this install has no PyTorch (the CPU flavour "
                               "runs OpenVINO on a prepared export only): use BACKEND=auto or "
                               "openvino")
        return
    import openvino_backend
    try:
        openvino_backend.core()
    except openvino_backend.BackendUnavailable as exc:
        if settings.backend == "openvino":
            raise RuntimeError(f"BACKEND=openvino, but {exc}") from None
        if settings.device != "cuda" and not cuda_available():
            log.warning("BACKEND=auto on a CPU worker: %s; the networks run on PyTorch (slower)",
                        exc)


def check_checkpoints(settings: Settings) -> None:
    """Fitness check: both checkpoint files exist, or a prepared OpenVINO export records them
    (unless random weights are allowed and torch can make them). In a torch-free install (the
    CPU flavour) the error names the command that prepares the export."""
    from cpvton_infer import OPENVINO_CACHE_SUBDIR
    from openvino_backend.prepared import HOW_TO_PREPARE, read_record, torch_available
    from vton_core.checkpoints import GMM_FILE, HOW_TO_GET, TOM_FILE
    paths = (settings.gmm_checkpoint or settings.checkpoint_dir / GMM_FILE,
             settings.tom_checkpoint or settings.checkpoint_dir / TOM_FILE)
    missing = [path for path in paths if not path.is_file()]
    if not missing or (settings.allow_random_weights and torch_available()):
        return
    cache_dir = settings.openvino_cache_dir or settings.checkpoint_dir / OPENVINO_CACHE_SUBDIR
    if settings.backend != "torch" and read_record(cache_dir) is not None:
        return                   # validated when the model loads
    if not torch_available():
        raise CheckpointError(f"checkpoint not found: {missing[0]}, and no prepared OpenVINO "
                              f"export in {cache_dir}: this install has no torch (the CPU "
                              f"flavour), so {HOW_TO_PREPARE}")
    raise CheckpointError(f"checkpoint not found: {missing[0]}. {HOW_TO_GET}")
