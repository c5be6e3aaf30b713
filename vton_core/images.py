"""Image I/O at the edges: turn whatever a caller passes into well-formed arrays or PIL images.

Accepted sources everywhere: a file path (``str`` or ``pathlib.Path``), encoded ``bytes``, a
``PIL.Image.Image`` or a ``numpy.ndarray``. Photos are returned as 8-bit RGB with EXIF
orientation applied; transparent images are composited over white (the usual background of
in-shop garment photos); CMYK, palette, grayscale and 16-bit images are converted. Label maps keep
their values (a palette PNG's indices are the labels). Every failure is an
:class:`vton_core.errors.InvalidImage` or :class:`vton_core.errors.ImageTooLarge` naming the field.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from vton_core.errors import ImageTooLarge, InvalidImage, InvalidInput

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

#: Default bound on decoded pixels (width × height) for one image: 40 MP, far above any photo a
#: shop sends, far below what would exhaust a worker's memory.
DEFAULT_MAX_PIXELS = 40_000_000


def _open(src: ImageSource, field: str, max_pixels: int) -> Image.Image:
    """Open ``src`` lazily and check its declared size before any pixel is decoded."""
    if isinstance(src, Image.Image):
        im = src
    else:
        if isinstance(src, (bytes, bytearray, memoryview)):
            fp = io.BytesIO(bytes(src))
        elif isinstance(src, (str, os.PathLike)):
            path = Path(src)
            if not path.is_file():
                raise InvalidImage("file not found", field=field)
            fp = path
        else:
            raise InvalidImage(f"unsupported image type {type(src).__name__}", field=field)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(fp)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageTooLarge("image dimensions are too large", field=field) from None
        except Exception:
            raise InvalidImage("not a decodable image", field=field) from None
    w, h = im.size
    if w < 1 or h < 1:
        raise InvalidImage("image has no pixels", field=field)
    if w * h > max_pixels:
        raise ImageTooLarge(
            f"{w}x{h} pixels exceeds the limit of {max_pixels} pixels", field=field)
    return im


def _decode(im: Image.Image, field: str) -> Image.Image:
    """Decode the first frame, applying EXIF orientation."""
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        im.load()
        return ImageOps.exif_transpose(im)
    except Exception:
        raise InvalidImage("image data is truncated or corrupt", field=field) from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited over white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def _array_to_pil(a: np.ndarray, field: str) -> Image.Image:
    """H×W or H×W×{1,3,4} array (uint8, or float in [0, 1]) to a PIL image."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InvalidImage(f"array of shape {a.shape} is not an image", field=field)
    if a.dtype != np.uint8:
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        elif np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise InvalidImage("array has non-finite values", field=field)
            scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
            a = np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)
        elif np.issubdtype(a.dtype, np.integer):
            a = np.clip(a, 0, 255).astype(np.uint8)
        else:
            raise InvalidImage(f"array dtype {a.dtype} is not an image", field=field)
    return Image.fromarray(np.ascontiguousarray(a))


def load_rgb(src: ImageSource, *, field: str = "image",
             max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load a photo as an 8-bit RGB PIL image (EXIF orientation applied, alpha over white)."""
    if isinstance(src, np.ndarray):
        src = _array_to_pil(src, field)
    im = _decode(_open(src, field, max_pixels), field)
    try:
        return _to_rgb(im)
    except Exception:
        raise InvalidImage(f"unsupported image mode {im.mode}", field=field) from None


def load_label_map(src: ImageSource, *, field: str = "parse",
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load a label map (mode L or P PNG, or an integer array) as H×W uint8 labels."""
    if isinstance(src, np.ndarray):
        a = src[..., 0] if src.ndim == 3 else src
        if a.ndim != 2:
            raise InvalidImage(f"array of shape {src.shape} is not a label map", field=field)
        if np.issubdtype(a.dtype, np.floating):
            raise InvalidImage("label map must hold integer labels", field=field)
        if a.size and (a.min() < 0 or a.max() > 255):
            raise InvalidImage("labels must be in 0..255", field=field)
        return a.astype(np.uint8)
    im = _decode(_open(src, field, max_pixels), field)
    if im.mode in ("L", "P"):
        return np.asarray(im, dtype=np.uint8).copy()
    if im.mode in ("I", "I;16", "I;16B", "I;16L"):
        a = np.asarray(im)
        if a.size and a.max() > 255:
            raise InvalidImage("labels must be in 0..255", field=field)
        return a.astype(np.uint8)
    # An RGB(A) label map: VITON stores the labels in every channel.
    return np.asarray(im.convert("RGB"), dtype=np.uint8)[:, :, 0].copy()


def load_mask(src: ImageSource, *, field: str = "mask", threshold: int = 128,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load a binary mask as H×W bool; 8-bit images are binarised at ``>= threshold``.

    A bool array is returned as is; a 0/1 integer or float array is taken as a mask directly.
    """
    if isinstance(src, np.ndarray):
        a = src[..., 0] if src.ndim == 3 else src
        if a.ndim != 2:
            raise InvalidImage(f"array of shape {src.shape} is not a mask", field=field)
        if a.dtype == bool:
            return a.copy()
        if a.size and a.max() <= 1:
            return a >= 0.5
        return a >= threshold
    im = _decode(_open(src, field, max_pixels), field)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        rgb = Image.new("RGB", im.size, (0, 0, 0))
        rgb.paste(im, mask=im.getchannel("A"))
        im = rgb
    return np.asarray(im.convert("L"), dtype=np.uint8) >= threshold


def check_same_size(annotation: np.ndarray, size: tuple[int, int], *, field: str,
                    image_name: str = "the image") -> None:
    """Raise :class:`InvalidInput` naming ``field`` unless the H×W ``annotation`` (a parse or a
    mask) has the image's ``size`` (width, height)."""
    height, width = annotation.shape[:2]
    if (width, height) != tuple(size):
        raise InvalidInput(f"size {width}x{height} differs from {image_name}'s {size[0]}x{size[1]}",
                           field=field)
