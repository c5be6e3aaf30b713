"""demo.py without a browser: where errors are shown, the random-weights band, the request it
builds (checked by the worker's schema), the key's lifetime, and that the worker's image does
not carry the demo's requirements."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio", reason="gradio is not installed (requirements_demo.txt)")

import client_example  # noqa: E402
import demo  # noqa: E402
from client_example import CPVTONError  # noqa: E402
from tests.helpers.dev_server import ROOT, free_port  # noqa: E402
from vton_core.errors import InvalidInput  # noqa: E402


@pytest.mark.parametrize("code, message, slot", [
    ("INVALID_IMAGE", "cloth_image: not a decodable image", "cloth_image"),
    ("FETCH_FAILED", "person_image_url: HTTP 404", "person_image"),
    ("INVALID_INPUT", "person_pose: keypoints outside the photo", "person_pose"),
    ("NO_CLOTH", "cloth_mask: empty garment mask", "cloth_mask"),
    ("INVALID_INPUT", "output_format: webp holds at most 16383 pixels per side", "options"),
    ("HTTP_401", "POST /runsync: unauthorized", "target"),
    ("UNAVAILABLE", "POST /runsync: gave up after 3 attempts", "target"),
    ("INTERNAL", "the worker failed to process this job; it has been logged", "status"),
])
def test_each_error_is_shown_next_to_the_field_it_names(code, message, slot):
    assert demo.error_slot(code, message) == (slot, f"{code}: {message}")
    assert slot in demo.SLOTS


def test_random_weights_band_is_drawn_into_a_copy():
    image = Image.new("RGB", (300, 400), (0, 200, 0))
    stamped = demo.stamp_random_weights(image)
    assert stamped.size == image.size and image.getpixel((1, 1)) == (0, 200, 0)
    assert stamped.getpixel((1, 1)) == (176, 0, 32) and stamped.getpixel((1, 399)) == (0, 200, 0)


def test_the_request_is_the_workers_input_checked_by_its_schema(tmp_path):
    person, cloth = tmp_path / "p.png", tmp_path / "c.png"
    Image.new("RGB", (30, 40)).save(person)
    Image.new("RGB", (30, 40)).save(cloth)
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps([[1, 2, 0.9]] * 18))
    options = {"output_format": "jpeg", "output_size": "model"}
    payload = demo.Request(str(person), str(cloth), {"person_pose": str(pose)}, options).payload()
    assert payload["person_image"] == client_example.encode_image(person.read_bytes())
    assert payload["person_pose"] == [[1, 2, 0.9]] * 18 and payload["output_size"] == "model"
    with pytest.raises(InvalidInput) as missing:
        demo.Request(str(person), None, {}, options).payload()
    assert missing.value.field == "cloth_image" and "required" in missing.value.message
    pose.write_text("{not json")
    with pytest.raises(InvalidInput) as bad:
        demo.Request(str(person), str(cloth), {"person_pose": str(pose)}, options).payload()
    assert bad.value.field == "person_pose"
    with pytest.raises(InvalidInput) as option:
        demo.Request(str(person), str(cloth), {}, {"output_size": "huge"}).payload()
    assert option.value.field == "output_size"


def test_the_key_is_forgotten_after_the_request(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "ENDPOINT_RETRY_S", 0.0)
    person = tmp_path / "p.png"
    Image.new("RGB", (30, 40)).save(person)
    request = demo.Request(str(person), str(person))
    key = "rpa_SECRET-KEY-FOR-THIS-TEST-ONLY"
    with pytest.raises(CPVTONError) as err:                  # nothing listens on that port
        demo.endpoint_try_on(f"http://127.0.0.1:{free_port()}", key, request, request.payload())
    assert demo.error_slot(err.value.code, err.value.message)[0] == "target"
    assert key not in str(err.value) and key not in client_example._REDACTOR.secrets
    with pytest.raises(CPVTONError) as no_key:
        demo.endpoint_try_on("my-endpoint-id", "", request, request.payload())
    assert no_key.value.code == "NO_API_KEY"


def test_the_demo_is_installed_for_development_and_not_in_the_image():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements_demo" not in dockerfile and "gradio" not in dockerfile.lower()
    assert not any("demo.py" in line for line in re.findall(r"^COPY .*", dockerfile, flags=re.M))
    run_sh = (ROOT / "run.sh").read_text()
    assert "requirements_demo.txt" in run_sh and "chromium-driver" in run_sh
    pins = [line for line in (ROOT / "requirements_demo.txt").read_text().splitlines()
            if re.match(r"^(gradio|selenium)==", line)]
    assert len(pins) == 2
    assert Path(demo.__file__).parent == ROOT
