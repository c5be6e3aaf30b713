"""Images the project may ship and test with: a packaged photo and images it draws itself.

Nothing here comes from a data set: :func:`person_photo` is scikit-image's bundled
``astronaut`` picture (a real upper-body photo of Eileen Collins, public domain, shipped in the
scikit-image wheel: a development requirement), :func:`request_images` are the person photo (that
picture, 320×320 JPEG) and drawn t-shirt of ``test_input.json`` (what the smoke run and the
client use, with the worker's own packages only), :func:`garment` is a t-shirt the project draws
(:func:`printed_garment` the same with fine print), :func:`synthetic_person` is a drawn figure
with an exact parse map, pose and mask, so that the model can run without any person detector
(warm-up, fast tests), and :func:`framed_person` that figure framed as VITON frames a person.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

#: Design canvas of the drawn figure and garment (VITON's 192×256); drawings scale from it.
_DESIGN_W, _DESIGN_H = 192.0, 256.0

# LIP labels used by CP-VTON's parse maps.
_BACKGROUND, _HAIR, _UPPER, _PANTS, _FACE, _LEFT_ARM, _RIGHT_ARM = 0, 2, 5, 9, 13, 14, 15
_LEFT_SHOE, _RIGHT_SHOE = 18, 19

#: COCO-18 keypoints of the drawn figure on the 192×256 design canvas (image-left is the
#: person's right side, as in a photo of someone facing the camera).
_FIGURE_KEYPOINTS = (
    (96, 40), (96, 64), (72, 68), (62, 106), (58, 144), (120, 68), (130, 106), (134, 144),
    (82, 140), (81, 190), (80, 236), (110, 140), (111, 190), (112, 236), (91, 35), (101, 35),
    (85, 40), (107, 40),
)


@dataclass(frozen=True)
class SyntheticPerson:
    """A drawn person with exact annotations: ``image`` (PIL RGB, W×H), ``parse`` (H×W uint8
    LIP labels), ``pose`` (18×3 float: x, y, confidence in image pixels), ``mask`` (H×W bool)."""

    image: Image.Image
    parse: np.ndarray
    pose: np.ndarray
    mask: np.ndarray


def person_photo() -> Image.Image:
    """scikit-image's bundled ``astronaut`` photo (512×512 RGB, a person from the waist up)."""
    try:
        from skimage import data
    except ImportError as err:  # pragma: no cover - a dev requirement
        raise ImportError("the bundled sample photo needs scikit-image "
                          "(pip install -r requirements-dev.txt)") from err
    return Image.fromarray(data.astronaut()).convert("RGB")


#: The request ``python handler.py`` runs locally (tools/make_test_input.py writes it).
TEST_INPUT = Path(__file__).resolve().parents[1] / "test_input.json"


def request_images() -> tuple[Image.Image, Image.Image]:
    """(person, garment) of ``test_input.json`` as RGB PIL images (320×320 and 192×256)."""
    fields = json.loads(TEST_INPUT.read_text())["input"]
    images = []
    for name in ("person_image", "cloth_image"):
        data = fields[name].split(",", 1)[-1]                 # a data URI or plain base64
        images.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
    return images[0], images[1]


def _scale(points, width: int, height: int):
    sx, sy = width / _DESIGN_W, height / _DESIGN_H
    return [(x * sx, y * sy) for x, y in points]


def garment(width: int = 192, height: int = 256, color=(200, 40, 60)) -> Image.Image:
    """A short-sleeved t-shirt drawn on white, with shading, a collar and a hem (PIL RGB)."""
    outline = _scale([(62, 50), (84, 40), (96, 50), (108, 40), (130, 50), (170, 84), (152, 112),
                      (136, 98), (138, 222), (54, 222), (56, 98), (40, 112), (22, 84)],
                     width, height)
    shape = Image.new("L", (width, height), 0)
    ImageDraw.Draw(shape).polygon(outline, fill=255)
    # Vertical shading and a soft fold down the middle, so the garment is not one flat colour.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    shade = 1.0 - 0.25 * (yy / height) - 0.12 * np.exp(-((xx - width / 2) / (0.08 * width)) ** 2)
    rgb = np.clip(np.asarray(color, dtype=np.float64)[None, None, :] * shade[..., None], 0, 255)
    cloth = Image.fromarray(rgb.astype(np.uint8), "RGB")
    shirt = Image.new("RGB", (width, height), (255, 255, 255))
    shirt.paste(cloth, mask=shape.filter(ImageFilter.GaussianBlur(0.6)))
    draw = ImageDraw.Draw(shirt)
    dark = tuple(int(c * 0.6) for c in color)
    draw.line(_scale([(84, 40), (96, 56), (108, 40)], width, height), fill=dark,
              width=max(1, width // 64))
    draw.line(_scale([(56, 214), (138, 214)], width, height), fill=dark, width=max(1, width // 96))
    return shirt


def printed_garment(width: int = 768, height: int = 1024, color=(200, 40, 60)) -> Image.Image:
    """:func:`garment` with fine print on the chest: lines of small text and a patch of
    1-pixel stripes, the detail a 192×256 model image cannot hold (PIL RGB)."""
    shirt = garment(width, height, color)
    mask = Image.fromarray(garment_mask(shirt).astype(np.uint8) * 255, "L")
    printed = shirt.copy()
    draw = ImageDraw.Draw(printed)
    x0, x1 = round(0.36 * width), round(0.64 * width)
    y0, y1 = round(0.30 * height), round(0.62 * height)
    font = ImageFont.load_default()
    line = max(8, round(0.016 * height))
    for i, y in enumerate(range(y0, (y0 + y1) // 2 - line, line)):
        draw.text((x0, y), f"FINE PRINT {i:02d}: 1 px strokes", fill=(255, 255, 255), font=font)
    for x in range(x0, x1, 4):                                     # 1-px vertical stripes
        draw.line([(x, (y0 + y1) // 2), (x, y1)], fill=(20, 20, 20), width=1)
    shirt.paste(printed, mask=mask)
    return shirt


def synthetic_person(width: int = 192, height: int = 256) -> SyntheticPerson:
    """A drawn standing figure (hair, face, t-shirt, arms, trousers, shoes) with its annotations."""
    sx, sy = width / _DESIGN_W, height / _DESIGN_H
    image = Image.new("RGB", (width, height), (228, 226, 222))
    labels = Image.new("L", (width, height), _BACKGROUND)
    paint, label = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    k = _scale(_FIGURE_KEYPOINTS, width, height)

    def box(cx, cy, rx, ry):
        return [(cx - rx) * sx, (cy - ry) * sy, (cx + rx) * sx, (cy + ry) * sy]

    def both(kind, geometry, color, value, **kw):
        getattr(paint, kind)(geometry, fill=color, **kw)
        getattr(label, kind)(geometry, fill=value, **kw)

    arm_w = max(2, round(13 * sx))
    both("line", [k[2], k[3], k[4]], (214, 170, 140), _RIGHT_ARM, width=arm_w, joint="curve")
    both("line", [k[5], k[6], k[7]], (214, 170, 140), _LEFT_ARM, width=arm_w, joint="curve")
    legs = {_PANTS: [(76, 136), (116, 136), (120, 232), (104, 232), (96, 160), (88, 232),
                     (72, 232)]}
    both("polygon", _scale(legs[_PANTS], width, height), (40, 50, 90), _PANTS)
    both("ellipse", box(80, 240, 10, 5), (30, 30, 30), _RIGHT_SHOE)
    both("ellipse", box(112, 240, 10, 5), (30, 30, 30), _LEFT_SHOE)
    torso = [(70, 64), (84, 60), (108, 60), (122, 64), (128, 96), (118, 96), (118, 146),
             (74, 146), (74, 96), (64, 96)]
    both("polygon", _scale(torso, width, height), (60, 120, 190), _UPPER)
    both("rectangle", box(96, 58, 6, 6), (214, 170, 140), _FACE)
    both("ellipse", box(96, 27, 15, 14), (60, 40, 25), _HAIR)
    both("ellipse", box(96, 38, 13, 16), (222, 180, 150), _FACE)
    parse = np.asarray(labels, dtype=np.uint8).copy()
    pose = np.array([(x, y, 0.9) for x, y in k], dtype=np.float64)
    return SyntheticPerson(image=image, parse=parse, pose=pose, mask=parse > 0)


def framed_person(width: int = 768) -> SyntheticPerson:
    """The drawn figure in a photo framed as VITON frames its persons: the photo (W×H, 3:4) is
    the person's box (head at the top, hips at about 78 %), so the garment is drawn at the photo's
    full scale. Keypoints that fall outside the photo are missing (confidence 0)."""
    from vton_preprocess.framing import frame_person

    probe = synthetic_person(768, 1024)
    bx0, by0, bx1, _ = frame_person(probe.image.size, probe.pose, probe.mask).box
    f = width / (bx1 - bx0)
    height = width * 4 // 3
    full = synthetic_person(round(768 * f), round(1024 * f))
    x0, y0 = round(bx0 * f), round(by0 * f)
    pose = full.pose.copy()
    pose[:, :2] -= (x0, y0)
    outside = ((pose[:, 0] < 0) | (pose[:, 0] >= width) | (pose[:, 1] < 0) | (pose[:, 1] >= height))
    pose[outside] = 0
    return SyntheticPerson(image=full.image.crop((x0, y0, x0 + width, y0 + height)),
                           parse=full.parse[y0:y0 + height, x0:x0 + width].copy(), pose=pose,
                           mask=full.mask[y0:y0 + height, x0:x0 + width].copy())


def garment_mask(cloth: Image.Image, threshold: int = 245) -> np.ndarray:
    """H×W bool mask of the non-white pixels of a garment drawn on white."""
    return (np.asarray(cloth.convert("L")) < threshold)
