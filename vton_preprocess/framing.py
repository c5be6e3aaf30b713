"""The 3:4 box around a person, and the maps between a photo and CP-VTON+'s 192×256.

Boxes have integer corners (original pixels) and may extend past the photo; outside it the
model image is padded with white (``PAD_COLOUR``), labels with 0 and masks with False.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from vton_core.errors import NoPerson

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
        """Original RGB image -> 192×256 RGB (Lanczos; white outside the photo)."""
        x0, y0, x1, y1 = (int(round(v)) for v in self.box)
        canvas = Image.new("RGB", (x1 - x0, y1 - y0), C.PAD_COLOUR)
        canvas.paste(im.convert("RGB"), (-x0, -y0))
        return canvas.resize(C.MODEL_SIZE, Image.LANCZOS)

    def _warp(self, a: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(a, self._affine(), C.MODEL_SIZE, flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def crop_labels(self, labels: np.ndarray) -> np.ndarray:
        """H×W uint8 labels -> 256×192 uint8 (nearest; 0 outside the photo)."""
        return self._warp(np.ascontiguousarray(labels, dtype=np.uint8))

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
                   changed: np.ndarray) -> Image.Image:
        """Put the try-on result back into the full-resolution photo.

        model_image: 192×256 RGB; changed: 256×192 float in [0, 1] (where the try-on altered the
        person). Returns an image of the original's size where only the changed region (with a
        feathered edge) comes from the upscaled model image. The feathering is done at the model
        size and scaled up with the box, and only the rectangle the blend touches is converted
        and written.
        """
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
        # Upscale model image and alpha to the box, then keep the touched rectangle.
        up = cv2.resize(np.asarray(model_image.convert("RGB")), (bw, bh),
                        interpolation=cv2.INTER_LANCZOS4)[by0:by1, bx0:bx1].astype(np.float32)
        a = cv2.resize(alpha, (bw, bh), interpolation=cv2.INTER_LINEAR)[by0:by1, bx0:bx1, None]
        region = out[y0 + by0:y0 + by1, x0 + bx0:x0 + bx1]
        blended = region.astype(np.float32) * (1 - a) + up * a
        region[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(out)


def frame_person(image_size: tuple[int, int], keypoints: np.ndarray,
                 body_mask: np.ndarray) -> Framing:
    """The 3:4 box that frames the person as in VITON (head at the top, hips at ~78 %).

    image_size: (W, H); keypoints: 18×3 in those pixels; body_mask: H×W bool.
    Raises :class:`vton_core.errors.NoPerson` without shoulders in view or for a person too small.
    """
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
    w_int = max(3, round(width / 3)) * 3           # keep exactly 3:4 in integers
    box = (float(x0), float(y0), float(x0 + w_int), float(y0 + w_int * 4 // 3))
    return Framing(box=box, image_size=(int(image_size[0]), int(image_size[1])))
