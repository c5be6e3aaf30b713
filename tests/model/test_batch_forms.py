"""Issue 14, item 8: try_on_batch and run take the natural forms, the same as the client's."""
from __future__ import annotations

import numpy as np
import pytest

from cpvton_infer import PAIR_KEYS, pair_mapping
from tests.helpers.shared_data import needs_shared, viton_pairs, viton_sample
from vton_core.errors import InvalidInput

pytestmark = needs_shared


def _images(results):
    return [np.asarray(r.image) for r in results]


def test_tuples_mappings_and_person_with_cloths_agree(model):
    (p0, c0), (p1, c1) = viton_pairs()[:2]
    s0, s1 = viton_sample(p0, c0), viton_sample(p1, c1)
    as_mappings = model.try_on_batch([s0, s1])
    # A tuple gives only the images (no annotations): the person analysis runs, so compare
    # one tuple pair against the same pair given as a mapping with the images only.
    as_tuple = model.try_on_batch([(s0["person"], s0["cloth"])])
    as_image_mapping = model.try_on_batch([{"person": s0["person"], "cloth": s0["cloth"]}])
    np.testing.assert_array_equal(_images(as_tuple)[0], _images(as_image_mapping)[0])

    # One prepared person with many garments: the same as the pairs, person for person.
    person = model.prepare_person(s0["person"], parse=s0["parse"], pose=s0["pose"],
                                  person_mask=s0["person_mask"])
    by_person = model.try_on_batch(person=person, cloths=[s0["cloth"], s1["cloth"]])
    pairs = model.try_on_batch([{**s0, "cloth_mask": None},
                                {**s0, "cloth": s1["cloth"], "cloth_mask": None}])
    for a, b in zip(_images(by_person), _images(pairs)):
        np.testing.assert_array_equal(a, b)
    assert len(as_mappings) == 2


def test_run_accepts_one_prepared_person_and_generators(model):
    p, c = viton_pairs()[0]
    s = viton_sample(p, c)
    person = model.prepare_person(s["person"], parse=s["parse"], pose=s["pose"],
                                  person_mask=s["person_mask"])
    cloth = model.prepare_cloth(s["cloth"], cloth_mask=s["cloth_mask"])
    single = model.run(person, cloth)
    many = model.run(person, (cloth for _ in range(2)))      # a generator, person broadcast
    listed = model.run([person, person], [cloth, cloth])
    assert len(single) == 1 and len(many) == 2
    for a, b in zip(_images(many), _images(listed)):
        np.testing.assert_array_equal(a, b)
    # batch 1 vs batch 2: other convolution kernels, so up to one grey level apart
    diff = np.abs(_images(single)[0].astype(int) - _images(listed)[0].astype(int))
    assert diff.max() <= 1


@pytest.mark.parametrize("bad", [("only-one",), {"person": "x"}, {"person": "x", "cloth": "y",
                                                                   "colour": 1}, 42])
def test_other_forms_are_a_clear_error(bad):
    with pytest.raises(InvalidInput) as info:
        pair_mapping(bad, "pairs[0]")
    assert info.value.field == "pairs[0]" and "person" in info.value.message


def test_the_client_takes_the_same_pair_forms():
    from PIL import Image

    from client_example import PAIR_KEYS as CLIENT_KEYS
    from client_example import _pair_fields

    assert tuple(CLIENT_KEYS) == PAIR_KEYS
    img = Image.new("RGB", (4, 4), "white")
    assert _pair_fields((img, img)) == _pair_fields({"person": img, "cloth": img})
    item = _pair_fields({"person": img, "cloth": img, "pose": np.zeros((18, 3)),
                         "cloth_mask": np.zeros((4, 4), np.uint8)})
    assert set(item) == {"person_image", "cloth_image", "person_pose", "cloth_mask"}
    assert item["person_pose"] == [[0.0] * 3] * 18
    with pytest.raises(ValueError, match="pair"):
        _pair_fields({"person": img})
