"""Fuzzing the worker's input path in-process: at least 2,000 generated inputs per run, plus an
explicit example of every odd input kind the issue lists.

Every input must come back as a dict that is either ``{"error": "<CODE>: ..."}`` with a documented
code (never ``INTERNAL``: that would be a bug) or a success whose images decode; no message may
contain a traceback or a server path. Bounds (guards against hangs and leaks, not benchmarks):

* each input is answered within ``PER_INPUT_BOUND_S`` = 30 s;
* the worker still serves a known-good request after the fuzzing;
* the process's RSS grows by at most ``RSS_BOUND_MB`` = 200 MB from after warm-up to the end.

Hypothesis runs derandomized (the same inputs in every CI run) with no example database.
"""
from __future__ import annotations

import base64
import io
import os
import re
import struct
import time
import zlib

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import Image

import handler
from tests.helpers.worker_inputs import b64, cloth_fields, decode, person_fields
from worker import sample_images
from worker.settings import Settings

PER_INPUT_BOUND_S = 30.0
RSS_BOUND_MB = 200
JSON_EXAMPLES = int(os.environ.get('FUZZ_JSON', 1100))
IMAGE_EXAMPLES = int(os.environ.get('FUZZ_IMAGES', 1000))
MAX_ITEMS = 4
CODES = {"INVALID_INPUT", "INVALID_IMAGE", "IMAGE_TOO_LARGE", "NO_PERSON", "NO_CLOTH",
         "BATCH_TOO_LARGE", "FETCH_FAILED"}
LEAKS = re.compile(r"Traceback|File \"|/work|/tmp|/home|/usr|/srv|/app/|site-packages|\.py\b")
FUZZ = dict(deadline=None, derandomize=True, database=None, print_blob=False,
            suppress_health_check=list(HealthCheck))
STATS = {"inputs": 0, "generated": 0, "successes": 0, "codes": {}}


# -- the odd images ---------------------------------------------------------------------------------
def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking PNG of a few dozen bytes whose header declares width × height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b""))
            + _chunk(b"IEND", b""))


def gif_bomb() -> bytes:
    """A GIF header declaring 65535 × 65535 pixels."""
    return (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
            + b",\0\0\0\0" + struct.pack("<HH", 65535, 65535) + b"\0\x02\x02\x44\x01\0;")


def exif_jpeg(orientation: int, size=(48, 64)) -> bytes:
    im = Image.new("RGB", size, (200, 40, 60))
    im.paste((20, 20, 200), (0, 0, size[0] // 2, size[1] // 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(im, "JPEG", exif=exif)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (40, 50), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)


def odd_images() -> dict:
    """name -> encoded bytes, one entry per odd kind (all small)."""
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))
    palette = Image.new("P", (40, 50), 1)
    palette.putpalette([255, 255, 255, 200, 40, 60] + [0] * 762)
    palette.paste(0, (0, 0, 20, 25))
    jpeg = _save(noise, "JPEG")
    png = _save(noise, "PNG")
    images = {
        "png16": _save(Image.fromarray((rng.integers(0, 65535, (64, 48))).astype(np.uint16)), "PNG"),
        "cmyk_jpeg": _save(Image.new("CMYK", (48, 64), (0, 200, 200, 0)), "JPEG"),
        "palette_transparency": _save(palette, "PNG", transparency=0),
        "palette_gif": _save(palette, "GIF", transparency=0),
        "la_png": _save(Image.new("LA", (48, 64), (128, 100)), "PNG"),
        "rgba_png": _save(Image.new("RGBA", (48, 64), (10, 200, 30, 0)), "PNG"),
        "grey_l": _save(Image.new("L", (48, 64), 90), "PNG"),
        "bilevel_1": _save(Image.new("1", (48, 64), 1), "PNG"),
        "float_tiff": _save(Image.fromarray(rng.random((32, 24)).astype(np.float32)), "TIFF"),
        "int32_tiff": _save(Image.fromarray(rng.integers(0, 1 << 20, (32, 24)).astype(np.int32)),
                            "TIFF"),
        "bmp": _save(noise, "BMP"),
        "webp": _save(noise, "WEBP"),
        "animated_gif": animated("GIF"),
        "animated_webp": animated("WEBP"),
        "one_by_one": _save(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"),
        "tall_1x10000": _save(Image.new("RGB", (1, 10000), (0, 0, 0)), "PNG"),
        "wide_10000x1": _save(Image.new("RGB", (10000, 1), (0, 0, 0)), "PNG"),
        "png_bomb": png_bomb(),
        "png_bomb_just_over": png_bomb(8000, 6000),      # 48 MP > MAX_IMAGE_PIXELS (40 MP)
        "gif_bomb": gif_bomb(),
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "truncated_png": png[: len(png) // 2],
        "png_header_only": png[:33],
        "jpeg_soi_only": b"\xff\xd8\xff",
        "text": b"hello world, not an image",
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "zeros": b"\0" * 512,
        "random": rng.bytes(700),
    }
    for k in range(1, 9):
        images[f"exif_orientation_{k}"] = exif_jpeg(k)
    return images


ODD = odd_images()
ODD_NAMES = sorted(ODD)


def as_text(data: bytes, how: str = "raw") -> str:
    text = base64.b64encode(data).decode("ascii")
    if how == "raw":
        return text
    if how == "png_uri":
        return "data:image/png;base64," + text
    if how == "svg_uri":
        return "data:image/svg+xml;base64," + text
    if how == "text_uri":
        return "data:text/plain;base64," + text
    if how == "urlsafe_nopad":
        return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
    if how == "wrapped":
        return "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    if how == "truncated_b64":
        return text[: max(1, len(text) * 2 // 3 + 1)]
    if how == "bad_chars":
        return text[:10] + "*%$" + text[10:]
    raise ValueError(how)


ENCODINGS = ("raw", "png_uri", "svg_uri", "text_uri", "urlsafe_nopad", "wrapped", "truncated_b64",
             "bad_chars")


# -- the worker and the checks ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_worker(model, random_ckpt_dir):
    worker = handler.Worker(Settings(checkpoint_dir=random_ckpt_dir, warmup=False,
                                     max_batch_items=MAX_ITEMS, max_input_bytes=2_000_000),
                            model)
    handler.set_worker(worker)
    yield worker
    handler.set_worker(None)


@pytest.fixture(scope="module")
def rss_baseline(fuzz_worker):
    """RSS after warm-up: every code path once (fast-path try-on, a full batch, garment
    segmentation, person analysis of a small and an elongated photo, every odd image once)."""
    pair = {**person_fields(), **cloth_fields()}
    assert check({"pairs": [pair] * MAX_ITEMS})["succeeded"] == MAX_ITEMS
    garment = b64(sample_images.garment(192, 256))
    assert check({**FAST_PERSON, "cloth_images": [garment, garment]})["succeeded"] == 2
    for size in ((60, 80), (1, 10000), (10000, 1)):
        check({"person_image": b64(Image.new("RGB", size, (250, 250, 250))), **FAST_CLOTH})
    for data in ODD.values():
        check({"person_image": as_text(data), **FAST_CLOTH})
        check({**FAST_PERSON, "cloth_images": [as_text(data)] * 2})
    return psutil.Process().memory_info().rss


def _assert_clean(message: str) -> None:
    assert isinstance(message, str) and message
    code = message.split(":", 1)[0]
    assert code in CODES, message
    assert not LEAKS.search(message), message
    assert len(message) < 600, message


def _assert_success(item: dict) -> None:
    image = decode(item["result_image"])
    assert image.size == (item["width"], item["height"])
    for text in item.get("intermediates", {}).values():
        decode(text)


def check(inp, job=None) -> dict:
    """Run one job through handler() and check the shape of what comes back."""
    t0 = time.monotonic()
    out = handler.handler(job if job is not None else {"id": "fuzz", "input": inp})
    elapsed = time.monotonic() - t0
    assert elapsed < PER_INPUT_BOUND_S, (elapsed, str(inp)[:200])
    assert isinstance(out, dict)
    STATS["inputs"] += 1
    if STATS["inputs"] % 200 == 0:
        STATS.setdefault("rss_mb", []).append(round(psutil.Process().memory_info().rss / 2**20))
    if "error" in out:
        assert set(out) == {"error"}, out
        _assert_clean(out["error"])
        code = out["error"].split(":", 1)[0]
        STATS["codes"][code] = STATS["codes"].get(code, 0) + 1
    elif "results" in out:
        assert out["succeeded"] + out["failed"] == len(out["results"])
        for item in out["results"]:
            if item["success"]:
                _assert_success(item)
                STATS["successes"] += 1
            else:
                _assert_clean(item["error"])
    else:
        assert out["success"] is True, out
        _assert_success(out)
        STATS["successes"] += 1
    return out


# -- 1. structure: wrong types, missing and unknown fields, batches --------------------------------
FIELDS = ["person_image", "person_image_url", "cloth_image", "cloth_image_url", "person_parse",
          "person_pose", "person_mask", "cloth_mask", "output_format", "jpeg_quality",
          "output_size", "garment_resolution", "return_intermediates", "pairs", "cloth_images"]
SMALL_B64 = b64(Image.new("RGB", (8, 8)))
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) |
           st.text(max_size=40) | st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode())
           | st.sampled_from(["", " ", "iVBORw0KGgo=", "data:image/png;base64,AAAA", SMALL_B64,
                              "data:text/plain;base64,aGk=", "http://127.0.0.1/a.png",
                              "http://169.254.169.254/", "ftp://x/y", "http://", "https://[::1",
                              "png", "jpg", "JPEG", "model", "original", "full", "\x00", "é" * 50,
                              "A" * 5000]))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from(FIELDS) | st.text(max_size=10), children, max_size=5),
    max_leaves=15)
pose_values = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=60),
    st.lists(st.lists(st.integers(-10**9, 10**9), max_size=4), max_size=20),
    st.fixed_dictionaries({"people": st.lists(st.dictionaries(
        st.sampled_from(["pose_keypoints_2d", "pose_keypoints", "x"]),
        st.lists(st.floats(-1e7, 1e7), min_size=50, max_size=56)), max_size=2)}))
pair_objects = st.dictionaries(st.sampled_from(FIELDS[:8]), json_values, max_size=6)
structures = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    st.fixed_dictionaries({"person_image": st.just(SMALL_B64), "cloth_image": st.just(SMALL_B64)},
                          optional={"person_pose": pose_values, "output_format": scalars,
                                    "jpeg_quality": scalars, "output_size": scalars,
                                    "garment_resolution": scalars,
                                    "return_intermediates": scalars, "extra": scalars}),
    st.fixed_dictionaries({"pairs": st.lists(pair_objects, max_size=MAX_ITEMS + 3)}),
    st.fixed_dictionaries({"person_image": st.just(SMALL_B64),
                           "cloth_images": st.lists(st.one_of(scalars, pair_objects),
                                                    max_size=MAX_ITEMS + 3)}),
)
jobs = st.one_of(
    structures.map(lambda inp: {"id": "fuzz", "input": inp}),
    json_values,                                       # not even a job object
    st.dictionaries(st.sampled_from(["id", "input", "webhook", "policy"]), json_values,
                    max_size=3),
)


@pytest.mark.slow
@hsettings(max_examples=JSON_EXAMPLES, **FUZZ)
@given(job=jobs)
def test_fuzz_structure(fuzz_worker, rss_baseline, job):
    STATS["generated"] += 1
    check(None, job=job)


# -- 2. bytes: every odd image, mutated, in every slot, in every encoding ---------------------------
FAST_PERSON = person_fields()
FAST_CLOTH = cloth_fields()


@st.composite
def image_jobs(draw):
    data = ODD[draw(st.sampled_from(ODD_NAMES))]
    mutation = draw(st.sampled_from(["none", "none", "truncate", "flip", "prefix"]))
    if mutation == "truncate" and len(data) > 1:
        data = data[: draw(st.integers(1, len(data) - 1))]
    elif mutation == "flip":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] = draw(st.integers(0, 255))
        data = bytes(buf)
    elif mutation == "prefix":
        data = draw(st.binary(min_size=1, max_size=8)) + data
    text = as_text(data, draw(st.sampled_from(ENCODINGS)))
    slot = draw(st.sampled_from(["person_image", "cloth_image", "person_parse", "person_mask",
                                 "cloth_mask", "cloth_images", "pairs"]))
    if slot == "person_image":          # the person analysis path (no annotations)
        return {"person_image": text, **FAST_CLOTH}
    if slot == "cloth_image":           # garment segmentation path (no mask)
        return {**FAST_PERSON, "cloth_image": text, "output_size": "model"}
    if slot in ("person_parse", "person_mask"):
        return {**FAST_PERSON, slot: text, **FAST_CLOTH}
    if slot == "cloth_mask":
        return {**FAST_PERSON, **FAST_CLOTH, "cloth_mask": text}
    if slot == "cloth_images":
        return {**FAST_PERSON, "cloth_images": [text, {"cloth_image": text}], "output_size": "model"}
    return {"pairs": [{"person_image": text, **FAST_CLOTH}, {**FAST_PERSON, "cloth_image": text}],
            "output_size": "model"}


@pytest.mark.slow
@hsettings(max_examples=IMAGE_EXAMPLES, **FUZZ)
@given(inp=image_jobs())
def test_fuzz_image_bytes(fuzz_worker, rss_baseline, inp):
    STATS["generated"] += 1
    check(inp)


# -- 3. every listed kind, explicitly, with the answer it must get --------------------------------------
def _cloth_slot(data: bytes, how="raw") -> dict:
    return {**FAST_PERSON, "cloth_image": as_text(data, how), "output_size": "model"}


@pytest.mark.parametrize("name, expected", [
    ("png_bomb", "IMAGE_TOO_LARGE"), ("png_bomb_just_over", "IMAGE_TOO_LARGE"),
    ("gif_bomb", "IMAGE_TOO_LARGE"),
    ("truncated_jpeg", "INVALID_IMAGE"), ("truncated_png", "INVALID_IMAGE"),
    ("png_header_only", "INVALID_IMAGE"), ("jpeg_soi_only", "INVALID_IMAGE"),
    ("text", "INVALID_IMAGE"), ("svg", "INVALID_IMAGE"), ("eps", "INVALID_IMAGE"),
    ("pdf", "INVALID_IMAGE"), ("zeros", "INVALID_IMAGE"), ("random", "INVALID_IMAGE"),
])
def test_broken_and_hostile_bytes_get_their_code(fuzz_worker, name, expected):
    for inp in ({"person_image": as_text(ODD[name], "raw"), **FAST_CLOTH}, _cloth_slot(ODD[name])):
        out = check(inp)
        assert out["error"].split(":", 1)[0] == expected, (name, out)


@pytest.mark.parametrize("name", [n for n in ODD_NAMES if n.startswith(
    ("png16", "cmyk", "palette", "la_", "rgba", "grey", "bilevel", "float", "int32", "bmp",
     "webp", "animated", "one_by_one", "tall", "wide", "exif"))])
def test_odd_but_valid_images_are_decoded(fuzz_worker, name):
    """Decodable images of every mode are accepted: as a person they are analysed (no person in
    these drawings: NO_PERSON), as a garment with a mask of their own size they are decoded
    and masked (an empty mask: NO_CLOTH), never INVALID_IMAGE."""
    data = ODD[name]
    out = check({"person_image": as_text(data, "png_uri"), **FAST_CLOTH})
    assert out["error"].startswith("NO_PERSON: person_image"), (name, out)
    im = Image.open(io.BytesIO(data))
    size = im.size if im.getexif().get(0x0112, 1) < 5 else im.size[::-1]
    out = check({**FAST_PERSON, "cloth_image": as_text(data), "cloth_mask":
                 b64(Image.new("L", size, 0))})
    assert out["error"].startswith("NO_CLOTH: cloth_mask"), (name, out)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_a_garment(fuzz_worker, orientation):
    """A garment photo with EXIF orientation k: the mask must match the *displayed* size,
    and the try-on succeeds."""
    data = exif_jpeg(orientation, size=(96, 128))
    shown = (96, 128) if orientation < 5 else (128, 96)
    mask = Image.new("L", shown, 0)
    mask.paste(255, (shown[0] // 4, shown[1] // 4, 3 * shown[0] // 4, 3 * shown[1] // 4))
    out = check({**FAST_PERSON, "cloth_image": as_text(data), "cloth_mask": b64(mask),
                 "output_size": "model"})
    assert out.get("success") is True, out
    if orientation >= 5:     # a mask of the stored (unrotated) size is the wrong size
        out = check({**FAST_PERSON, "cloth_image": as_text(data),
                     "cloth_mask": b64(Image.new("L", (96, 128), 255))})
        assert out["error"].startswith("INVALID_INPUT: cloth_mask"), out


@pytest.mark.parametrize("how, expected", [
    ("raw", None), ("png_uri", None), ("svg_uri", None), ("urlsafe_nopad", None),
    ("wrapped", None), ("text_uri", "INVALID_IMAGE"), ("truncated_b64", "INVALID_IMAGE"),
    ("bad_chars", "INVALID_IMAGE"),
])
def test_base64_forms(fuzz_worker, how, expected):
    """A valid garment PNG in each text form: the standard forms work, a data URI declaring a
    non-image type or broken base64 is INVALID_IMAGE naming the field."""
    fields = cloth_fields()
    data = base64.b64decode(fields["cloth_image"])
    out = check({**FAST_PERSON, "cloth_image": as_text(data, how),
                 "cloth_mask": fields["cloth_mask"], "output_size": "model"})
    if expected is None:
        assert out.get("success") is True, (how, out)
    else:
        assert out["error"].startswith(f"{expected}: cloth_image"), (how, out)


def test_empty_and_over_long_batches(fuzz_worker):
    assert check({"pairs": []})["error"].startswith("INVALID_INPUT: pairs")
    assert check({**FAST_PERSON, "cloth_images": []})["error"].startswith(
        "INVALID_INPUT: cloth_images")
    pair = {**FAST_PERSON, **FAST_CLOTH}
    assert check({"pairs": [pair] * (MAX_ITEMS + 1)})["error"].startswith(
        "BATCH_TOO_LARGE: pairs")
    assert check({**FAST_PERSON, "cloth_images": [FAST_CLOTH["cloth_image"]] * 1000})[
        "error"].startswith("BATCH_TOO_LARGE: cloth_images")


def test_over_the_byte_limit_is_refused_before_decoding(fuzz_worker):
    text = "A" * 3_000_000                       # 2.25 MB of base64 zeros > max_input_bytes
    out = check({**FAST_PERSON, "cloth_image": text})
    assert out["error"].startswith("IMAGE_TOO_LARGE: cloth_image")


# -- 4. afterwards: still serving, memory bounded ----------------------------------------------------
def test_still_serving_and_memory_bounded(fuzz_worker, rss_baseline):
    out = check({**person_fields(), **cloth_fields(), "return_intermediates": True})
    assert out["success"] is True
    grown_mb = (psutil.Process().memory_info().rss - rss_baseline) / 2**20
    print(f"\nfuzz: {STATS['inputs']} inputs ({STATS['generated']} generated by hypothesis), "
          f"{STATS['successes']} successes, "
          f"codes {dict(sorted(STATS['codes'].items()))}, RSS growth {grown_mb:.0f} MB "
          f"(baseline {rss_baseline / 2**20:.0f} MB; every 200 inputs: {STATS.get('rss_mb')})")
    if STATS["generated"] >= 100:       # the whole module ran (not a -k selection)
        assert STATS["generated"] >= 0.95 * (JSON_EXAMPLES + IMAGE_EXAMPLES), STATS["generated"]
    assert grown_mb <= RSS_BOUND_MB, grown_mb
