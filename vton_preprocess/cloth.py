"""In-shop garment mask from a product photo (pure OpenCV, no model).

Product photos show one garment on a near-uniform studio background. The background colour is
estimated from the image border; a pixel is a garment candidate when its colour differs from it
or when it lies on an edge (the outline and shading that separate a white garment from a white
background). Background is what the border reaches through non-candidate pixels, so holes inside
the garment (prints, logos the colour of the background) are filled by construction, and a garment
that touches the frame stays foreground because its border pixels are candidates themselves.
"""
from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from . import config as C
from . import models

log = logging.getLogger(__name__)


def _work_scale(h: int, w: int) -> float:
    """Scale (≤ 1) that brings the longer side down to the working size."""
    return min(1.0, C.CLOTH_WORK_LONG_SIDE / max(h, w))


def _border_pixels(a: np.ndarray, width: int) -> np.ndarray:
    """The ``width``-pixel frame of an H×W×C array, as N×C."""
    return np.concatenate([a[:width].reshape(-1, a.shape[2]), a[-width:].reshape(-1, a.shape[2]),
                           a[:, :width].reshape(-1, a.shape[2]),
                           a[:, -width:].reshape(-1, a.shape[2])])


def _fill_from_border(candidate: np.ndarray) -> np.ndarray:
    """Foreground = everything the border cannot reach through non-candidate pixels (H×W bool)."""
    n, lab = cv2.connectedComponents((~candidate).astype(np.uint8), connectivity=4)
    touching = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    reach = np.zeros(n, bool)
    reach[touching] = True
    reach[0] = False  # label 0 = candidate pixels
    return ~reach[lab]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of an H×W bool mask (empty stays empty)."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.copy()
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return lab == best


def cloth_probability(rgb: np.ndarray) -> np.ndarray:
    """Garment mask of an H×W×3 uint8 RGB product photo at working resolution.

    Returns an h×w float32 mask in {0, 1} where (h, w) is the image scaled so that its longer
    side is at most ``CLOTH_WORK_LONG_SIDE`` (the caller resizes it back).
    """
    h, w = rgb.shape[:2]
    s = _work_scale(h, w)
    small = rgb if s == 1.0 else cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                                            interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    bg, thr = _background_model(_border_pixels(lab, C.CLOTH_BORDER_PX))
    candidate = np.linalg.norm(lab - bg, axis=2) > thr
    # Edges carry white-on-white garments: outlines, seams and folds.
    edges = cv2.Canny(lab[:, :, 0].astype(np.uint8), C.CLOTH_CANNY_LOW, C.CLOTH_CANNY_HIGH)
    candidate |= edges > 0
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (C.CLOTH_CLOSE_PX, C.CLOTH_CLOSE_PX))
    candidate = cv2.morphologyEx(candidate.astype(np.uint8), cv2.MORPH_CLOSE, k) > 0
    fg = _fill_from_border(candidate)
    ko = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (C.CLOTH_OPEN_PX, C.CLOTH_OPEN_PX))
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, ko) > 0
    fg = _largest_component(fg)
    return fg.astype(np.float32)


def _background_model(lab_border: np.ndarray) -> tuple[np.ndarray, float]:
    """(background Lab colour, colour-distance threshold) from the N×3 Lab pixels of a frame."""
    bg = np.median(lab_border, axis=0)
    # Threshold above the background's own variation (vignetting, shadows, JPEG noise).
    noise = float(np.percentile(np.linalg.norm(lab_border - bg, axis=1), C.CLOTH_BORDER_NOISE_PCT))
    return bg, max(C.CLOTH_MIN_COLOUR_DIST, C.CLOTH_NOISE_FACTOR * noise)


def refine_edge(rgb: np.ndarray, mask: np.ndarray, band_px: int) -> np.ndarray:
    """The garment mask's edge re-decided at the photo's resolution, by colour.

    ``mask`` (H×W bool) was found at the working resolution and upsampled: its edge is only as
    precise as a working pixel and lies on the outline, part of it background. Within
    ``band_px`` photo pixels of that edge a pixel is garment where its colour differs from the
    background (the photo frame's median, as in :func:`cloth_probability`) by more than the
    threshold; the rest of the mask is kept. Returns H×W bool.
    """
    m = mask.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1, 2 * band_px + 1))
    inner, outer = cv2.erode(m, kernel) > 0, cv2.dilate(m, kernel) > 0
    ys, xs = np.nonzero(outer & ~inner)
    if len(ys) == 0:
        return mask.copy()
    border = _border_pixels(rgb, C.CLOTH_BORDER_PX)
    to_lab = lambda px: cv2.cvtColor(np.ascontiguousarray(px[None]), cv2.COLOR_RGB2LAB)[0].astype(np.float32)
    bg, thr = _background_model(to_lab(border))
    refined = inner.copy()
    refined[ys, xs] = np.linalg.norm(to_lab(rgb[ys, xs]) - bg, axis=1) > thr
    return refined


def segment_cloth_array(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 RGB product photo -> H×W bool garment mask (possibly empty), found at the
    working resolution (what the networks get, fitted to 192×256)."""
    h, w = rgb.shape[:2]
    m = cloth_probability(rgb)
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    return m >= 0.5


def photo_resolution_mask(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """:func:`segment_cloth_array`'s H×W bool mask with its edge re-decided at the photo's own
    resolution (:func:`refine_edge`): the silhouette of the full-resolution try-on, without the
    background along the outline (which would show as a light rim)."""
    band = math.ceil(C.CLOTH_EDGE_BAND_WORK_PX / _work_scale(*rgb.shape[:2]))
    return refine_edge(rgb, mask, band)


def face_is_printed(box: tuple[int, int, int, int], mask: np.ndarray) -> bool:
    """Whether a face box (x0, y0, x1, y1 px) lies inside the garment: on the face's rows the
    garment ``mask`` (H×W bool) extends at least ``CLOTH_PRINT_MARGIN_FACES`` face widths beyond
    the box on both sides, as around a print on a shirt; a wearer's head is not flanked so."""
    x0, y0, x1, y1 = box
    h, w = mask.shape
    rows = mask[max(0, y0):min(h, y1)]
    if rows.size == 0:
        return False
    cols = np.flatnonzero(rows.any(axis=0))
    if cols.size == 0:
        return False
    margin = C.CLOTH_PRINT_MARGIN_FACES * (x1 - x0)
    return bool(cols[0] <= x0 - margin and cols[-1] >= x1 + margin)


def find_wearer(rgb: np.ndarray, mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1 px) of a face that shows a person in a garment photo, or None.

    ``rgb``: H×W×3 uint8 garment photo; ``mask``: its H×W bool garment mask. Faces printed on
    the garment (see :func:`face_is_printed`) do not count.
    """
    h, w = rgb.shape[:2]
    for det in models.run("face_detection", rgb).detections or []:
        if det.score[0] < C.CLOTH_FACE_MIN_SCORE:
            continue
        r = det.location_data.relative_bounding_box
        box = (int(r.xmin * w), int(r.ymin * h), int((r.xmin + r.width) * w),
               int((r.ymin + r.height) * h))
        if not face_is_printed(box, mask):
            return box
    return None
