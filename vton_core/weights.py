"""Checkpoint files: loud, strict loading, identity (sha256), and deterministic random weights.

The published checkpoints are plain ``state_dict``\\ s saved with ``torch.save``. They are loaded
with ``torch.load(weights_only=True)`` (no arbitrary code from a pickle) and checked key by key
and shape by shape before ``load_state_dict(strict=True)``; any problem is a
:class:`vton_core.errors.CheckpointError` that names the file and says how to get the official ones.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from networks import DEFAULT_CONFIG, CPVTONConfig, build_gmm, build_tom
from vton_core.checkpoints import (  # noqa: F401 - part of this module's API
    GMM_FILE,
    HOW_TO_GET,
    TOM_FILE,
    WeightsInfo,
    checked_file_sha256,
    file_sha256,
)
from vton_core.errors import CheckpointError

log = logging.getLogger(__name__)

#: Seeds of the deterministic random weights (spec §7; the golden file was made with these).
GMM_SEED = 1234
TOM_SEED = 5678
#: Leading tensors of the recipe compared to recognise its output (see matches_random_recipe).
RECIPE_FINGERPRINT_TENSORS = 3


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hex sha256 over sorted keys and tensor bytes (identity of in-memory weights)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_state_file(path: str | Path, what: str) -> dict:
    """A local ``weights_only`` state-dict file (auxiliary networks: VGG, LPIPS, Inception).

    Raises ``FileNotFoundError`` or ``ValueError`` naming the file; nothing is downloaded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict")
    return state


def check_state_dict(module: nn.Module, state: object, source: str) -> dict[str, torch.Tensor]:
    """Verify that ``state`` has exactly ``module``'s keys and shapes; return it as a dict."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source} is not a plain state_dict of tensors. {HOW_TO_GET}")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        hint = ""
        if any(k.startswith("module.") for k in unexpected):
            hint = " (keys start with 'module.': saved from DataParallel; strip that prefix)"
        raise CheckpointError(
            f"{source} does not match the CP-VTON+ architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}){hint}. "
            f"{HOW_TO_GET}")
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        k, got, want = wrong[0]
        raise CheckpointError(
            f"{source}: {len(wrong)} tensors have the wrong shape, e.g. {k}: {got} instead of "
            f"{want}. {HOW_TO_GET}")
    return state


def load_checkpoint(module: nn.Module, path: Path, expected_sha256: str | None = None) -> str:
    """Load ``path`` into ``module`` strictly; return the file's sha256.

    Raises :class:`CheckpointError` (naming ``path``) if the file is missing, unreadable,
    truncated, not a state dict, has other keys or shapes than the architecture, or (when
    ``expected_sha256`` is given) has another sha256 — a tampered or substituted file.
    """
    path = Path(path)
    digest = checked_file_sha256(path, expected_sha256)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, disallowed pickle globals, ...
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__} (truncated, corrupt or not a "
            f"weights-only torch file). {HOW_TO_GET}") from None
    state = check_state_dict(module, state, str(path))
    # assign=True: the loaded tensors become the parameters (also for a module built on the
    # meta device); every key is present, as checked above.
    module.load_state_dict(state, strict=True, assign=True)
    log.info("loaded %s (sha256 %s)", path, digest[:12])
    if is_random_recipe(state):
        log.warning("RANDOM WEIGHTS: %s holds the deterministic random test weights "
                    "(tools/make_random_checkpoints.py), not trained ones. %s", path, HOW_TO_GET)
    return digest


def _recipe_tensors(shapes: dict[str, tuple[torch.Size, torch.dtype]], seed: int
                    ) -> Iterator[tuple[str, torch.Tensor]]:
    """The deterministic random weights (spec §7, the golden file's recipe), key by key.

    Keys are visited in sorted order with one ``numpy.random.default_rng(seed)``; each tensor is
    drawn with its full shape in one call and cast to float32. Lazy, so that a caller can stop
    after the first few tensors (see :func:`matches_random_recipe`).
    """
    rng = np.random.default_rng(seed)
    for key in sorted(shapes):
        shape, dtype = tuple(shapes[key][0]), shapes[key][1]
        if key.endswith("num_batches_tracked"):
            yield key, torch.zeros(shape, dtype=dtype)      # as initialised
            continue
        if key.endswith("running_mean"):
            a = 0.1 * rng.standard_normal(shape)
        elif key.endswith("running_var"):
            a = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            a = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        elif key.endswith("weight"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            a = 0.1 * rng.standard_normal(shape)
        yield key, torch.from_numpy(np.asarray(a, dtype=np.float32))


def random_state_dict(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic random weights for ``module`` (spec §7, the golden file's recipe)."""
    shapes = {k: (v.shape, v.dtype) for k, v in module.state_dict().items()}
    return dict(_recipe_tensors(shapes, seed))


def matches_random_recipe(state: Mapping[str, torch.Tensor], seed: int) -> bool:
    """True when ``state`` holds our deterministic random weights for ``seed``.

    The recipe's stream is regenerated for the first :data:`RECIPE_FINGERPRINT_TENSORS` tensors
    (in sorted key order, the order they are drawn) and compared exactly. Those tensors are a
    fingerprint of the recipe that survives any way of storing or loading the weights (file
    format, re-saving, dtype of the container), while the file itself stays a plain, official
    state dict. Real weights differ at the first tensor, so the check costs microseconds.
    """
    shapes = {k: (v.shape, v.dtype) for k, v in state.items()}
    drawn = 0
    for key, expected in _recipe_tensors(shapes, seed):
        if key.endswith("num_batches_tracked"):
            continue
        if not torch.equal(state[key].detach().to("cpu", torch.float32), expected):
            return False
        drawn += 1
        if drawn == RECIPE_FINGERPRINT_TENSORS:
            return True
    return drawn > 0


def is_random_recipe(state: Mapping[str, torch.Tensor]) -> bool:
    """True when ``state`` (a GMM or a TOM state dict) is our deterministic random weights."""
    return any(matches_random_recipe(state, seed) for seed in (GMM_SEED, TOM_SEED))


def file_is_random_recipe(path: str | Path) -> bool:
    """Whether a checkpoint file holds our deterministic random weights, read memory-mapped (only
    the few tensors :func:`matches_random_recipe` compares are touched); an unreadable file is not."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:        # legacy (non-zip) files cannot be memory-mapped: read them whole
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return False
    return isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()) \
        and is_random_recipe(state)


def random_weights(cfg: CPVTONConfig = DEFAULT_CONFIG) -> tuple[dict, dict]:
    """The deterministic random (GMM, TOM) state dicts."""
    with torch.device("meta"):                      # only names and shapes are needed
        gmm, tom = build_gmm(cfg), build_tom(cfg)
    return random_state_dict(gmm, GMM_SEED), random_state_dict(tom, TOM_SEED)


def write_random_checkpoints(directory: str | Path, cfg: CPVTONConfig = DEFAULT_CONFIG
                             ) -> tuple[Path, Path]:
    """Write ``directory/GMM/gmm_final.pth`` and ``directory/TOM/tom_final.pth`` with the
    deterministic random weights, in the official format (plain state dicts)."""
    directory = Path(directory)
    gmm_state, tom_state = random_weights(cfg)
    paths = (directory / GMM_FILE, directory / TOM_FILE)
    for path, state in zip(paths, (gmm_state, tom_state)):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
    return paths
