"""Automatic person and cloth preprocessing for CP-VTON+, offline, on CPU or GPU machines.

From two ordinary photos this derives what CP-VTON+ needs besides them: COCO-18 keypoints, a LIP
human-parsing map, a body mask (:func:`analyze_person`, :func:`person_model_inputs`) and the in-shop
garment mask (:func:`segment_cloth`). Models are MediaPipe's legacy solutions bundled in the
mediapipe 0.10.21 wheel, loaded once per process (``vton_preprocess.models``); the parsing and the
cloth mask are per-image colour/geometry modelling on top of them. The implementation lives in
this package's modules (``person``, ``parsing``, ``framing``, ``cloth``, ``models``, ``config``);
what is imported here is its public API.
"""
from __future__ import annotations

import numpy as np

from vton_core.errors import NoCloth
from vton_core.images import load_rgb
from vton_preprocess import config as _C
from vton_preprocess.cloth import segment_cloth_array
from vton_preprocess.framing import Framing, frame_person
from vton_preprocess.models import warm_up
from vton_preprocess.person import (
    ModelInputs,
    PersonAnalysis,
    analyze_person,
    analyze_rgb,
    landmarks_to_coco,
    person_model_inputs,
)

MODEL_SIZE = _C.MODEL_SIZE

__all__ = ["MODEL_SIZE", "PersonAnalysis", "analyze_person", "analyze_rgb", "segment_cloth",
           "Framing", "frame_person", "ModelInputs", "person_model_inputs", "landmarks_to_coco",
           "warm_up"]


def segment_cloth(image) -> np.ndarray:
    """H×W bool mask of the in-shop garment in ``image`` (PIL / array / path / bytes).

    Raises :class:`vton_core.errors.NoCloth` when no garment-sized foreground is found.
    """
    rgb = np.asarray(load_rgb(image, field="cloth"))
    mask = segment_cloth_array(rgb)
    if mask.mean() < _C.CLOTH_MIN_AREA_FRAC:
        raise NoCloth("no garment found in the cloth image", field="cloth")
    return mask
