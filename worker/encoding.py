"""Bytes out of the worker: encoded result images and the intermediate visualisations.

Pure functions of their arguments (tested without the model).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from vton_core.errors import InvalidInput
from worker.schema import INTERMEDIATES, Options

#: Colours of the 20 LIP labels used by CP-VTON's parse maps (palette of the ``parse`` output).
LIP_PALETTE = (
    (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85),
    (0, 119, 221), (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0),
    (0, 0, 255), (51, 170, 221), (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0),
    (255, 170, 0),
)
#: OpenPose COCO-18 limbs (pairs of keypoint indices) drawn on the pose overlay.
POSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
              (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))

PNG_COMPRESS_LEVEL = 1
#: Media type of each output format (S3 uploads carry it).
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
#: Longest side each output format can hold (PNG's 2^31 - 1 is beyond any accepted input).
FORMAT_MAX_SIDE = {"png": 2**31 - 1, "jpeg": 65_535, "webp": 16_383}


def check_output_fits(fmt: str, output_size: str, person_size: tuple, *, model_size: tuple) -> None:
    """Refuse, before any work, a result that ``fmt`` cannot hold (``INVALID_INPUT`` naming
    ``output_format``). The result has the person photo's ``(w, h)`` for ``output_size``
    ``"original"``, ``model_size`` otherwise."""
    w, h = person_size if output_size == "original" else model_size
    limit = FORMAT_MAX_SIDE[fmt]
    if max(w, h) > limit:
        raise InvalidInput(f"{fmt} holds at most {limit} pixels per side and the "
                           f"result would be {w}x{h}; ask for another output_format or "
                           "output_size model", field="output_format")


def encode_image(image: Image.Image, fmt: str, quality: int) -> bytes:
    """Encode a PIL image as ``png`` (lossless), ``jpeg`` or ``webp`` (``quality`` 1-100)."""
    buf = io.BytesIO()
    if fmt == "png":
        # Level 1: much faster than zlib's default 6, for somewhat larger files, still lossless
        # (the figures: README_RUNPOD.md § Performance).
        image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=quality)
    else:  # guarded by the schema
        raise ValueError(f"unsupported format {fmt}")
    return buf.getvalue()


def parse_image(parse: np.ndarray) -> Image.Image:
    """A 256×192 label map as a palette PNG: the pixel values are the labels, shown in colour."""
    im = Image.fromarray(np.asarray(parse, dtype=np.uint8), mode="L").convert("P")
    flat = [c for rgb in LIP_PALETTE for c in rgb]
    im.putpalette(flat + [255, 255, 255] * (256 - len(LIP_PALETTE)))
    return im


def pose_overlay(image: Image.Image, keypoints: np.ndarray) -> Image.Image:
    """Draw the 18 keypoints (x, y, confidence; confidence 0 = missing) and limbs on ``image``."""
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    k = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    radius = max(2, round(min(canvas.size) / 80))
    for a, b in POSE_LIMBS:
        if a < len(k) and b < len(k) and k[a, 2] > 0 and k[b, 2] > 0:
            draw.line([(k[a, 0], k[a, 1]), (k[b, 0], k[b, 1])], fill=(0, 255, 0), width=2)
    for x, y, c in k:
        if c > 0:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 0, 0))
    return canvas


def encode_result(result, options: Options) -> list[tuple[str, bytes, str]]:
    """[(name, bytes, fmt)]: the try-on in the requested format, then (when asked for) the
    intermediates of :data:`worker.schema.INTERMEDIATES` as PNG."""
    parts = [("result_image", encode_image(result.image, options.output_format, options.jpeg_quality),
              options.output_format)]
    if options.return_intermediates:
        images = {"warped_cloth": result.warped_cloth, "warped_mask": result.warped_mask,
                  "warped_grid": result.warped_grid, "rendered": result.rendered,
                  "composite_mask": result.composite_mask, "parse": parse_image(result.parse),
                  "pose_overlay": pose_overlay(result.model_image, result.keypoints)}
        parts += [(name, encode_image(images[name], "png", 100), "png") for name in INTERMEDIATES]
    return parts
