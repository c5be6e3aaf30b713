"""Request builders for the worker tests: drawn images only (no data from ../shared).

The fast path: a drawn person of exactly 192×256 with its parse, pose and mask, and a drawn
garment with its mask, so the model runs without any detector or segmenter.
"""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from worker import sample_images


def png_bytes(image) -> bytes:
    im = image if isinstance(image, Image.Image) else Image.fromarray(
        np.asarray(image).astype(np.uint8) * (255 if np.asarray(image).dtype == bool else 1))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def b64(image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def person_fields(width: int = 192, height: int = 256, *, data_uri: bool = False) -> dict:
    p = sample_images.synthetic_person(width, height)
    image = b64(p.image)
    return {"person_image": ("data:image/png;base64," + image) if data_uri else image,
            "person_parse": b64(p.parse), "person_mask": b64(p.mask),
            "person_pose": {"people": [{"pose_keypoints_2d": p.pose.reshape(-1).tolist()}]}}


def cloth_fields(color=(200, 40, 60), *, empty_mask: bool = False) -> dict:
    c = sample_images.garment(192, 256, color)
    mask = sample_images.garment_mask(c)
    if empty_mask:
        mask = np.zeros_like(mask)
    return {"cloth_image": b64(c), "cloth_mask": b64(mask)}


def decode(text: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(text)))
    im.load()
    return im
