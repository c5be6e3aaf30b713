"""The try-on at the photo's resolution: the garment photo sampled through the GMM's grid.

CP-VTON+ composes its 192×256 result as ``tryon = warped_cloth · M + rendered · (1 − M)`` (TOM's
composition mask M). The warp is a TPS grid, a smooth function of the model frame, so the garment
term can be drawn at any resolution: the grid is upsampled to the output pixels and the garment
photo, fitted to a 3:4 frame by the same rule as at the model size (:func:`fit_to_frame`) but at
a finer scale, is sampled there. M and the rendered person are upsampled, and the garment's
silhouette inside M's soft edge comes from the garment mask warped the same way. The model's own
192×256 images are untouched; this is only how the result is drawn into the photo.

Coordinates: an output pixel maps to model pixels by a 2×3 affine ``to_model`` (pixel centres,
``model px = A @ (x, y, 1)``), given by the caller (:meth:`vton_preprocess.framing.Framing.paste_back`
draws the result in strips). The grid holds ``grid_sample``'s normalised coordinates
(``align_corners=True``): x = −1 and +1 are the centres of the model frame's first and last
columns. No torch: numpy and OpenCV, the same on every backend.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from cp_dataset import MASK_THRESHOLD

#: Below this upsampled warped-mask value M is kept as the model made it; above it, M's soft
#: edge is replaced by the full-resolution silhouette (a smooth hand-over between the two).
SILHOUETTE_HANDOVER = 0.1
#: What the model frame is padded with: white (as the model's garment frame).
WHITE = (255, 255, 255)


def fit_to_frame(image: Image.Image, mask: np.ndarray, frame: tuple[int, int]
                 ) -> tuple[Image.Image, np.ndarray]:
    """Fit a garment photo into a 3:4 ``frame`` (W, H): scaled to touch it, centred, padded
    with white (the mask with empty). The one rule for the model size and every finer frame.

    image: RGB photo; mask: its H×W bool garment mask. Returns the frame-size RGB image and its
    H×W bool mask (bilinear, thresholded at :data:`MASK_THRESHOLD`). Drawn at the frame size, so
    memory follows the frame, not the photo's aspect ratio (a 32,766×1 strip never needs a
    32,766×43,688 canvas).
    """
    w, h = frame
    if image.size == (w, h):
        return image, np.asarray(mask, bool)
    iw, ih = image.size
    scale = min(w / iw, h / ih)
    sw, sh = max(1, round(iw * scale)), max(1, round(ih * scale))
    offset = ((w - sw) // 2, (h - sh) // 2)
    canvas = Image.new("RGB", (w, h), WHITE)
    canvas.paste(image.resize((sw, sh), Image.BICUBIC, reducing_gap=3.0), offset)
    mcanvas = Image.new("L", (w, h), 0)
    mcanvas.paste(Image.fromarray(np.asarray(mask, np.uint8) * 255, "L").resize((sw, sh), Image.BILINEAR),
                  offset)
    return canvas, np.asarray(mcanvas) >= MASK_THRESHOLD


def garment_frame_size(box_width: float, garment_size: tuple[int, int], max_pixels: int,
                       model_size: tuple[int, int]) -> tuple[int, int]:
    """(W, H) of the finer 3:4 frame the garment is fitted to for an output box ``box_width``
    output pixels wide: the box's own scale, but never finer than the garment photo itself
    (no upsampling of a small garment; and the photo's own scale when that is at most
    :data:`NATIVE_SLACK` times the box's, sparing a resampling), never more than ``max_pixels``
    pixels, never coarser than the model frame (``model_size``, W×H). W = 3n, H = 4n, so the
    frame is exactly 3:4."""
    mw, mh = model_size
    iw, ih = garment_size
    box, native = box_width / mw, max(iw / mw, ih / mh)
    k = min(native if native <= NATIVE_SLACK * box else box, math.sqrt(max_pixels / (mw * mh)))
    n = max(mw // 3, int(k * mw / 3))
    return 3 * n, 4 * n


def _pad_linear(a: np.ndarray) -> np.ndarray:
    """H×W×C → (H+2)×(W+2)×C, the border continued linearly (2·a[0] − a[1]): a grid's
    upsampling stays exact to the frame's outer edge for an affine warp."""
    return np.pad(a, ((1, 1), (1, 1), (0, 0)), mode="reflect", reflect_type="odd")


def _linear_taps(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(first index, weight of the second) of linear interpolation at ``coords`` (pixel units,
    float64) over ``size`` samples; beyond the ends the end sample is repeated."""
    c = np.clip(coords, 0, size - 1)
    i0 = np.minimum(np.floor(c).astype(np.intp), size - 2)
    return i0, (c - i0).astype(np.float32)


def upsample_grid(grid: np.ndarray, to_model: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A linearly padded (H+2)×(W+2)×2 grid → h×w×2 at ``size`` (w, h) output pixels, by exact
    separable bilinear interpolation in float32 (OpenCV's would round the weights to 1/32 of a
    model pixel: a wobble of up to a quarter photo pixel on a fine print at 12 MP). ``to_model``
    must be axis-aligned (scale and offset), as :meth:`vton_preprocess.framing.Framing.paste_back`
    gives."""
    if to_model[0, 1] or to_model[1, 0]:
        raise ValueError("upsample_grid needs an axis-aligned map (no rotation or shear)")
    w, h = size
    # model px -> padded px (+1)
    x0, fx = _linear_taps(to_model[0, 0] * np.arange(w) + to_model[0, 2] + 1, grid.shape[1])
    y0, fy = _linear_taps(to_model[1, 1] * np.arange(h) + to_model[1, 2] + 1, grid.shape[0])
    cols = grid[:, x0]                                                   # (H+2)×w×2
    cols += (grid[:, x0 + 1] - cols) * fx[None, :, None]
    steps = cols[1:] - cols[:-1]                                         # (H+1)×w×2
    out = cols[y0]
    out += steps[y0] * fy[:, None, None]
    return out                                                           # h×w×2


def upsample(a: np.ndarray, to_model: np.ndarray, size: tuple[int, int], interpolation: int
             ) -> np.ndarray:
    """Model-size H×W(×C) array → ``size`` (w, h) output pixels through ``to_model`` (border
    replicated). Float arrays stay float; OpenCV's interpolations (INTER_LINEAR, INTER_CUBIC)."""
    return cv2.warpAffine(a, to_model, size, flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


#: Pixels of padding around the fitted garment: the support of bicubic sampling.
_GARMENT_PAD = 2
#: Garment pixels per model pixel that one pixel of the grid may span: the grid is upsampled
#: exactly (once per try-on) until a grid pixel spans at most this many garment pixels; each
#: strip then interpolates it with OpenCV, whose weights are rounded to 1/32 of a pixel, so
#: a garment coordinate is off by at most 4/64 = 1/16 garment pixel.
GRID_PIXEL_SPAN = 4
#: A garment photo at most this much finer than the box is used at its own scale.
NATIVE_SLACK = 1.25


@dataclass
class FullResolutionTryOn:
    """One try-on's parts for drawing it at any resolution.

    coords: the GMM grid turned into pixel coordinates of ``garment`` (where each model pixel
    samples the fitted garment: the same physical point the normalised grid names in the model
    frame), linearly padded by one model pixel and upsampled exactly by ``refine`` (see
    :data:`GRID_PIXEL_SPAN`): ((H+2)·R)×((W+2)·R)×2 float32; garment: the garment
    fitted to a finer 3:4 frame (3n×4n), padded by :data:`_GARMENT_PAD` pixels, as RGBA uint8
    whose alpha is the garment mask (0 or 255; the padding repeats the RGB and is empty in
    alpha: ``grid_sample``'s border and zero paddings); masks: H×W×2 float32 (TOM's composition
    mask M, the warped mask before binarising), both in [0, 1]; rendered: H×W×3 float32 in
    [0, 255].
    """

    coords: np.ndarray
    garment: np.ndarray
    masks: np.ndarray
    rendered: np.ndarray
    refine: int

    @classmethod
    def build(cls, *, grid: np.ndarray, rendered: np.ndarray, composite: np.ndarray,
              warped_mask: np.ndarray, garment: Image.Image, garment_mask: np.ndarray,
              box_width: float, max_pixels: int) -> "FullResolutionTryOn":
        """From the networks' outputs for one item (grid H×W×2; rendered 3×H×W in [-1, 1];
        composite and warped_mask 1×H×W or H×W in [0, 1]), the garment photo with its H×W bool
        mask, the output box's width in output pixels and the pixel budget of the fitted garment
        (see :func:`garment_frame_size`)."""
        mh, mw = composite.shape[-2:]
        frame = garment_frame_size(box_width, garment.size, max_pixels, (mw, mh))
        fitted, fitted_mask = fit_to_frame(garment, garment_mask, frame)
        k = frame[0] / mw                                                 # frame px per model px
        # normalised (align_corners) -> model px -> frame px (centres) -> padded frame px
        scale = np.array([0.5 * (mw - 1), 0.5 * (mh - 1)], np.float32)
        coords = ((np.asarray(grid, np.float32) + 1) * scale + 0.5) * np.float32(k) - 0.5 + _GARMENT_PAD
        r = max(1, math.ceil(k / GRID_PIXEL_SPAN))
        coords = _pad_linear(coords)
        if r > 1:
            fine = np.array([[1 / r, 0, 0.5 / r - 1.5], [0, 1 / r, 0.5 / r - 1.5]])  # fine -> model px
            coords = upsample_grid(coords, fine, ((mw + 2) * r, (mh + 2) * r))
        rgba = fitted.convert("RGB")
        rgba.putalpha(Image.fromarray(fitted_mask.astype(np.uint8) * 255, "L"))
        p = _GARMENT_PAD
        padded = cv2.copyMakeBorder(np.asarray(rgba), p, p, p, p, cv2.BORDER_REPLICATE)
        padded[:p, :, 3] = padded[-p:, :, 3] = padded[:, :p, 3] = padded[:, -p:, 3] = 0
        masks = np.stack([np.asarray(composite, np.float32).reshape(mh, mw),
                          np.asarray(warped_mask, np.float32).reshape(mh, mw)], -1)
        person = (np.asarray(rendered, np.float32).transpose(1, 2, 0) + 1) * np.float32(127.5)
        return cls(coords=coords, garment=padded, masks=masks, rendered=np.ascontiguousarray(person),
                   refine=r)

    def render(self, to_model: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The try-on for ``size`` (w, h) output pixels mapped to model pixels by ``to_model``:
        h×w×3 float32 in about [0, 255] (bicubic may overshoot; the caller rounds and clips)."""
        r = self.refine                    # model px -> fine px of ``coords`` (padded by 1 model px)
        to_fine = to_model * r + np.array([[0, 0, 1.5 * r - 0.5], [0, 0, 1.5 * r - 0.5]])
        where = upsample(self.coords, to_fine, size, cv2.INTER_LINEAR)    # h×w×2 garment px
        # Bicubic keeps more of a fine print than bilinear (benchmarks/bench.py: compose).
        rgba = cv2.remap(self.garment, where, None, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        warped = rgba[..., :3].astype(np.float32)
        sharp = rgba[..., 3].astype(np.float32) / np.float32(255)
        masks = upsample(self.masks, to_model, size, cv2.INTER_LINEAR)     # h×w×2
        mask = silhouette_composite(masks[..., 0], masks[..., 1], sharp)[..., None]
        person = upsample(self.rendered, to_model, size, cv2.INTER_CUBIC)
        return person + (warped - person) * mask


def silhouette_composite(composite: np.ndarray, soft: np.ndarray, sharp: np.ndarray) -> np.ndarray:
    """M at the output resolution, its garment edge taken from the sharp silhouette.

    composite: M upsampled; soft: the model-size warped mask upsampled; sharp: the garment mask
    warped at the output resolution (all h×w float32 in [0, 1]). TOM's M is about the warped
    mask times how much of the garment it shows (visibility ``M / soft``); within the garment's
    soft edge that visibility times the sharp mask replaces M, handed over smoothly from M itself
    where ``soft`` falls below :data:`SILHOUETTE_HANDOVER`. Where ``soft`` is 1, M is unchanged.
    """
    visibility = np.clip(composite / np.maximum(soft, np.float32(1e-6)), 0, 1)
    weight = np.clip(soft / np.float32(SILHOUETTE_HANDOVER), 0, 1)
    return weight * visibility * sharp + (1 - weight) * composite


def upscaled(model_image: Image.Image):
    """The classic drawing: the 192×256 try-on upscaled (Lanczos); a ``render`` like
    :meth:`FullResolutionTryOn.render`."""
    rgb = np.asarray(model_image.convert("RGB"))

    def render(to_model: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return upsample(rgb, to_model, size, cv2.INTER_LANCZOS4).astype(np.float32)
    return render
