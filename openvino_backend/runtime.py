"""Running an exported model on the CPU with OpenVINO: precision choice, compile, infer.

No torch here: a worker whose export cache is warm loads and compiles the IR with OpenVINO alone.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Mapping

import numpy as np

log = logging.getLogger(__name__)

#: Our precision names → OpenVINO's INFERENCE_PRECISION_HINT values.
_HINTS = {"fp32": "f32", "bf16": "bf16"}
DEVICE = "CPU"


class BackendUnavailable(RuntimeError):
    """The backend asked for cannot run here: OpenVINO not installed or without its CPU plugin,
    or PyTorch asked for in an install without it (the CPU flavour)."""


_CORE = None


def core():
    """The process's ``openvino.Core`` (one, so that device properties set on it, e.g. the
    benchmark's thread count, apply to every compile); raises :class:`BackendUnavailable` if
    OpenVINO is not installed or has no CPU plugin."""
    global _CORE
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailable(f"the openvino package is not installed ({exc})") from None
    if _CORE is None:
        c = ov.Core()
        if DEVICE not in c.available_devices:
            raise BackendUnavailable(f"OpenVINO has no {DEVICE} plugin (devices: {c.available_devices})")
        _CORE = c
    return _CORE


def cpu_capabilities(ov_core=None) -> tuple[str, ...]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU, e.g. ('BF16', 'FP32', 'INT8', ...)."""
    return tuple((ov_core or core()).get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))


def cpu_name(ov_core=None) -> str:
    return str((ov_core or core()).get_property(DEVICE, "FULL_DEVICE_NAME"))


def resolve_precision(requested: str, ov_core=None) -> str:
    """"auto" → bf16 where the CPU has native bf16 (OPTIMIZATION_CAPABILITIES lists BF16), else
    fp32. An explicit "bf16" on a CPU without it, or "fp16", is refused (ValueError) rather
    than silently run in another precision."""
    has_bf16 = "BF16" in cpu_capabilities(ov_core)
    if requested == "auto":
        return "bf16" if has_bf16 else "fp32"
    if requested == "bf16" and not has_bf16:
        raise ValueError("PRECISION=bf16 with the OpenVINO backend needs a CPU with native bf16 "
                         "(OPTIMIZATION_CAPABILITIES has no BF16 here); use fp32 or auto")
    if requested not in _HINTS:
        raise ValueError(f"the OpenVINO backend runs {tuple(_HINTS)} on CPU, not {requested!r}")
    return requested


class CompiledGraph:
    """An IR file compiled for the CPU; call it with named float32 arrays, get named arrays back
    (outputs by their tensor names, ``output<i>`` where a tensor has none).

    Thread-safe (one infer request, used under a lock: the CPU is saturated by one inference).
    Inputs and outputs keep the batch size of the call (the batch axis is dynamic).
    """

    def __init__(self, xml_path: Path, precision: str, ov_core=None):
        ov_core = ov_core or core()
        config = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        self.precision = precision
        self.compiled = ov_core.compile_model(ov_core.read_model(str(xml_path)), DEVICE, config)
        self.output_names = tuple(port.get_any_name() if port.get_names() else f"output{i}"
                                  for i, port in enumerate(self.compiled.outputs))
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in inputs.items()}
        with self._lock:
            self._request.infer(feed)
            return {name: self._request.get_output_tensor(i).data.copy()
                    for i, name in enumerate(self.output_names)}
