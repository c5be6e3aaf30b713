"""CP-VTON+ inference: ``CPVTONPlusModel``, a predictor with a PIL/numpy API over the networks'
array API (``forward_arrays``, numpy) and tensor API (``forward_tensors``, torch).

    model = CPVTONPlusModel("checkpoints")                  # GMM/gmm_final.pth, TOM/tom_final.pth
    result = model.try_on("person.jpg", "cloth.jpg")        # parse/pose/masks computed if absent
    result.image.save("tryon.png")

Pipeline per pair (spec §1–3): person → 22-channel representations (GMM and TOM variants) →
GMM(agnostic, cloth mask) → TPS grid → warp cloth and mask → TOM(agnostic, warped cloth,
warped mask ≥ 0.5) → rendered person and composition mask → try-on. ``prepare_person`` /
``prepare_cloth`` do the per-image work once (so a person can be reused with many garments);
``run`` does one batched forward pass per stage.

torch is imported only where PyTorch runs the networks: with the OpenVINO backend and a warm export
cache, preparing, running and composing a try-on is numpy, PIL and OpenVINO alone (cold start and
memory; see README_RUNPOD.md § Performance). Prepared inputs are numpy arrays on either backend.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union

import numpy as np
from PIL import Image

import cp_dataset
from cp_dataset import (
    CLOTH_LABELS,
    LABELS,
    MASK_THRESHOLD,
    cloth_mask_array,
    keypoints_from_openpose,
    normalize,
    person_representations,
)
from vton_core.checkpoints import GMM_FILE, TOM_FILE, WeightsInfo, checked_file_sha256
from vton_core.compose import FullResolutionTryOn, fit_to_frame
from vton_core.devices import resolve_device_name
from vton_core.errors import CheckpointError, InvalidInput, NoCloth, NoPerson, VTONError
from vton_core.images import DEFAULT_MAX_PIXELS, check_same_size, load_label_map, load_mask, load_rgb
from vton_core.model_spec import (
    BACKENDS,
    DEFAULT_CONFIG,
    GARMENT_RESOLUTIONS,
    OUTPUT_SIZES,
    PRECISIONS,
    CPVTONConfig,
)

if TYPE_CHECKING:                       # annotations only: torch is imported where it runs
    import torch

log = logging.getLogger(__name__)

#: Keys of a pair mapping for ``try_on_batch``: the images, then the optional annotations.
PAIR_KEYS = ("person", "cloth", "parse", "pose", "person_mask", "cloth_mask")
#: One pair for ``try_on_batch``: ``(person, cloth)`` or a mapping of :data:`PAIR_KEYS`.
PairInput = Union[Sequence[Any], Mapping[str, Any]]

#: The export-cache name of the whole-pipeline OpenVINO graph.
PIPELINE_GRAPH = "cpvton_pipeline"
#: Folder of the export cache inside the checkpoint folder, unless another one is given.
OPENVINO_CACHE_SUBDIR = "openvino"
#: Parse labels that the try-on replaces when the result is pasted back into a photo:
#: the upper-body garment and the arms (the new garment may have other sleeves).
REPLACED_LABELS = CLOTH_LABELS + (14, 15)
#: The highest parse label CP-VTON+ knows (20, the neck); a caller's parse may hold 0..MAX_LABEL.
MAX_LABEL = max(LABELS.values())
#: Field names of the preprocessing API → the predictor's names (used in its errors).
_PERSON_FIELDS = {"image": "person_image", "pose": "person_pose", "parse": "person_parse",
                  "body_mask": "person_mask"}


# ------------------------------------------------------------------------------------------------
# Results and prepared inputs
# ------------------------------------------------------------------------------------------------
@dataclass
class PreparedPerson:
    """A person ready for the networks (model size H×W = 256×192).

    image: 3×H×W float32 in [-1, 1]; parse: H×W uint8 labels; body_mask: H×W bool; keypoints: 18×3 in
    model pixels; original: the photo as received (RGB); framing: how it maps to the model crop
    (``None`` when the photo already is 192×256 and was used as is). The two 22-channel
    representations are derived on demand (:meth:`representations`) rather than stored;
    :attr:`nbytes` is what the person holds (the worker's cache budget counts it).
    """

    image: np.ndarray
    parse: np.ndarray
    body_mask: np.ndarray
    keypoints: np.ndarray
    original: Image.Image
    framing: Any = None
    num_people: int = 1
    notes: tuple[str, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)
    cfg: CPVTONConfig = DEFAULT_CONFIG

    @property
    def nbytes(self) -> int:
        """Bytes this person holds: its model-size arrays and the photo (bytes per pixel × W × H)."""
        arrays = (self.image.nbytes + self.parse.nbytes
                  + self.body_mask.nbytes + np.asarray(self.keypoints).nbytes)
        photo = self.original.width * self.original.height * len(self.original.getbands())
        return int(arrays + photo)

    def representations(self) -> dict[str, np.ndarray]:
        """{"GMM": 22×H×W, "TOM": 22×H×W} float32 in [-1, 1] (spec §3)."""
        return person_representations(self.image, self.parse, self.body_mask, self.keypoints,
                                      self.cfg)


@dataclass
class PreparedCloth:
    """A garment ready for the networks: cloth 3×H×W float32 in [-1, 1], mask 1×H×W float32 in
    {0, 1}; original: the photo as received (RGB) and photo_mask its H×W bool garment mask (the
    full-resolution result samples both)."""

    cloth: np.ndarray
    mask: np.ndarray
    original: Image.Image
    photo_mask: np.ndarray
    notes: tuple[str, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class TryOnResult:
    """The try-on and its intermediates (PIL images of the model size, 192×256, unless noted).

    image: the result, at the person photo's size (``output_size="original"``; the garment drawn
    from its photo at that resolution with ``garment_resolution="full"``, or the model image
    upscaled with ``"model"``) or 192×256; model_image: the 192×256 synthesis; warped_cloth (RGB), warped_mask (L, before binarising),
    rendered (RGB), composite_mask (L), warped_grid (RGB); parse: 256×192 uint8 labels;
    keypoints: 18×3 in model pixels; random_weights: True when the weights were random.
    """

    image: Image.Image
    model_image: Image.Image
    warped_cloth: Image.Image
    warped_mask: Image.Image
    rendered: Image.Image
    composite_mask: Image.Image
    warped_grid: Image.Image
    parse: np.ndarray
    keypoints: np.ndarray
    random_weights: bool
    notes: tuple[str, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Array ↔ image helpers (pure)
# ------------------------------------------------------------------------------------------------
def to_uint8(x) -> np.ndarray:
    """C×H×W in [-1, 1] (numpy array or torch tensor) → H×W×C (or H×W) uint8, as the reference
    saved images: ``(x + 1) · 0.5 · 255`` in float32, clamped, truncated."""
    if hasattr(x, "detach"):                   # a torch tensor, on any device
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    a = np.clip((a + np.float32(1)) * np.float32(0.5) * np.float32(255), 0, 255).astype(np.uint8)
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def tensor_to_pil(x) -> Image.Image:
    """C×H×W in [-1, 1] (C = 1 or 3; numpy array or torch tensor) → PIL L or RGB."""
    return Image.fromarray(to_uint8(x))


def mask_to_pil(m) -> Image.Image:
    """1×H×W in [0, 1] → PIL L."""
    return tensor_to_pil(m * 2 - 1)


def replaced_region(parse: np.ndarray, warped_mask: np.ndarray) -> np.ndarray:
    """H×W float in [0, 1]: where the try-on changes the person (old garment, arms, new garment)."""
    return (np.isin(parse, REPLACED_LABELS) | (warped_mask >= 0.5)).astype(np.float32)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def _resolve_backend(backend: str, device: str) -> tuple[str, str]:
    """(backend, why): "auto" is OpenVINO on CPU (when it is installed, else PyTorch, logged),
    PyTorch on CUDA. An explicit "openvino" that cannot run raises at once."""
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, not {backend!r}")
    if backend == "openvino" and device != "cpu":
        raise ValueError(f"the OpenVINO backend runs on the CPU, not on {device}; "
                         "use BACKEND=torch or auto with a GPU")
    if backend != "auto":
        if backend == "openvino":
            import openvino_backend
            openvino_backend.core()           # raises BackendUnavailable with the reason
        else:
            _require_torch_backend("backend='torch' (BACKEND=torch)")
        return backend, "requested"
    if device != "cpu":
        _require_torch_backend(f"the {device} device")
        return "torch", f"auto: PyTorch on {device}"
    import openvino_backend
    try:
        openvino_backend.core()
    except openvino_backend.BackendUnavailable as exc:
        _require_torch_backend(f"BACKEND=auto without OpenVINO ({exc})")
        log.warning("BACKEND=auto: OpenVINO is unavailable (%s); the networks run on PyTorch, "
                    "which is slower on CPU", exc)
        return "torch", f"auto: OpenVINO unavailable ({exc})"
    return "openvino", "auto: OpenVINO on CPU"


def _require_torch_backend(what: str) -> None:
    """Raise :class:`openvino_backend.BackendUnavailable` when ``what`` needs PyTorch and this
    install has none (the CPU flavour, requirements_cpu.txt)."""
    from openvino_backend import BackendUnavailable
    from openvino_backend.prepared import torch_available
    if not torch_available():
        raise BackendUnavailable(f"{what} needs PyTorch, which this install does not have (the "
                                 "CPU flavour runs OpenVINO on prepared exports only): use "
                                 "BACKEND=auto or BACKEND=openvino on a CPU")


def _resolve_precision(precision: str, device) -> str:
    """PyTorch's precision on ``device`` (a torch.device): "auto" → bf16 on CPUs with native bf16,
    else fp32; on CUDA bf16, or fp16 where bf16 is unsupported."""
    import torch
    if precision == "auto":
        if device.type != "cuda":
            return "bf16" if cpu_has_native_bf16() else "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {PRECISIONS}, not {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is not supported on CPU; use bf16 or fp32")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("bf16 requested on a CPU without native bf16 support (no AVX512-BF16/AMX): "
                    "it runs, but far slower than fp32")
    return precision


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    import torch
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - older builds
        return False


@contextlib.contextmanager
def _person_field_names():
    """Re-raise the preprocessing's errors under the predictor's field names (``person_*``)."""
    try:
        yield
    except VTONError as err:
        if err.field not in _PERSON_FIELDS:
            raise
        raise err.with_field(_PERSON_FIELDS[err.field]) from None


def _preprocess_module():
    """The automatic preprocessing module, imported on first use (it loads MediaPipe)."""
    try:
        import vton_preprocess
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise InvalidInput(
            "automatic preprocessing is unavailable on this installation "
            f"({exc.name or exc}); supply person_parse, person_pose and person_mask "
            "for a 192x256 person image", field="person_image") from None
    return vton_preprocess


# ------------------------------------------------------------------------------------------------
# The builder
# ------------------------------------------------------------------------------------------------
@dataclass
class CPVTONNetworks:
    """GMM and TOM with their weights loaded, frozen, on ``device``; ``weights`` says which."""

    gmm: torch.nn.Module
    tom: torch.nn.Module
    weights: WeightsInfo
    device: torch.device
    channels_last: bool
    cfg: CPVTONConfig = DEFAULT_CONFIG
    backend_reason: str = "requested"   # why PyTorch runs them (BACKEND=auto explains itself)


@dataclass
class OpenVINONetworks:
    """GMM → warp → TOM as one OpenVINO graph for the CPU (``model_path``: its IR in the export
    cache ``cache_dir``), made from the weights that ``weights`` names. The predictor compiles
    it; the person parser's export goes to the same cache. ``device`` is the string "cpu" (no
    torch.device: this path does not import torch)."""

    model_path: Path
    weights: WeightsInfo
    cache_dir: Path
    cfg: CPVTONConfig = DEFAULT_CONFIG
    backend_reason: str = "requested"
    device: str = "cpu"
    channels_last: bool = False


@dataclass(frozen=True)
class WeightSources:
    """Where the networks' weights come from: the two checkpoint files, their expected sha256
    (or None), and ``random``: the deterministic random weights instead (allowed, and a file is
    missing)."""

    gmm_path: Path
    tom_path: Path
    gmm_sha256: str | None
    tom_sha256: str | None
    random: bool
    random_switch: str = "allow_random_weights=True"     # what allowed them, for the log


#: Why the weights are random when the checkpoint files themselves hold our test weights.
RANDOM_FILES_REASON = ("the checkpoint files are the deterministic random test weights "
                       "(tools/make_random_checkpoints.py)")


def _missing_reason(src: WeightSources) -> str:
    """Why in-memory random weights are used: which file is missing, and that they were allowed."""
    missing = [str(p) for p in (src.gmm_path, src.tom_path) if not p.is_file()]
    return (f"checkpoint not found: {', '.join(missing) or 'none'}; random weights allowed "
            f"({src.random_switch})")


def _load_networks(src: WeightSources, cfg: CPVTONConfig) -> tuple:
    """(gmm, tom, WeightsInfo) on the CPU, frozen: the files loaded strictly, or the random weights."""
    import torch

    from networks import build_gmm, build_tom
    from vton_core.weights import is_random_recipe, load_checkpoint, random_weights, state_dict_sha256
    # Built on the meta device (no random initialisation: it is replaced by the weights anyway,
    # and would cost cold-start time); the geometry buffers are computed for real.
    with torch.device("meta"):
        gmm, tom = build_gmm(cfg), build_tom(cfg)
    if src.random:
        gmm_state, tom_state = random_weights(cfg)
        gmm.load_state_dict(gmm_state, strict=True, assign=True)
        tom.load_state_dict(tom_state, strict=True, assign=True)
        weights = WeightsInfo(state_dict_sha256(gmm_state), state_dict_sha256(tom_state), random=True,
                              random_reason=_missing_reason(src))
        log.warning("RANDOM WEIGHTS (%s): results are meaningless", weights.random_reason)
    else:
        gmm_digest, tom_digest = load_checkpoint(gmm, src.gmm_path, src.gmm_sha256), load_checkpoint(tom, src.tom_path, src.tom_sha256)
        # Files written by tools/make_random_checkpoints.py are flagged like in-memory ones.
        random = is_random_recipe(gmm.state_dict()) or is_random_recipe(tom.state_dict())
        weights = WeightsInfo(gmm_digest, tom_digest, random=random, gmm_path=str(src.gmm_path), tom_path=str(src.tom_path),
                              random_reason=RANDOM_FILES_REASON if random else None)
    return gmm.requires_grad_(False), tom.requires_grad_(False), weights


def _build_openvino(src: WeightSources, cache_dir: Path, cfg: CPVTONConfig, reason: str) -> OpenVINONetworks:
    """The pipeline graph from the export cache, exported on a miss. The key is the checkpoint
    files' sha256 and whether they hold the random test weights is a fact the export recorded,
    so a cache hit imports no torch and reads no weights."""
    import openvino_backend
    from openvino_backend import prepared
    if not (src.gmm_path.is_file() and src.tom_path.is_file()):
        # No files: a prepared export serves (unless random weights are allowed and torch can
        # make them, as it always did); without torch nothing else can.
        record = prepared.read_record(cache_dir)
        if record is not None and not (src.random and prepared.torch_available()):
            return _prepared_openvino(record, src, cfg, reason)
        if not prepared.torch_available():
            raise CheckpointError(f"checkpoint not found: {src.gmm_path} or {src.tom_path}, and "
                                  f"no prepared OpenVINO export in {cache_dir}: this install has "
                                  f"no torch (the CPU flavour), so {prepared.HOW_TO_PREPARE}")
    random_nets = None           # random weights are made in memory: their hash needs them
    if src.random:
        gmm, tom, weights = _load_networks(src, cfg)
        random_nets = (gmm, tom)
        digests = (weights.gmm_sha256, weights.tom_sha256)
    else:
        digests = (checked_file_sha256(src.gmm_path, src.gmm_sha256),
                   checked_file_sha256(src.tom_path, src.tom_sha256))

    def export(xml_path: Path) -> dict:
        prepared.require_torch("these checkpoints", cache_dir)
        from openvino_backend.pipeline_graph import export_pipeline
        if random_nets is not None:
            export_pipeline(*random_nets, xml_path)
            return {"random": True}
        gmm, tom, loaded = _load_networks(src, cfg)
        if (loaded.gmm_sha256, loaded.tom_sha256) != digests:
            raise CheckpointError(f"{src.gmm_path} or {src.tom_path} changed while being loaded")
        export_pipeline(gmm, tom, xml_path)
        return {"random": loaded.random}

    identity = {"gmm_sha256": digests[0], "tom_sha256": digests[1], "config": repr(cfg)}
    path = openvino_backend.cached_model(cache_dir, PIPELINE_GRAPH, identity, export)
    random = src.random or bool(openvino_backend.model_facts(path).get("random", False))
    if random and not src.random:
        log.warning("RANDOM WEIGHTS: %s / %s hold the deterministic random test weights "
                    "(tools/make_random_checkpoints.py), not trained ones", src.gmm_path, src.tom_path)
    random_reason = _missing_reason(src) if src.random else (RANDOM_FILES_REASON if random else None)
    weights = WeightsInfo(*digests, random=random, random_reason=random_reason,
                          **({} if src.random else {"gmm_path": str(src.gmm_path),
                                                    "tom_path": str(src.tom_path)}))
    return OpenVINONetworks(path, weights, Path(cache_dir), cfg, reason)


def _prepared_openvino(record, src: WeightSources, cfg: CPVTONConfig, reason: str) -> OpenVINONetworks:
    """The pipeline graph of a prepared export (``record``, an
    :class:`openvino_backend.prepared.PreparedExport`), for a worker without the checkpoint
    files: its recorded identity must satisfy GMM_SHA256 / TOM_SHA256 where set, and weights
    generated in memory are served only where random weights are allowed."""
    from openvino_backend.prepared import HOW_TO_PREPARE
    if record.generated and not src.random:
        raise CheckpointError(f"checkpoint not found: {src.gmm_path} or {src.tom_path}; the "
                              f"OpenVINO export in {record.cache_dir} holds generated random "
                              "weights, served only with ALLOW_RANDOM_WEIGHTS=1 "
                              "(allow_random_weights=True)")
    for what, want, have in (("GMM", src.gmm_sha256, record.gmm_sha256),
                             ("TOM", src.tom_sha256, record.tom_sha256)):
        if want and want.strip().lower() != have:
            raise CheckpointError(f"the prepared OpenVINO export in {record.cache_dir} was made "
                                  f"from a {what} checkpoint with sha256 {have[:16]}…, not the "
                                  f"expected {want.strip().lower()[:16]}…: {HOW_TO_PREPARE}")
    identity = {"gmm_sha256": record.gmm_sha256, "tom_sha256": record.tom_sha256,
                "config": repr(cfg)}
    path = record.pipeline_xml(PIPELINE_GRAPH, identity)
    if record.random:
        log.warning("RANDOM WEIGHTS: the prepared OpenVINO export in %s was made from the "
                    "deterministic random test weights, not trained ones", record.cache_dir)
    log.info("serving the prepared OpenVINO export %s (no checkpoint files)", path.parent)
    weights = WeightsInfo(record.gmm_sha256, record.tom_sha256, random=record.random,
                          random_reason=(f"the prepared OpenVINO export in {record.cache_dir} was "
                                         "made from the random test weights") if record.random else None)
    return OpenVINONetworks(path, weights, record.cache_dir, cfg, reason)


def build_model(checkpoint_dir: str | os.PathLike = "checkpoints", device="auto", *,
                gmm_checkpoint: str | os.PathLike | None = None, tom_checkpoint: str | os.PathLike | None = None,
                gmm_sha256: str | None = None, tom_sha256: str | None = None,
                allow_random_weights: bool | None = None, channels_last: bool | str = "auto",
                cfg: CPVTONConfig = DEFAULT_CONFIG, backend: str = "auto",
                openvino_cache_dir: str | os.PathLike | None = None,
                random_weights_switch: str = "allow_random_weights=True") -> CPVTONNetworks | OpenVINONetworks:
    """Build GMM and TOM and load the CP-VTON+ checkpoints into them (strictly).

    Args:
        checkpoint_dir: folder holding ``GMM/gmm_final.pth`` and ``TOM/tom_final.pth``.
        device: "auto" (CUDA if visible, else CPU), "cpu", "cuda", "cuda:N" or a torch.device.
        gmm_checkpoint, tom_checkpoint: override the two file paths.
        gmm_sha256, tom_sha256: expected file hashes; a file with another hash is refused.
        allow_random_weights: only for smoke runs: if a checkpoint file is missing, use the
            deterministic random weights instead of failing; results then say ``random_weights``.
            None (the default): as the ALLOW_RANDOM_WEIGHTS variable says (``1``: allowed), the
            same switch as the worker's (read by :func:`worker.settings.random_weights_allowed`).
        random_weights_switch: how ``allow_random_weights`` was set, named in the log and in
            ``weights.random_reason`` (the worker passes "ALLOW_RANDOM_WEIGHTS=1").
        channels_last: NHWC memory format for the convolutions; "auto" = on CUDA only (the CPU
            measurement is in README_RUNPOD.md § Performance).
        backend: "auto" (OpenVINO on CPU, PyTorch on CUDA), "torch" or "openvino": with OpenVINO
            the result is :class:`OpenVINONetworks`, the whole of ``forward_tensors`` as one graph
            exported once per checkpoint pair into ``openvino_cache_dir`` (default
            ``checkpoint_dir/openvino``).

    Raises :class:`vton_core.errors.CheckpointError` (naming the path) for a missing or malformed
    file, :class:`openvino_backend.BackendUnavailable` for ``backend="openvino"`` without OpenVINO.
    """
    device_name = resolve_device_name(device)
    chosen, reason = _resolve_backend(backend, device_name)
    ckpt = Path(checkpoint_dir)
    gmm_path = Path(gmm_checkpoint) if gmm_checkpoint else ckpt / GMM_FILE
    tom_path = Path(tom_checkpoint) if tom_checkpoint else ckpt / TOM_FILE
    switch = random_weights_switch
    if allow_random_weights is None:
        from worker.settings import random_weights_allowed
        allow_random_weights, switch = random_weights_allowed(), "ALLOW_RANDOM_WEIGHTS=1"
    src = WeightSources(gmm_path, tom_path, gmm_sha256, tom_sha256, random=(
        allow_random_weights and not (gmm_path.is_file() and tom_path.is_file())), random_switch=switch)
    if chosen == "openvino":
        cache_dir = Path(openvino_cache_dir) if openvino_cache_dir else ckpt / OPENVINO_CACHE_SUBDIR
        return _build_openvino(src, cache_dir, cfg, reason)
    import torch
    dev = torch.device(device_name)
    gmm, tom, weights = _load_networks(src, cfg)
    nhwc = (dev.type == "cuda") if channels_last == "auto" else bool(channels_last)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    for net in (gmm, tom):
        net.to(dev, memory_format=fmt)
    return CPVTONNetworks(gmm, tom, weights, dev, nhwc, cfg, reason)


# ------------------------------------------------------------------------------------------------
# The predictor
# ------------------------------------------------------------------------------------------------
class CPVTONPlusModel:
    """CP-VTON+ try-on: preprocessing, batched inference and paste-back over built networks.

    Given ``networks`` (from :func:`build_model`) it uses them; otherwise it builds them with
    :func:`build_model` from ``checkpoint_dir``, ``device`` and the checkpoint options, which are
    documented there.

    Args:
        precision: "auto" (on CPU: bf16 where the CPU has native bf16, else fp32; on CUDA: bf16,
            or fp16 where bf16 is unsupported), "fp32", "bf16" or "fp16" (reduced precisions run
            under autocast on PyTorch; on OpenVINO the graph is compiled for it).
        max_pixels: decoded-pixel limit per input image.

    ``backend`` is "torch" or "openvino" (then ``gmm`` and ``tom`` are None: the networks are
    one compiled graph, ``device`` is the string "cpu" and torch is not imported),
    ``backend_reason`` why. The person parser runs on the same backend and precision.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike = "checkpoints", device="auto",
                 precision: str = "auto", *, networks: CPVTONNetworks | OpenVINONetworks | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, **build_options):
        if networks is None:
            networks = build_model(checkpoint_dir, device, **build_options)
        elif build_options:
            raise TypeError(f"build options {sorted(build_options)} given with built networks")
        self.networks = networks
        self.weights, self.backend_reason = networks.weights, networks.backend_reason
        self.cfg, self.device, self.channels_last = networks.cfg, networks.device, networks.channels_last
        self._graph = None
        self._parser = None
        if isinstance(networks, OpenVINONetworks):
            import openvino_backend
            self.backend, self.gmm, self.tom = "openvino", None, None
            self.precision = openvino_backend.resolve_precision(precision)
            self._graph = openvino_backend.CompiledGraph(networks.model_path, self.precision)
        else:
            self.backend, self.gmm, self.tom = "torch", networks.gmm, networks.tom
            self.precision = _resolve_precision(precision, self.device)
        self.max_pixels = max_pixels
        self.grid_image = cp_dataset.grid_image_array(self.cfg)        # 3×H×W in [-1, 1]

    @property
    def person_parser(self):
        """The learned person parser (:mod:`vton_preprocess`) on this model's backend: on
        OpenVINO exported once into the networks' export cache; loaded on first use."""
        if self._parser is None:
            preprocess = _preprocess_module()
            if self.backend == "openvino":
                self._parser = preprocess.load_person_parser(
                    "openvino", cache_dir=self.networks.cache_dir, precision=self.precision)
            else:
                self._parser = preprocess.load_person_parser("torch")
        return self._parser

    # -- configuration -------------------------------------------------------------------------
    @property
    def model_size(self) -> tuple[int, int]:
        """(W, H) of the networks' images."""
        return self.cfg.width, self.cfg.height

    def _autocast(self):
        import torch
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- per-image preparation -----------------------------------------------------------------
    def prepare_person(self, person, *, parse=None, pose=None, person_mask=None) -> PreparedPerson:
        """Decode the person photo and build both 22-channel representations.

        ``parse`` (label image/array), ``pose`` (OpenPose JSON dict or 18×3 array) and
        ``person_mask`` (body mask image/array) are in the photo's pixel coordinates and are used
        as given; whatever is missing is computed by :mod:`vton_preprocess`. A 192×256 photo is used
        as is; any other size is framed to a 3:4 box around the person.
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        image = load_rgb(person, field="person_image", max_pixels=self.max_pixels)
        parse_arr = None if parse is None else load_label_map(parse, field="person_parse",
                                                              max_label=MAX_LABEL,
                                                              max_pixels=self.max_pixels)
        mask_arr = None if person_mask is None else load_mask(person_mask, field="person_mask",
                                                              threshold=1, max_pixels=self.max_pixels)
        keypoints = None
        if pose is not None:
            try:
                keypoints = keypoints_from_openpose(pose, self.cfg.num_keypoints)
            except ValueError as exc:
                raise InvalidInput(str(exc), field="person_pose") from None
        for name, arr in (("person_parse", parse_arr), ("person_mask", mask_arr)):
            if arr is not None:
                check_same_size(arr, image.size, field=name, image_name="the person image")
        if mask_arr is not None and not mask_arr.any():
            raise NoPerson("the mask is empty (all black); the person must be non-zero (white)",
                           field="person_mask")
        if parse_arr is not None and not parse_arr.any():
            raise NoPerson("the label map holds only background (label 0)", field="person_parse")
        if keypoints is not None:
            from vton_preprocess.framing import check_keypoints_in_photo
            with _person_field_names():
                check_keypoints_in_photo(keypoints, image.size)
        timings["decode"] = _ms(t0)

        t1 = time.perf_counter()
        complete = parse_arr is not None and mask_arr is not None and keypoints is not None
        if complete and image.size == self.model_size:
            model_image, framing, num_people, notes = image, None, 1, ()
        else:
            with _person_field_names():
                prepared = _preprocess_module().person_model_inputs(
                    image, parse=parse_arr, pose=keypoints, body_mask=mask_arr,
                    parser=self.person_parser)
            model_image, framing = prepared.image, prepared.framing
            parse_arr, mask_arr, keypoints = prepared.parse, prepared.body_mask, prepared.keypoints
            num_people, notes = prepared.num_people, tuple(prepared.notes)
        timings["analysis"] = _ms(t1)

        return PreparedPerson(image=normalize(np.asarray(model_image)), parse=parse_arr,
                              body_mask=mask_arr, keypoints=keypoints, original=image,
                              framing=framing, num_people=num_people, notes=notes,
                              timings_ms=timings, cfg=self.cfg)

    def prepare_cloth(self, cloth, *, cloth_mask=None) -> PreparedCloth:
        """Decode the in-shop garment photo and its mask (computed by :mod:`vton_preprocess` if absent).

        A garment photo of another size than 192×256 is padded with white to 3:4 (centred) and
        resized; its mask follows the same transform. A photo of the garment worn by a person
        (a face that is not a print on it) is refused: ``InvalidInput`` naming ``cloth_image``.
        """
        t0 = time.perf_counter()
        image = load_rgb(cloth, field="cloth_image", max_pixels=self.max_pixels)
        if cloth_mask is not None:
            mask = load_mask(cloth_mask, field="cloth_mask", threshold=MASK_THRESHOLD,
                             max_pixels=self.max_pixels)
            check_same_size(mask, image.size, field="cloth_mask", image_name="the cloth image")
            photo_mask = mask                   # the caller's mask is the silhouette as given
        else:
            mask = _preprocess_module().segment_cloth(image)
        if not mask.any():
            raise NoCloth("the garment mask is empty", field="cloth_mask")
        _preprocess_module().check_garment_alone(image, mask)
        if cloth_mask is None:
            photo_mask = _preprocess_module().photo_resolution_mask(np.asarray(image), mask)
        # The model's 3:4 frame: scaled to touch it, centred, padded with white.
        model_image, model_mask = fit_to_frame(image, mask, self.model_size)
        return PreparedCloth(cloth=normalize(np.asarray(model_image)),
                             mask=cloth_mask_array(model_mask), original=image,
                             photo_mask=photo_mask, timings_ms={"cloth": _ms(t0)})

    # -- the networks --------------------------------------------------------------------------
    def forward_tensors(self, agnostic_gmm, agnostic_tom, cloth, cloth_mask) -> dict:
        """The tensor API: one forward pass per stage for a batch (torch tensors in and out).

        Inputs (on any device; moved to the model's): agnostic_gmm, agnostic_tom B×22×H×W in
        [-1, 1]; cloth B×3×H×W in [-1, 1]; cloth_mask B×1×H×W in {0, 1}.
        Returns float32 tensors on the model's device: theta B×50, grid B×H×W×2, warped_cloth
        B×3×H×W, warped_mask B×1×H×W (before binarising), rendered B×3×H×W, composite_mask
        B×1×H×W, tryon B×3×H×W, warped_grid B×3×H×W (grid.png warped by the grid); the
        timings are not included (see :meth:`run`). On OpenVINO the graph runs and its arrays
        are wrapped as tensors (this imports torch; :meth:`forward_arrays` does not).
        """
        import torch
        if self._graph is not None:
            return {name: torch.from_numpy(a) for name, a in self._forward_openvino(
                agnostic_gmm, agnostic_tom, cloth, cloth_mask).items()}
        from networks import tom_outputs, warp_cloth, warp_image
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode():
            agnostic_gmm, agnostic_tom, cloth, cloth_mask = (
                torch.as_tensor(t).to(self.device, non_blocking=True).contiguous(memory_format=fmt)
                for t in (agnostic_gmm, agnostic_tom, cloth, cloth_mask))
            with self._autocast():
                grid, theta = self.gmm(agnostic_gmm, cloth_mask)               # B×H×W×2, B×50
                warped, warped_mask = warp_cloth(cloth, cloth_mask, grid)      # B×3×H×W, B×1×H×W
                binary = (warped_mask >= 0.5).to(warped.dtype)
                raw = self.tom(torch.cat([agnostic_tom, warped, binary], 1))   # B×4×H×W
            rendered, composite, tryon = tom_outputs(raw.float(), warped.float())
            grid_image = torch.from_numpy(self.grid_image).to(self.device)
            warped_grid = warp_image(grid_image.expand(len(grid), -1, -1, -1), grid.float())
        return {"theta": theta.float(), "grid": grid.float(), "warped_cloth": warped.float(),
                "warped_mask": warped_mask.float(), "rendered": rendered,
                "composite_mask": composite, "tryon": tryon, "warped_grid": warped_grid}

    def forward_arrays(self, agnostic_gmm: np.ndarray, agnostic_tom: np.ndarray,
                       cloth: np.ndarray, cloth_mask: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`forward_tensors` with numpy arrays in and out (float32, the same names, shapes
        and meaning): what :meth:`run` calls. On OpenVINO no torch is involved."""
        if self._graph is not None:
            return self._forward_openvino(agnostic_gmm, agnostic_tom, cloth, cloth_mask)
        out = self.forward_tensors(agnostic_gmm, agnostic_tom, cloth, cloth_mask)
        return {name: t.cpu().numpy() for name, t in out.items()}      # .cpu() waits for CUDA

    def _forward_openvino(self, *inputs) -> dict[str, np.ndarray]:
        """The OpenVINO graph on numpy arrays (or CPU tensors) in ``PIPELINE_INPUTS`` order."""
        import openvino_backend
        arrays = {name: (a.detach().cpu().float().numpy() if hasattr(a, "detach") else a)
                  for name, a in zip(openvino_backend.PIPELINE_INPUTS, inputs)}
        return self._graph(arrays)

    def run(self, persons: PreparedPerson | Iterable[PreparedPerson],
            cloths: PreparedCloth | Iterable[PreparedCloth], *,
            output_size: str = "original", garment_resolution: str = "full") -> list[TryOnResult]:
        """Try ``cloths[i]`` on ``persons[i]`` for every i, one forward pass per stage.

        Either side may also be a single prepared item (or a one-item list), used for every
        item of the other side: one prepared person with many garments. Any iterables.
        ``output_size``: "original" (the person photo's size) or "model" (192×256);
        ``garment_resolution`` (for "original"): "full" draws the garment from its photo at the
        result's resolution through the upsampled grid (:mod:`vton_core.compose`), "model"
        upscales the 192×256 try-on.

        An item that is not prepared (a file path, bytes, a PIL image or an array: what
        :meth:`prepare_person` / :meth:`prepare_cloth` take) is prepared here first, with
        everything computed; anything else is :class:`InvalidInput` naming ``persons[i]`` /
        ``cloths[i]``."""
        persons = [self._prepared(p, f"persons[{i}]", PreparedPerson, self.prepare_person)
                   for i, p in enumerate(_items(persons, PreparedPerson))]
        cloths = [self._prepared(c, f"cloths[{i}]", PreparedCloth, self.prepare_cloth)
                  for i, c in enumerate(_items(cloths, PreparedCloth))]
        if len(persons) == 1 and len(cloths) > 1:
            persons = persons * len(cloths)
        elif len(cloths) == 1 and len(persons) > 1:
            cloths = cloths * len(persons)
        if len(persons) != len(cloths):
            raise ValueError("run() needs as many persons as cloths")
        if output_size not in OUTPUT_SIZES:
            raise InvalidInput(f"must be one of {OUTPUT_SIZES}", field="output_size")
        if garment_resolution not in GARMENT_RESOLUTIONS:
            raise InvalidInput(f"must be one of {GARMENT_RESOLUTIONS}", field="garment_resolution")
        if not persons:
            return []
        t0 = time.perf_counter()
        reps = [p.representations() for p in persons]
        rep_ms = _ms(t0)
        t0 = time.perf_counter()
        out = self.forward_arrays(np.stack([r["GMM"] for r in reps]),
                                  np.stack([r["TOM"] for r in reps]),
                                  np.stack([c.cloth for c in cloths]),
                                  np.stack([c.mask for c in cloths]))
        net_ms = _ms(t0)
        shared = {"representation": rep_ms, "networks": net_ms}
        return [self._result(i, p, c, out, output_size, garment_resolution, shared)
                for i, (p, c) in enumerate(zip(persons, cloths))]

    @staticmethod
    def _prepared(item: Any, where: str, kind: type, prepare) -> Any:
        """``item`` if it is a ``kind`` (PreparedPerson / PreparedCloth), else ``prepare(item)``
        for an image input; another type is InvalidInput naming ``where``."""
        if isinstance(item, kind):
            return item
        if not isinstance(item, IMAGE_INPUT_TYPES):
            raise InvalidInput(f"expected a {kind.__name__} or an image (a path, bytes, a PIL image "
                               f"or an array), got {type(item).__name__}", field=where)
        return prepare(item)

    def _result(self, i: int, person: PreparedPerson, cloth: PreparedCloth, out: dict,
                output_size: str, garment_resolution: str, batch_ms: dict) -> TryOnResult:
        t0 = time.perf_counter()
        model_image = tensor_to_pil(out["tryon"][i])
        warped_mask = out["warped_mask"][i]
        image = model_image
        if output_size == "original" and person.framing is not None:
            changed = replaced_region(person.parse, warped_mask[0])
            render = None                       # garment_resolution "model": upscaled
            if garment_resolution == "full":
                render = self.full_resolution(i, person, cloth, out).render
            image = person.framing.paste_back(person.original, model_image, changed, render)
        notes = person.notes + cloth.notes
        if self.weights.random:
            notes += ("random weights: the image is not a real try-on",)
        timings = {**person.timings_ms, **cloth.timings_ms, **batch_ms}
        result = TryOnResult(
            image=image, model_image=model_image, warped_cloth=tensor_to_pil(out["warped_cloth"][i]),
            warped_mask=mask_to_pil(warped_mask), rendered=tensor_to_pil(out["rendered"][i]),
            composite_mask=mask_to_pil(out["composite_mask"][i]),
            warped_grid=tensor_to_pil(out["warped_grid"][i]),
            parse=person.parse, keypoints=person.keypoints, random_weights=self.weights.random,
            notes=notes, timings_ms=timings)
        result.timings_ms["postprocess"] = _ms(t0)
        return result

    def full_resolution(self, i: int, person: PreparedPerson, cloth: PreparedCloth,
                        out: dict) -> FullResolutionTryOn:
        """Item ``i`` of the networks' outputs ``out`` (:meth:`forward_arrays`) ready to be drawn
        at the person photo's resolution (``person.framing`` must be set); the fitted garment
        has at most as many pixels as the person photo (or the model frame), so memory follows
        the photo."""
        box = person.framing.box
        photo = person.original
        return FullResolutionTryOn.build(
            grid=out["grid"][i], rendered=out["rendered"][i], composite=out["composite_mask"][i],
            warped_mask=out["warped_mask"][i], garment=cloth.original, garment_mask=cloth.photo_mask,
            box_width=box[2] - box[0],
            max_pixels=max(photo.width * photo.height, self.cfg.width * self.cfg.height))

    # -- convenience ---------------------------------------------------------------------------
    def try_on(self, person, cloth, *, parse=None, pose=None, person_mask=None, cloth_mask=None,
               output_size: str = "original", garment_resolution: str = "full") -> TryOnResult:
        """Try ``cloth`` on ``person``. Images: PIL, numpy arrays, file paths or encoded bytes.
        ``output_size`` and ``garment_resolution``: see :meth:`run`."""
        p = self.prepare_person(person, parse=parse, pose=pose, person_mask=person_mask)
        c = self.prepare_cloth(cloth, cloth_mask=cloth_mask)
        return self.run([p], [c], output_size=output_size, garment_resolution=garment_resolution)[0]

    def try_on_batch(self, pairs: Iterable[PairInput] | None = None, *, person: Any = None,
                     cloths: Iterable[Any] | None = None, output_size: str = "original",
                     garment_resolution: str = "full") -> list[TryOnResult]:
        """Many try-ons, one forward pass per stage; the same forms as the client's
        ``try_on_batch``:

        - ``pairs``: each a ``(person, cloth)`` tuple, or a mapping with ``person`` and ``cloth``
          and optionally ``parse``, ``pose``, ``person_mask``, ``cloth_mask`` (:data:`PAIR_KEYS`);
        - or one ``person`` (an image, or a :class:`PreparedPerson`) with ``cloths=[…]``: the
          person is analysed once.

        Raises :class:`vton_core.errors.InvalidInput` (field ``pairs[i]``) for any other form.
        """
        if (pairs is None) == (person is None):
            raise InvalidInput("give either pairs or person and cloths", field="pairs")
        if person is not None:
            prepared = person if isinstance(person, PreparedPerson) else self.prepare_person(person)
            cloth_list = [self.prepare_cloth(c) for c in cloths or ()]
            return self.run([prepared] * len(cloth_list), cloth_list, output_size=output_size,
                            garment_resolution=garment_resolution)
        persons, cloth_list = [], []
        for i, pair in enumerate(pairs):
            item = pair_mapping(pair, f"pairs[{i}]")
            persons.append(self.prepare_person(item["person"], parse=item.get("parse"),
                                               pose=item.get("pose"),
                                               person_mask=item.get("person_mask")))
            cloth_list.append(self.prepare_cloth(item["cloth"], cloth_mask=item.get("cloth_mask")))
        return self.run(persons, cloth_list, output_size=output_size,
                        garment_resolution=garment_resolution)


#: What ``run`` prepares itself: the image forms that ``load_rgb`` decodes.
IMAGE_INPUT_TYPES = (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)


def _items(value: Any, kind: type) -> list:
    """``value`` as a list of items: one prepared item or one image is a list of one."""
    if isinstance(value, (kind,) + IMAGE_INPUT_TYPES):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]              # not iterable: refused by name in run()


def pair_mapping(pair: PairInput, where: str = "pair") -> Mapping[str, Any]:
    """A ``(person, cloth)`` tuple or a mapping of :data:`PAIR_KEYS` as a mapping (checked)."""
    if isinstance(pair, Mapping):
        unknown = sorted(set(pair) - set(PAIR_KEYS))
        if unknown or "person" not in pair or "cloth" not in pair:
            raise InvalidInput(f"a mapping needs 'person' and 'cloth' and may have {PAIR_KEYS[2:]} "
                               f"(unknown: {unknown})", field=where)
        return pair
    if isinstance(pair, (tuple, list)) and len(pair) == 2:
        return {"person": pair[0], "cloth": pair[1]}
    raise InvalidInput(f"expected a (person, cloth) tuple or a mapping with 'person' and 'cloth', "
                       f"got {type(pair).__name__}", field=where)
