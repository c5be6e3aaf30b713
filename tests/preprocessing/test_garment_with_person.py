"""Issue 14, item 10: a garment photo that shows a person wearing it is refused with a clear
error naming ``cloth_image``; ordinary garment photos (and faces printed on a garment) pass."""
from __future__ import annotations

import numpy as np
import pytest

import handler
import vton_preprocess as preprocess
from tests.helpers.shared_data import PHOTOS, VITON, needs_shared
from tests.helpers.worker_inputs import b64, person_fields
from vton_core.errors import InvalidInput
from vton_core.images import load_rgb
from vton_preprocess import models
from vton_preprocess.cloth import face_is_printed
from worker import sample_images
from worker.settings import Settings

GARMENTS = sorted([*(VITON / "test" / "cloth").glob("*"), *(PHOTOS / "cloth").glob("*")])
# Person photos of ../shared whose face the detector finds at full size.
WORN = [PHOTOS / "person" / name for name in ("01008_00.jpg", "05997_00.jpg", "model_1.png")]


def test_face_is_printed_geometry():
    mask = np.zeros((100, 100), bool)
    mask[10:90, 10:90] = True                           # a shirt
    assert face_is_printed((40, 40, 60, 60), mask)       # a face in the middle of it
    head = np.zeros((100, 100), bool)
    head[0:30, 40:60] = True                             # a head ...
    head[30:100, 20:80] = True                           # ... above a body
    assert not face_is_printed((42, 5, 58, 25), head)
    assert not face_is_printed((40, 40, 60, 60), np.zeros((100, 100), bool))


@needs_shared
@pytest.mark.parametrize("path", GARMENTS, ids=lambda p: p.name)
def test_every_shared_garment_photo_passes(model, path):
    prepared = model.prepare_cloth(path)                 # mask computed, then the check
    assert prepared.mask.any()


def test_drawn_garment_passes(model):
    assert model.prepare_cloth(sample_images.garment(384, 512)).mask.any()


@needs_shared
@pytest.mark.parametrize("path", WORN, ids=lambda p: p.name)
def test_person_photo_as_garment_is_refused(model, path):
    with pytest.raises(InvalidInput) as info:
        model.prepare_cloth(path)
    assert info.value.field == "cloth_image" and "shows a person" in info.value.message


@needs_shared
def test_face_printed_on_a_garment_passes():
    person = load_rgb(WORN[0])
    det = models.run("face_detection", np.asarray(person)).detections[0]
    r = det.location_data.relative_bounding_box
    w, h = person.size
    face = person.crop((int(r.xmin * w), int(r.ymin * h), int((r.xmin + r.width) * w),
                        int((r.ymin + r.height) * h)))
    shirt = load_rgb(PHOTOS / "cloth" / "00126_00.jpg").copy()
    shirt.paste(face, (shirt.width // 2 - face.width // 2, int(shirt.height * 0.45)))
    mask = preprocess.segment_cloth(shirt)
    assert models.run("face_detection", np.asarray(shirt)).detections     # a face is seen ...
    preprocess.check_garment_alone(shirt, mask)                           # ... and accepted


@needs_shared
def test_worker_answers_invalid_input_naming_cloth_image(model, random_ckpt_dir):
    handler.set_worker(handler.Worker(Settings(checkpoint_dir=random_ckpt_dir, warmup=False), model))
    try:
        out = handler.handler({"id": "worn", "input": {
            **person_fields(), "cloth_image": b64(load_rgb(WORN[0]))}})
    finally:
        handler.set_worker(None)
    assert out["error"].startswith("INVALID_INPUT: cloth_image:"), out
    assert "shows a person" in out["error"]
