"""The 3:4 box around a person, and the maps between a photo and CP-VTON+'s 192×256.

Boxes have integer corners (original pixels) and may extend past the photo; outside it the
model image is padded with white (``PAD_COLOUR``), labels with 0 and masks with False.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from errors import NoPerson

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
        feathered edge) comes from the upscaled model image.
        """
        original = original.convert("RGB")
        W, H = original.size
        x0, y0, x1, y1 = (int(round(v)) for v in self.box)
        ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
        if ix0 >= ix1 or iy0 >= iy1:
            return original.copy()
        bw, bh = x1 - x0, y1 - y0
        up = np.asarray(model_image.convert("RGB").resize((bw, bh), Image.LANCZOS), np.float32)
        alpha = cv2.resize(np.clip(np.asarray(changed, np.float32), 0, 1), (bw, bh),
                           interpolation=cv2.INTER_LINEAR)
        sigma = max(1.0, C.FEATHER_PX * bw / MW / 2)
        alpha = np.clip(cv2.GaussianBlur(alpha, (0, 0), sigma) * 2.0, 0, 1)[..., None]
        sl = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
        out = np.asarray(original, np.float32).copy()
        region = out[iy0:iy1, ix0:ix1]
        out[iy0:iy1, ix0:ix1] = region * (1 - alpha[sl]) + up[sl] * alpha[sl]
        return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def frame_person(image_size: tuple[int, int], keypoints: np.ndarray,
                 body_mask: np.ndarray) -> Framing:
    """The 3:4 box that frames the person as in VITON (head at the top, hips at ~78 %).

    image_size: (W, H); keypoints: 18×3 in those pixels; body_mask: H×W bool.
    Raises :class:`errors.NoPerson` without shoulders in view or for a person too small.
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
