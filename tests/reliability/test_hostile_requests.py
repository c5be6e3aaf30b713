"""Hostile and mistaken requests, round two (issue 13): each is a typed error naming its field,
answered before the work where it can be, with a response that can always be sent.

Everything runs in-process against the real model with random weights and drawn images.
"""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

import handler
from tests.helpers.worker_inputs import b64, cloth_fields, person_fields
from worker import sample_images

LEAKS = ("Traceback", 'File "', "/work", "/tmp", "/home", "site-packages", ".pth", ".py")


def sendable(out) -> dict:
    """The response as the SDK would send it: JSON, encoded as UTF-8 (raises if it cannot be)."""
    json.dumps(out, ensure_ascii=False).encode("utf-8")
    return out


def run(inp, job_id="hostile-job"):
    return sendable(handler.handler({"id": job_id, "input": inp}))


def assert_error(out, code, field):
    text = out.get("error") or ""
    assert text.startswith(f"{code}: "), out
    assert field in text, out
    assert not any(leak in text for leak in LEAKS), out
    return text


def person_at(width: int, height: int, **changes) -> dict:
    """Drawn person fields of the given size; ``changes`` replace fields."""
    return {**person_fields(width, height), **changes}


def pose_json(pose: np.ndarray) -> dict:
    return {"people": [{"pose_keypoints_2d": np.asarray(pose, float).reshape(-1).tolist()}]}


# -- 2: every string we return is valid, printable UTF-8 ------------------------------------------
UNSAFE_KEYS = ["bad\ud800key", "\udfff", "x\u202eevil", "a\x00b", "line\nbreak", "\u2028",
               "zero\u200bwidth", "k" * 5000, "\U0010ffff"]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
@pytest.mark.parametrize("where", ["top", "pair", "cloth_entry"])
def test_echoed_field_names_are_sanitised_and_truncated(worker, key, where):
    if where == "top":
        inp = {**person_fields(), **cloth_fields(), key: 1}
    elif where == "pair":
        inp = {"pairs": [{**person_fields(), **cloth_fields(), key: 1}]}
    else:
        inp = {**person_fields(), "cloth_images": [{**cloth_fields(), key: 1}]}
    text = assert_error(run(inp), "INVALID_INPUT", "unknown field")
    assert not any(ch in text for ch in "\ud800\udfff\u202e\x00\n\u2028\u200b\U0010ffff")
    assert len(text) < 200


def test_unsafe_job_id_does_not_break_the_response(worker):
    out = sendable(handler.handler({"id": "job\ud800\n\u202e" + "x" * 1000,
                                    "input": {**person_fields(), **cloth_fields()}}))
    assert out["success"] is True


# -- 10: no server path in a client error ---------------------------------------------------------
def test_missing_checkpoint_started_lazily_names_no_path(tmp_path, monkeypatch, caplog):
    handler.set_worker(None)
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("ALLOW_RANDOM_WEIGHTS", "0")
    monkeypatch.setenv("WARMUP", "0")
    try:
        with caplog.at_level("ERROR", logger="cpvton"):
            out = run({**person_fields(), **cloth_fields()})
    finally:
        handler.set_worker(None)
    text = out["error"]
    assert text.startswith("CHECKPOINT_ERROR: ") and str(tmp_path) not in text, out
    assert not any(leak in text for leak in LEAKS), out
    assert str(tmp_path / "nowhere") in caplog.text        # the operator still gets the path


# -- 1: a caller's pose cannot make the framing allocate beyond the photo ------------------------
def _figure(width=200, height=300):
    p = sample_images.synthetic_person(width, height)
    return p, {"person_image": b64(p.image), "person_parse": b64(p.parse), "person_mask": b64(p.mask)}


@pytest.mark.parametrize("joints,axis,value", [
    ((8, 11), 1, 20_000.0),            # hips far below: the finding
    ((8, 11), 1, 999_999.0),           # just inside the schema's coordinate bound
    ((2, 5), 1, -50_000.0),            # shoulders far above
    ((8,), 0, 300_000.0),              # one hip far to the side
    ((10,), 1, 90_000.0),              # an ankle, which framing does not use
])
def test_keypoints_far_outside_the_photo_are_refused(worker, joints, axis, value):
    p, fields = _figure()
    pose = p.pose.copy()
    for j in joints:
        pose[j, axis] = value
    out = run({**fields, "person_pose": pose_json(pose), **cloth_fields()})
    assert_error(out, "INVALID_INPUT", "person_pose")


def test_keypoints_outside_a_model_size_photo_are_refused(worker):
    p = sample_images.synthetic_person()
    pose = p.pose.copy()
    pose[8:12:3, 1] = 20_000.0
    out = run({**person_fields(), "person_pose": pose_json(pose), **cloth_fields()})
    assert_error(out, "INVALID_INPUT", "person_pose")


def test_a_pose_slightly_past_the_edge_still_works(worker):
    p, fields = _figure()
    pose = p.pose.copy()
    pose[10, 1] = pose[13, 1] = 300 + 20                # ankles just below the photo's edge
    out = run({**fields, "person_pose": pose_json(pose), **cloth_fields()})
    assert out["success"] is True, out


def test_framing_memory_follows_the_photo_not_the_box():
    """A box 10^4 times the photo: the old canvas would need ~10^12 bytes (MemoryError)."""
    from vton_preprocess.framing import Framing

    im = Image.new("RGB", (200, 300), (10, 200, 30))
    f = Framing(box=(-1.5e6, -1.0e6, 1.5e6, 3.0e6), image_size=(200, 300))
    crop = f.crop_image(im)
    assert crop.size == (192, 256)
    a = np.asarray(crop)
    assert (a == 255).sum() > 0.99 * a.size                    # the photo is a speck in the box
    back = f.paste_back(im, Image.new("RGB", (192, 256), (250, 0, 0)),
                        np.ones((256, 192), np.float32))
    assert back.size == (200, 300) and (np.asarray(back)[:, :, 0] > 240).all()


def test_big_box_crop_matches_the_exact_canvas():
    """The bounded crop equals the full-size canvas crop to within resampling noise."""
    from vton_preprocess.framing import Framing

    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (60, 40, 3), np.uint8)).resize((2000, 3000))
    f = Framing(box=(-300.0, 100.0, 2700.0, 4100.0), image_size=(2000, 3000))
    canvas = Image.new("RGB", (3000, 4000), (255, 255, 255))
    canvas.paste(base, (300, -100))
    exact = np.asarray(canvas.resize((192, 256), Image.LANCZOS), np.float64)
    bounded = np.asarray(f.crop_image(base), np.float64)
    assert np.abs(exact - bounded).mean() < 2.0


# -- 7: client mistakes are typed errors naming the field, found before the work -----------------
@pytest.mark.parametrize("big", [10 ** 400, -(10 ** 400), 10 ** 39])
def test_huge_integers_in_the_pose(worker, big):
    p = sample_images.synthetic_person()
    flat = p.pose.reshape(-1).tolist()
    flat[3] = big
    out = run({**person_fields(), "person_pose": {"people": [{"pose_keypoints_2d": flat}]},
               **cloth_fields()})
    assert_error(out, "INVALID_INPUT", "person_pose")


def test_huge_numbers_in_the_pose_through_the_library(model):
    p = sample_images.synthetic_person()
    for big in (10 ** 400, 1e300):
        flat = p.pose.reshape(-1).tolist()
        flat[4] = big
        with pytest.raises(Exception) as info:
            model.prepare_person(p.image, parse=p.parse, pose=flat, person_mask=p.mask)
        assert getattr(info.value, "field", None) == "person_pose", info.value


def _flat_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 255).save(buf, format="PNG")
    return buf.getvalue()


def test_webp_too_wide_is_refused_before_the_model_runs(make_worker, model, monkeypatch):
    make_worker(max_image_pixels=50_000_000)
    calls = []
    monkeypatch.setattr(model, "prepare_person", lambda *a, **k: calls.append(1))
    wide = base64.b64encode(_flat_png(16_384, 64)).decode()
    out = run({"person_image": wide, **cloth_fields(), "output_format": "webp"})
    assert_error(out, "INVALID_INPUT", "output_format")
    assert calls == []
    # output_size "model" fits, so the same photo goes on to the analysis
    run({"person_image": wide, **cloth_fields(), "output_format": "webp", "output_size": "model"})
    assert calls == [1]


@pytest.mark.parametrize("size", [(32_767, 8), (8, 32_767), (40_000, 8)])
def test_sides_beyond_opencv_are_refused_for_every_image_field(make_worker, size):
    make_worker(max_image_pixels=50_000_000)
    big = base64.b64encode(_flat_png(*size)).decode()
    for field in ("person_image", "person_parse", "person_mask", "cloth_image", "cloth_mask"):
        inp = {**person_at(192, 256), **cloth_fields(), field: big}
        assert_error(run(inp), "IMAGE_TOO_LARGE", field)


def test_the_largest_side_opencv_takes_gets_through(model):
    from vton_core.images import MAX_IMAGE_SIDE, load_rgb

    im = load_rgb(_flat_png(MAX_IMAGE_SIDE, 4), max_pixels=10 ** 9)
    assert im.size == (MAX_IMAGE_SIDE, 4)


# -- 8: the byte limit counts decoded bytes ------------------------------------------------------
def _png_of_exactly(n: int) -> bytes:
    data = _flat_png(192, 256)
    return data + b"\0" * (n - len(data))              # bytes after IEND are ignored by readers


@pytest.mark.parametrize("form", ["padded", "unpadded", "data_uri", "wrapped", "urlsafe"])
def test_input_byte_limit_counts_decoded_bytes(make_worker, form):
    from vton_core.errors import ImageTooLarge
    from worker.inputs import decode_base64
    from worker.schema import ImageRef

    limit = 100_000
    for n in (limit - 2, limit - 1, limit, limit + 1):
        text = base64.b64encode(_png_of_exactly(n)).decode()
        if form == "unpadded":
            text = text.rstrip("=")
        elif form == "data_uri":
            text = "data:image/png;base64," + text
        elif form == "wrapped":
            text = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
        elif form == "urlsafe":
            text = text.replace("+", "-").replace("/", "_")
        ref = ImageRef(field="person_image", b64=text)
        if n <= limit:
            assert len(decode_base64(ref, max_bytes=limit)) == n
        else:
            with pytest.raises(ImageTooLarge):
                decode_base64(ref, max_bytes=limit)


# -- parse maps and masks that cannot be what they claim -----------------------------------------
def _parse_variant(kind: str) -> str:
    p = sample_images.synthetic_person()
    if kind == "colour":
        from worker.encoding import parse_image
        im = parse_image(p.parse).convert("RGB")          # the colour visualisation
    elif kind == "beyond_20":
        a = p.parse.copy()
        a[a == 5] = 21
        im = Image.fromarray(a, "L")
    elif kind == "scaled_for_display":
        im = Image.fromarray((p.parse.astype(np.uint16) * 12).clip(0, 255).astype(np.uint8), "L")
    elif kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(p.parse, "L").save(buf, format="JPEG", quality=95)
        return base64.b64encode(buf.getvalue()).decode()
    elif kind == "rgba_colour":
        from worker.encoding import parse_image
        im = parse_image(p.parse).convert("RGBA")
    return b64(im)


@pytest.mark.parametrize("kind", ["colour", "beyond_20", "scaled_for_display", "jpeg",
                                  "rgba_colour"])
def test_parse_maps_that_are_not_label_maps_are_refused(worker, kind):
    out = run({**person_fields(), "person_parse": _parse_variant(kind), **cloth_fields()})
    text = assert_error(out, "INVALID_INPUT", "person_parse")
    assert "label map must be" in text


def test_valid_parse_forms_are_still_accepted(worker):
    p = sample_images.synthetic_person()
    from worker.encoding import parse_image
    grey_rgb = Image.fromarray(np.repeat(p.parse[:, :, None], 3, 2), "RGB")   # VITON's form
    for im in (Image.fromarray(p.parse, "L"), parse_image(p.parse), grey_rgb):
        out = run({**person_fields(), "person_parse": b64(im), **cloth_fields()})
        assert out["success"] is True, out


@pytest.mark.parametrize("field,value", [
    ("person_mask", np.zeros((256, 192), bool)),
    ("person_parse", np.zeros((256, 192), np.uint8)),
])
def test_empty_annotations_name_their_field(worker, field, value):
    out = run({**person_fields(), field: b64(Image.fromarray(value.astype(np.uint8), "L")),
               **cloth_fields()})
    assert_error(out, "NO_PERSON", field)


def test_empty_person_mask_on_a_photo_that_needs_framing(worker):
    p, fields = _figure()
    fields["person_mask"] = b64(Image.new("L", (200, 300), 0))
    out = run({**fields, "person_pose": pose_json(p.pose), **cloth_fields()})
    assert_error(out, "NO_PERSON", "person_mask")


# -- the same class for garments: padding to 3:4 is drawn at the model size ------------------------
PEAK_MEMORY_SCRIPT = """
import resource, sys
import numpy as np
from PIL import Image
from cpvton_infer import CPVTONPlusModel
model = CPVTONPlusModel(sys.argv[1], device="cpu", precision="fp32")
size = (int(sys.argv[2]), int(sys.argv[3]))
strip, mask = Image.new("RGB", size, (200, 0, 0)), np.ones(size[::-1], bool)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cloth = model.prepare_cloth(strip, cloth_mask=mask)
assert tuple(cloth.cloth.shape) == (3, 256, 192)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("size", [(32_766, 1), (1, 32_766), (20_000, 3)])
def test_extreme_garment_aspect_ratios_cost_no_canvas(random_ckpt_dir, size):
    """A 32,766×1 strip padded to 3:4 at its own scale is 1.4 G pixels (+6.8 GB measured): the
    peak memory of a fresh process preparing it must stay small."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", PEAK_MEMORY_SCRIPT, str(random_ckpt_dir),
                          str(size[0]), str(size[1])], cwd=root, capture_output=True, text=True,
                         timeout=300, check=False, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.split()[-1]) < 200, res.stdout        # MB of peak growth


def test_garment_fit_keeps_the_garment_centred(model):
    from PIL import Image as PILImage

    im = PILImage.new("RGB", (400, 400), (255, 255, 255))
    im.paste((200, 0, 0), (100, 100, 300, 300))
    mask = np.zeros((400, 400), bool)
    mask[100:300, 100:300] = True
    cloth = model.prepare_cloth(im, cloth_mask=mask)
    m = cloth.mask[0] > 0
    ys, xs = np.nonzero(m)
    assert abs(xs.mean() - 95.5) < 1.5 and abs(ys.mean() - 127.5) < 1.5
    assert abs(m.sum() - 96 * 96) < 400                   # 200 px of 400 → 96 model px square
