"""MediaPipe models, loaded once per process (lazy singletons behind one lock).

Only the legacy ``mp.solutions`` graphs of mediapipe ≤ 0.10.21 are used: their ``.tflite``
files ship inside the wheel, so nothing is downloaded at run time. Pose uses
``model_complexity=1`` ("full"); complexity 2 ("heavy") is not bundled and would try to download.
MediaPipe graphs are not thread-safe, so every call goes through :func:`run`, which holds
``LOCK`` for the duration of the inference.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import tempfile
import threading
from typing import Any, Callable, Iterator

import numpy as np

from . import config as C
from .parser_runtime import INPUT_SIZE, ParserRunner, load_person_parser

log = logging.getLogger(__name__)

# MediaPipe's C++ side logs through glog/absl to stderr; keep it to errors unless the operator
# asked for more.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LOCK = threading.RLock()
_cache: dict[str, Any] = {}

#: Lines that MediaPipe's native code writes to the process's stderr (fd 2) when a graph is made
#: and when its calculators start (at the first runs), past any Python logger: TFLite's "INFO: Created TensorFlow Lite XNNPACK
#: delegate", absl's "before absl::InitializeLog()" notice, and absl/glog INFO and WARNING lines
#: ("W0000 00:00:1796598851.098512  7711 inference_feedback_manager.cc:114] ..."). Errors
#: (E..., F...) and anything else pass.
NATIVE_NOISE = re.compile(
    rb"^(INFO: Created TensorFlow Lite|WARNING: All log messages before absl::InitializeLog"
    rb"|[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\])")


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Keep MediaPipe's native INFO/WARNING lines (:data:`NATIVE_NOISE`) out of the worker's log
    unless it logs at DEBUG: fd 2 goes to a temporary file for the duration, and every line of
    it that is not such noise (Python log lines of other threads, tracebacks, native errors) is
    written back to stderr afterwards, in order. Called under ``LOCK``, so never nested."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:                 # no stderr at all (a daemon): nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True)
                    if not NATIVE_NOISE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def _solutions():
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except Exception:  # pragma: no cover - absl ships with mediapipe
        pass
    import mediapipe as mp
    return mp.solutions


_FACTORIES: dict[str, Callable[[Any], Any]] = {
    "pose": lambda s: s.pose.Pose(static_image_mode=True, model_complexity=1,
                                  enable_segmentation=True,
                                  min_detection_confidence=C.POSE_MIN_DETECTION),
    "selfie": lambda s: s.selfie_segmentation.SelfieSegmentation(model_selection=0),
    "face_detection": lambda s: s.face_detection.FaceDetection(
        model_selection=1, min_detection_confidence=C.FACE_MIN_DETECTION),
    "face_mesh": lambda s: s.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                refine_landmarks=False,
                                                min_detection_confidence=C.FACE_MIN_DETECTION),
}


def get(name: str):
    """The named MediaPipe graph, created on first use ("pose", "selfie", "face_detection",
    "face_mesh")."""
    with LOCK:
        model = _cache.get(name)
        if model is None:
            log.info("loading MediaPipe %s model", name)
            with _quiet_native_stderr():
                model = _FACTORIES[name](_solutions())
                # The graph's calculators open (and log) on its own threads after start_run:
                # wait for that here, so that their lines fall inside this window.
                graph = getattr(model, "_graph", None)
                if graph is not None and hasattr(graph, "wait_until_idle"):
                    graph.wait_until_idle()
            _cache[name] = model
        return model


def run(name: str, rgb: np.ndarray):
    """Run the named graph on an H×W×3 uint8 RGB array (C-contiguous), under the lock."""
    rgb = np.ascontiguousarray(rgb)
    with LOCK:
        graph = get(name)
        with _quiet_native_stderr():
            return graph.process(rgb)


def warm_up(parser: ParserRunner | None = None) -> None:
    """Load every model — the MediaPipe graphs and the person parser — now (e.g. at worker
    start) instead of on the first request, and run the parser once on a blank person (its
    first inference pays one-off costs).

    parser: the runner the requests will use (:func:`.parser_runtime.load_person_parser`);
    None: the torch runner.
    """
    for name in _FACTORIES:
        get(name)
    run = parser if parser is not None else load_person_parser()
    w, h = INPUT_SIZE
    run(np.zeros((h, w, 3), np.uint8))


@functools.lru_cache(maxsize=None)
def _connection_indices(name: str) -> np.ndarray:
    with LOCK:
        edges = getattr(_solutions().face_mesh, name)
    return np.array(sorted({i for e in edges for i in e}), dtype=np.int64)


def face_part_indices() -> dict[str, np.ndarray]:
    """Face-mesh landmark indices of the eye contours, by the person's side (MediaPipe's "LEFT"
    is the person's left, as in OpenPose)."""
    return {"r_eye": _connection_indices("FACEMESH_RIGHT_EYE"),
            "l_eye": _connection_indices("FACEMESH_LEFT_EYE")}
