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
    if settings.backend == "torch":
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
    """Fitness check: both checkpoint files exist (unless random weights are allowed)."""
    from vton_core.checkpoints import GMM_FILE, HOW_TO_GET, TOM_FILE
    if settings.allow_random_weights:
        return
    for path in (settings.gmm_checkpoint or settings.checkpoint_dir / GMM_FILE,
                 settings.tom_checkpoint or settings.checkpoint_dir / TOM_FILE):
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}. {HOW_TO_GET}")
