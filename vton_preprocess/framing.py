"""The 3:4 box around a person, and the maps between a photo and CP-VTON+'s 192×256.

Boxes have integer corners (original pixels) and may extend past the photo; outside it the
model image is padded with white (``PAD_COLOUR``), labels with 0 and masks with False.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from vton_core.compose import upscaled
from vton_core.errors import InvalidInput, NoPerson

from . import config as C

MW, MH = C.MODEL_SIZE
R_SHOULDER, L_SHOULDER, R_HIP, L_HIP = 2, 5, 8, 11


@dataclass(frozen=True)
class Framing:
    """A 3:4 box (x0, y0, x1, y1) in original-image pixels (may extend past the image: padded)
    and the original size (W, H)."""
    box: tuple[float, float, float, float]
    image_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Model pixels per original pixel."""
        return MW / (self.box[2] - self.box[0])

    def _affine(self) -> np.ndarray:
        """2×3 map original px -> model px (pixel centres aligned)."""
        s = self.scale
        x0, y0 = self.box[:2]
        return np.array([[s, 0, (0.5 - x0) * s - 0.5], [0, s, (0.5 - y0) * s - 0.5]], np.float64)

    def crop_image(self, im: Image.Image) -> Image.Image:
        """Original RGB image -> 192×256 RGB (box filter when shrinking, bicubic when enlarging;
        white outside the photo).

        Only the photo's part inside the box is resampled, from its exact pre-image straight to
        its place in the result: memory follows the photo and the model size, never the box.
        """
        x0, y0, x1, y1 = self.box
        s = self.scale                                           # model px per original px
        W, H = im.size
        out = Image.new("RGB", C.MODEL_SIZE, C.PAD_COLOUR)
        # the model pixels whose whole pre-image lies in the photo (a partly covered edge pixel
        # stays white)
        tx0, ty0 = max(0, math.ceil(-x0 * s)), max(0, math.ceil(-y0 * s))
        tx1, ty1 = min(MW, math.floor((W - x0) * s)), min(MH, math.floor((H - y0) * s))
        if tx0 < tx1 and ty0 < ty1:
            src = (max(0.0, x0 + tx0 / s), max(0.0, y0 + ty0 / s),
                   min(float(W), x0 + tx1 / s), min(float(H), y0 + ty1 / s))
            resample = Image.BOX if s < 1 else Image.BICUBIC
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            out.paste(rgb.resize((tx1 - tx0, ty1 - ty0), resample, box=src),
                      (tx0, ty0))
        return out

    def _warp(self, a: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(a, self._affine(), C.MODEL_SIZE, flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def crop_labels(self, labels: np.ndarray) -> np.ndarray:
        """H×W uint8 labels -> 256×192 uint8 (nearest; 0 outside the photo)."""
        return self._warp(np.ascontiguousarray(labels, dtype=np.uint8))

    def uncrop_labels(self, labels: np.ndarray) -> np.ndarray:
        """256×192 uint8 labels -> the photo's H×W (nearest; 0 outside the box)."""
        w, h = self.image_size
        return cv2.warpAffine(np.ascontiguousarray(labels, dtype=np.uint8), self._affine(), (w, h),
                              flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def crop_mask(self, mask: np.ndarray) -> np.ndarray:
        """H×W bool -> 256×192 bool (nearest; False outside the photo)."""
        return self._warp(np.asarray(mask, dtype=np.uint8)) > 0

    def to_model_keypoints(self, kp: np.ndarray) -> np.ndarray:
        """18×3 (x, y, conf) in original px -> 192×256 px; missing (conf 0) stays (0, 0, 0)."""
        kp = np.asarray(kp, np.float32).reshape(18, 3)
        m = self._affine()
        out = np.zeros_like(kp)
        ok = kp[:, 2] > 0
        out[ok, 0] = kp[ok, 0] * m[0, 0] + m[0, 2]
        out[ok, 1] = kp[ok, 1] * m[1, 1] + m[1, 2]
        out[ok, 2] = kp[ok, 2]
        return out

    def paste_back(self, original: Image.Image, model_image: Image.Image,
                   changed: np.ndarray, render: Callable | None = None) -> Image.Image:
        """Put the try-on result back into the full-resolution photo.

        model_image: 192×256 RGB; changed: 256×192 float in [0, 1] (where the try-on altered the
        person). Returns an image of the original's size where only the changed region (with a
        feathered edge) comes from the try-on. ``render(to_model, (w, h))`` draws the try-on
        for w×h photo pixels that the 2×3 affine ``to_model`` maps to model pixels (h×w×3 float
        in [0, 255]; :class:`vton_core.compose.FullResolutionTryOn`); by default the model image
        upscaled (Lanczos). The feathering is done at the model size and scaled up with the
        box; only the rectangle the blend touches (within the photo) is drawn, in strips of at
        most ``C.PASTE_STRIP_PIXELS`` pixels: memory is bounded by the photo, whatever the box.
        """
        render = render or upscaled(model_image)
        out = np.array(original.convert("RGB"))                       # H×W×3 uint8 (a copy)
        H, W = out.shape[:2]
        x0, y0, x1, y1 = (int(round(v)) for v in self.box)
        bw, bh = x1 - x0, y1 - y0
        # Feather at the model size (sigma FEATHER_PX/2 model px), then clip to [0, 1].
        alpha = np.clip(np.asarray(changed, np.float32), 0, 1)
        alpha = np.clip(cv2.GaussianBlur(alpha, (0, 0), max(0.5, C.FEATHER_PX / 2)) * 2.0, 0, 1)
        rows, cols = np.nonzero(alpha.max(1))[0], np.nonzero(alpha.max(0))[0]
        if len(rows) == 0:
            return Image.fromarray(out)
        # The touched rectangle, in model px (one px margin for interpolation) and box px.
        s = bw / MW
        mx0, mx1 = max(cols[0] - 1, 0), min(cols[-1] + 2, MW)
        my0, my1 = max(rows[0] - 1, 0), min(rows[-1] + 2, MH)
        bx0, bx1 = max(int(mx0 * s), -x0, 0), min(int(np.ceil(mx1 * s)), bw, W - x0)
        by0, by1 = max(int(my0 * s), -y0, 0), min(int(np.ceil(my1 * s)), bh, H - y0)
        if bx0 >= bx1 or by0 >= by1:
            return Image.fromarray(out)
        strip = max(1, C.PASTE_STRIP_PIXELS // (bx1 - bx0))
        for top in range(by0, by1, strip):
            bottom = min(top + strip, by1)
            # box px (bx0, top) on -> model px = (box px + 0.5) / s - 0.5, the mapping of a
            # resize to the whole box.
            to_model = np.array([[1 / s, 0, (bx0 + 0.5) / s - 0.5],
                                 [0, 1 / s, (top + 0.5) / s - 0.5]], np.float64)
            size = (bx1 - bx0, bottom - top)
            a = cv2.warpAffine(alpha, to_model, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)[:, :, None]
            region = out[y0 + top:y0 + bottom, x0 + bx0:x0 + bx1]
            blended = region.astype(np.float32) * (1 - a) + render(to_model, size) * a
            region[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(out)


def check_keypoints_in_photo(keypoints: np.ndarray, image_size: tuple[int, int]) -> None:
    """Refuse a pose whose present keypoints (confidence > 0) lie more than ``POSE_MARGIN_FRAC``
    of the photo's width / height outside it: such a pose was made for another image.

    keypoints: 18×3 (x, y, confidence) in pixels of the W×H photo. Raises
    :class:`errors.InvalidInput` with ``field="pose"``.
    """
    kp = np.asarray(keypoints, np.float64).reshape(-1, 3)
    w, h = image_size
    xy = kp[kp[:, 2] > 0, :2]
    mx, my = C.POSE_MARGIN_FRAC * w, C.POSE_MARGIN_FRAC * h
    if len(xy) and ((xy[:, 0] < -mx).any() or (xy[:, 0] > w + mx).any()
                    or (xy[:, 1] < -my).any() or (xy[:, 1] > h + my).any()):
        raise InvalidInput(f"keypoints lie outside the {w}x{h} photo; a pose must be in the "
                           "person image's pixel coordinates", field="pose")


def frame_person(image_size: tuple[int, int], keypoints: np.ndarray,
                 body_mask: np.ndarray) -> Framing:
    """The 3:4 box that frames the person as in VITON (head at the top, hips at ~78 %).

    image_size: (W, H); keypoints: 18×3 in those pixels; body_mask: H×W bool.
    Raises :class:`vton_core.errors.NoPerson` without shoulders in view or for a person too small, and
    :class:`vton_core.errors.InvalidInput` (``field="pose"``) for keypoints outside the photo or a box
    more than ``MAX_BOX_TO_PHOTO`` times the photo's longer side.
    """
    check_keypoints_in_photo(keypoints, image_size)
    kp = np.asarray(keypoints, np.float32).reshape(18, 3)
    if kp[R_SHOULDER, 2] <= 0 or kp[L_SHOULDER, 2] <= 0:
        raise NoPerson("the person is cut off: shoulders not in view", field="image")
    mask = np.asarray(body_mask, bool)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise NoPerson("no person found in the image", field="image")
    sh_x = float((kp[R_SHOULDER, 0] + kp[L_SHOULDER, 0]) / 2)
    sh_y = float((kp[R_SHOULDER, 1] + kp[L_SHOULDER, 1]) / 2)
    sw = float(abs(kp[R_SHOULDER, 0] - kp[L_SHOULDER, 0]))
    near = np.abs(xs - sh_x) < max(sw / 2, 1.0)
    top = float(ys[near].min()) if near.any() else float(ys.min())
    if kp[R_HIP, 2] > 0 and kp[L_HIP, 2] > 0:
        hip_y = float((kp[R_HIP, 1] + kp[L_HIP, 1]) / 2)
        height = (hip_y - top) / (C.HIP_FRAC - C.HEAD_TOP_FRAC)
        cx = float((kp[R_SHOULDER, 0] + kp[L_SHOULDER, 0] + kp[R_HIP, 0] + kp[L_HIP, 0]) / 4)
    else:
        height = (sh_y - top) / (C.SHOULDER_FRAC - C.HEAD_TOP_FRAC)
        cx = sh_x
    if height * (C.HIP_FRAC - C.HEAD_TOP_FRAC) < C.MIN_PERSON_PX:
        raise NoPerson("the person is too small in the image", field="image")
    width = height * C.MODEL_ASPECT
    x0 = round(cx - width / 2)
    y0 = round(top - C.HEAD_TOP_FRAC * height)
    if height > C.MAX_BOX_TO_PHOTO * max(image_size):
        raise InvalidInput(f"the pose frames the person in a box {height / max(image_size):.1f} "
                           "times the photo's size; check the keypoints", field="pose")
    w_int = max(3, round(width / 3)) * 3           # keep exactly 3:4 in integers
    box = (float(x0), float(y0), float(x0 + w_int), float(y0 + w_int * 4 // 3))
    return Framing(box=box, image_size=(int(image_size[0]), int(image_size[1])))
