"""Automatic person and cloth preprocessing for CP-VTON+, offline, on CPU or GPU machines.

From two ordinary photos this derives what CP-VTON+ needs besides them: COCO-18 keypoints, a LIP
human-parsing map, a body mask (:func:`analyze_person`, :func:`person_model_inputs`) and the in-shop
garment mask (:func:`segment_cloth`). Pose, people counting, body mask and framing come from
MediaPipe's legacy solutions bundled in the mediapipe 0.10.21 wheel, loaded once per process
(``vton_preprocess.models``); the parse from the project's own learned parser (``parser``, weights
in ``assets/``), run by torch or OpenVINO (:func:`load_person_parser`, passed as ``parser=``); the
cloth mask is per-image colour/edge modelling. The implementation lives in this package's modules
(``person``, ``parser``, ``parser_runtime``, ``framing``, ``cloth``, ``models``, ``config``); what
is imported here is its public API. Importing it does not import torch: only the torch parser
runner does, when it is built.
"""
from __future__ import annotations

import numpy as np

from vton_core.errors import InvalidInput, NoCloth
from vton_core.images import load_rgb
from vton_preprocess import config as _C
from vton_preprocess.cloth import find_wearer, photo_resolution_mask, segment_cloth_array
from vton_preprocess.framing import Framing, frame_person
from vton_preprocess.models import warm_up
from vton_preprocess.parser_runtime import ParserRunner, load_person_parser
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
           "photo_resolution_mask", "check_garment_alone",
           "Framing", "frame_person", "ModelInputs", "person_model_inputs", "landmarks_to_coco",
           "warm_up", "ParserRunner", "load_person_parser"]


def segment_cloth(image) -> np.ndarray:
    """H×W bool mask of the in-shop garment in ``image`` (PIL / array / path / bytes).

    Raises :class:`vton_core.errors.NoCloth` when no garment-sized foreground is found.
    """
    rgb = np.asarray(load_rgb(image, field="cloth"))
    mask = segment_cloth_array(rgb)
    if mask.mean() < _C.CLOTH_MIN_AREA_FRAC:
        raise NoCloth("no garment found in the cloth image", field="cloth")
    return mask


def check_garment_alone(image, mask: np.ndarray, *, field: str = "cloth_image") -> None:
    """Refuse a garment photo that shows a person wearing the garment (a face above or beside
    it, not printed on it): CP-VTON+ would warp the wearer's face and skin onto the try-on.

    ``image``: the garment photo (PIL / array / path / bytes); ``mask``: its H×W bool garment
    mask. Raises :class:`vton_core.errors.InvalidInput` naming ``field``.
    """
    rgb = np.asarray(load_rgb(image, field=field))
    if find_wearer(rgb, mask) is not None:
        raise InvalidInput(
            "the garment photo shows a person (a face was found): send the garment alone on a "
            "plain background, as an in-shop product photo", field=field)
