"""The OpenVINO CPU backend: networks exported once per checkpoint pair and run as one graph.

- :mod:`openvino_backend.export_cache` — a cache of exported models keyed by sha256, written
  atomically and validated on load (generic: any torch module can use it).
- :mod:`openvino_backend.runtime` — precision choice from the CPU's capabilities, compile, infer.
- :mod:`openvino_backend.pipeline_graph` — the try-on pipeline as one traceable module and its
  export (imports torch; only needed on a cache miss).
"""
from openvino_backend.export_cache import (
                                           FORMAT_VERSION,
                                           PIPELINE_INPUTS,
                                           PIPELINE_OUTPUTS,
                                           cached_model,
                                           entry_dir,
                                           entry_problem,
                                           model_facts,
)
from openvino_backend.runtime import BackendUnavailable, CompiledGraph, core, cpu_capabilities, resolve_precision

__all__ = ["FORMAT_VERSION", "PIPELINE_INPUTS", "PIPELINE_OUTPUTS", "BackendUnavailable",
           "CompiledGraph", "cached_model", "core", "cpu_capabilities", "entry_dir",
           "entry_problem", "model_facts", "resolve_precision"]
