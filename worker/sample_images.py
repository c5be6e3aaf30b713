"""Images the project may ship and test with: a packaged photo and images it draws itself.

Nothing here comes from a data set: :func:`person_photo` is scikit-image's bundled
``astronaut`` picture (a real upper-body photo of Eileen Collins, public domain, shipped in the
scikit-image wheel), :func:`garment` is a t-shirt the project draws, and
:func:`synthetic_person` is a drawn figure with an exact parse map, pose and mask, so that the
model can run without any person detector (warm-up, fast tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

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


def garment_mask(cloth: Image.Image, threshold: int = 245) -> np.ndarray:
    """H×W bool mask of the non-white pixels of a garment drawn on white."""
    return (np.asarray(cloth.convert("L")) < threshold)
