"""Running the learned person parser on either backend, without importing torch for OpenVINO.

A *runner* turns a framed person into labels: ``runner(rgb)`` with ``rgb`` a 256×192×3 uint8
RGB array returns the 256×192 uint8 argmax labels in 0–20 (LIP 0–19 + neck 20). It also says
what it runs: ``sha256`` (of the weights file, checked against its card), ``backend``
("torch" | "openvino") and ``precision`` ("fp32" | "bf16"). :func:`load_person_parser` builds
one per set of arguments, once per process.

- ``"torch"`` wraps :func:`vton_preprocess.parser.get_parser` / ``parse_image`` (fp32, CPU):
  the labels of the reference implementation. torch is imported when the runner is built.
- ``"openvino"`` runs the parser exported to OpenVINO IR (input normalisation, network and
  argmax in one graph) from the export cache (:func:`openvino_backend.cached_model`), keyed by
  the weights' sha256. On a cache hit only OpenVINO runs; torch is imported by the export alone.

The export cache folder defaults to :func:`default_cache_dir` (``~/.cache/cpvton_runpod/openvino``,
per user); the model passes the folder of its own OpenVINO graph, so one folder holds both.
This module holds the parser's constants that need no torch (:mod:`.parser` re-exports them).
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from vton_core.digest import file_sha256
from vton_core.errors import CheckpointError
from vton_core.model_spec import BACKENDS

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
#: The committed parser: weights and their card (same stem).
DEFAULT_WEIGHTS = ASSETS / "person_parser.pt"

NUM_LABELS = 21                 # LIP 0–19 + neck/skin 20 (spec §4)
INPUT_SIZE = (192, 256)         # (W, H) of the framed person the parser reads

#: Precisions a runner reports; the torch runner runs fp32 only.
PRECISIONS = ("fp32", "bf16")
#: Name of the parser's entries in the OpenVINO export cache.
OPENVINO_NAME = "person_parser"
#: Bump when the exported parser graph changes meaning (inputs, outputs, normalisation).
OPENVINO_GRAPH_VERSION = 1
#: Input and output tensor names of the exported graph.
OPENVINO_INPUT, OPENVINO_OUTPUT = "rgb", "labels"
#: The default export cache folder, under the user's home (see :func:`default_cache_dir`).
DEFAULT_CACHE_SUBDIR = Path(".cache") / "cpvton_runpod" / "openvino"


class ParserRunner(Protocol):
    """What :func:`load_person_parser` returns (see the module's docstring)."""

    sha256: str         # hex sha256 of the weights file (equal to its card's)
    backend: str        # one of BACKENDS
    precision: str      # one of PRECISIONS

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(256, 192, 3) uint8 RGB -> (256, 192) uint8 labels in 0–20."""


def card_path(weights: Path) -> Path:
    """The JSON card beside a weights file."""
    return Path(weights).with_suffix(".json")


def read_card(weights: str | Path) -> tuple[dict, str]:
    """(card, sha256) of a parser weights file whose sha256 equals its card's.

    Raises :class:`vton_core.errors.CheckpointError` when the file or its card is missing or the
    hashes differ (the message holds no path: the path is logged).
    """
    weights = Path(weights)
    card_file = card_path(weights)
    if not weights.is_file() or not card_file.is_file():
        log.error("person parser weights or card missing: %s", weights)
        raise CheckpointError("person parser weights not found")
    card = json.loads(card_file.read_text())
    digest = file_sha256(weights)
    if digest != card.get("sha256"):
        log.error("person parser %s: sha256 %s differs from its card's %s", weights, digest,
                  card.get("sha256"))
        raise CheckpointError("person parser weights do not match their card (sha256)")
    return card, digest


def default_cache_dir() -> Path:
    """The per-user export cache folder, ``~/.cache/cpvton_runpod/openvino`` (the caller's home
    at call time, not at import)."""
    return Path.home() / DEFAULT_CACHE_SUBDIR


def _check_input(rgb: np.ndarray) -> None:
    w, h = INPUT_SIZE
    if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
        raise ValueError(f"the person parser reads a ({h}, {w}, 3) uint8 RGB array, "
                         f"got {rgb.shape} {rgb.dtype}")


class TorchParserRunner:
    """The torch parser (fp32, CPU) behind the runner interface; labels identical to
    :func:`vton_preprocess.parser.parse_image` on :func:`~vton_preprocess.parser.get_parser`."""

    backend = "torch"
    precision = "fp32"

    def __init__(self, weights: Path = DEFAULT_WEIGHTS):
        from .parser import get_parser, load_parser, parse_image

        self._model = get_parser() if Path(weights) == DEFAULT_WEIGHTS else load_parser(weights)
        self._parse = parse_image
        self.sha256 = self._model.sha256

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(256, 192, 3) uint8 RGB -> (256, 192) uint8 labels in 0–20."""
        _check_input(rgb)
        return self._parse(self._model, rgb)


class OpenVINOParserRunner:
    """The parser exported to OpenVINO IR and compiled for the CPU at ``precision`` ("fp32" or
    "bf16", as :func:`openvino_backend.resolve_precision` resolved it for this CPU).

    The weights' sha256 is checked against their card (no torch); the IR comes from the export
    cache in ``cache_dir``, exported from the torch parser (:func:`.parser.export_openvino`) on a
    miss. Raises :class:`openvino_backend.BackendUnavailable` without OpenVINO and
    :class:`vton_core.errors.CheckpointError` for weights that do not match their card.
    """

    backend = "openvino"

    def __init__(self, weights: Path, cache_dir: Path, precision: str):
        import openvino_backend
        from openvino_backend import prepared
        from openvino_backend.runtime import CompiledGraph

        if precision not in PRECISIONS:
            raise ValueError(f"the OpenVINO person parser runs {PRECISIONS}, not {precision!r}")
        weights = Path(weights)
        _, self.sha256 = read_card(weights)
        sha = self.sha256

        def export(xml_path: Path) -> None:
            prepared.require_torch("the person parser", cache_dir)
            from .parser import export_openvino, load_parser

            model = load_parser(weights)
            if model.sha256 != sha:
                raise CheckpointError("person parser weights changed while being exported")
            export_openvino(model, xml_path)

        identity = {"parser_sha256": sha, "graph": str(OPENVINO_GRAPH_VERSION)}
        xml = openvino_backend.cached_model(cache_dir, OPENVINO_NAME, identity, export)
        self.model_path = xml                    # the IR in the export cache
        self.precision = precision
        self._graph = CompiledGraph(xml, precision)
        log.info("person parser on OpenVINO %s (sha256 %s)", precision, sha[:12])

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(256, 192, 3) uint8 RGB -> (256, 192) uint8 labels in 0–20."""
        _check_input(rgb)
        return self._graph({OPENVINO_INPUT: rgb[None]})[OPENVINO_OUTPUT][0]


@functools.lru_cache(maxsize=None)
def _cached_runner(backend: str, cache_dir: Path | None, precision: str, weights: Path) -> ParserRunner:
    if backend == "torch":
        return TorchParserRunner(weights)
    return OpenVINOParserRunner(weights, cache_dir, precision)


def load_person_parser(backend: str = "torch", *, cache_dir: str | Path | None = None,
                       precision: str = "fp32", weights: str | Path = DEFAULT_WEIGHTS) -> ParserRunner:
    """The person parser runner for ``backend``, built once per process and set of arguments.

    backend: "torch" (fp32 only; ``cache_dir`` is ignored) or "openvino".
    cache_dir: the OpenVINO export cache folder (default :func:`default_cache_dir`).
    precision: "fp32", "bf16", or for OpenVINO "auto" (bf16 where the CPU has native bf16,
        :func:`openvino_backend.resolve_precision`); the runner's ``precision`` is the one run.
    weights: the parser weights file, with its JSON card beside it.

    Raises ValueError for an unknown backend or precision, :class:`vton_core.errors.CheckpointError`
    for missing weights or weights that do not match their card, and
    :class:`openvino_backend.BackendUnavailable` for "openvino" where OpenVINO cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"person parser backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "torch":
        if precision != "fp32":
            raise ValueError(f"the torch person parser runs fp32 only, not {precision!r}")
        return _cached_runner(backend, None, precision, Path(weights).resolve())
    from openvino_backend.runtime import resolve_precision

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _cached_runner(backend, cache.resolve(), resolve_precision(precision),
                          Path(weights).resolve())
