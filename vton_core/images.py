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
#: Longest side of any image, whatever its pixel count: OpenCV's geometric transforms
#: (``warpAffine``, ``remap``) need sides below 32,767 (``SHRT_MAX``).
MAX_IMAGE_SIDE = 32_766


def check_dimensions(width: int, height: int, *, field: str, max_pixels: int) -> None:
    """Refuse an image with no pixels, a side over :data:`MAX_IMAGE_SIDE` or more than
    ``max_pixels`` pixels (:class:`errors.InvalidImage` / :class:`errors.ImageTooLarge`)."""
    if width < 1 or height < 1:
        raise InvalidImage("image has no pixels", field=field)
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ImageTooLarge(f"{width}x{height} pixels; a side may be at most "
                            f"{MAX_IMAGE_SIDE} pixels", field=field)
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} pixels exceeds the limit of {max_pixels} pixels", field=field)


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
    check_dimensions(*im.size, field=field, max_pixels=max_pixels)
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


#: What a label map must be (said in every refusal of one).
LABEL_MAP_FORMAT = ("a label map must be a lossless single-channel image (PNG, mode L or P) whose "
                    "pixel values are the labels")
#: Encoded formats that cannot hold exact labels (lossy compression invents values at edges).
_LOSSY_FORMATS = ("JPEG", "MPO")


def _check_labels(a: np.ndarray, field: str, max_label: int | None) -> np.ndarray:
    if max_label is not None and a.size and int(a.max()) > max_label:
        raise InvalidInput(f"holds the value {int(a.max())}, beyond the labels 0-"
                           f"{max_label}; {LABEL_MAP_FORMAT} 0-{max_label}", field=field)
    return a


def _single_channel(rgb: np.ndarray, field: str, max_label: int | None) -> np.ndarray:
    """H×W×C labels stored in every channel (as VITON's RGB parse files do) → H×W; a colour
    image (channels that differ: a visualisation of a parse) is refused."""
    if rgb.shape[2] > 1 and not (rgb == rgb[:, :, :1]).all():
        upper = f" 0-{max_label}" if max_label is not None else ""
        raise InvalidInput(f"is a colour image (a visualisation of a parse?); "
                           f"{LABEL_MAP_FORMAT}{upper}", field=field)
    return rgb[:, :, 0].copy()


def load_label_map(src: ImageSource, *, field: str = "parse", max_label: int | None = None,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load a label map (mode L or P PNG, or an integer array) as H×W uint8 labels.

    Images that cannot be exact label maps are refused with :class:`errors.InvalidInput`: JPEG
    files, colour images whose channels differ, and (with ``max_label``) values above it. An
    RGB(A) image or H×W×C array with the labels in every channel is accepted.
    """
    if isinstance(src, np.ndarray):
        if src.ndim == 3:
            if np.issubdtype(src.dtype, np.floating):
                raise InvalidImage("label map must hold integer labels", field=field)
            a = _single_channel(src, field, max_label)
        else:
            a = src
        if a.ndim != 2:
            raise InvalidImage(f"array of shape {src.shape} is not a label map", field=field)
        if np.issubdtype(a.dtype, np.floating):
            raise InvalidImage("label map must hold integer labels", field=field)
        if a.size and (a.min() < 0 or a.max() > 255):
            raise InvalidImage("labels must be in 0..255", field=field)
        return _check_labels(a.astype(np.uint8), field, max_label)
    opened = _open(src, field, max_pixels)
    if opened.format in _LOSSY_FORMATS:
        upper = f" 0-{max_label}" if max_label is not None else ""
        raise InvalidInput(f"is a JPEG; {LABEL_MAP_FORMAT}{upper} (JPEG compression "
                           "changes them)", field=field)
    im = _decode(opened, field)
    if im.mode in ("L", "P"):
        return _check_labels(np.asarray(im, dtype=np.uint8).copy(), field, max_label)
    if im.mode in ("I", "I;16", "I;16B", "I;16L"):
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 255):
            raise InvalidImage("labels must be in 0..255", field=field)
        return _check_labels(a.astype(np.uint8), field, max_label)
    # An RGB(A) label map: VITON stores the labels in every channel.
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return _check_labels(_single_channel(rgb, field, max_label), field, max_label)


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
