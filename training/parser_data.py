"""Data for the person parser: the VITON-format label maps with CP-VTON+'s neck label, an
in-memory cache, procedural backgrounds and batch augmentation.

Everything here works on the 256×192 model-size images of a VITON-format folder (``image/*.jpg``
and ``image-parse-new/*.png`` — or ``image-parse/*.png``, from which the neck label 20 is derived
as CP-VTON+ derived ``image-parse-new``). Augmentation runs on whole batches in torch: a
left/right mirror that swaps the paired labels, scale / shift / rotation, colour changes of the
person, a non-white background behind the person, and global brightness, contrast, noise and blur.
"""
from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vton_core.images import load_label_map, load_rgb
from vton_preprocess.parser import INPUT_SIZE, mirror_permutation

log = logging.getLogger(__name__)

NECK = 20
# CP-VTON+'s body silhouette for the neck label: a pixel is studio background when it is bright
# and unsaturated (HSV, OpenCV's 0–255 scales).
STUDIO_MIN_VALUE = 120
STUDIO_MAX_SATURATION = 38


def derive_neck(rgb: np.ndarray, parse: np.ndarray) -> np.ndarray:
    """LIP parse (H×W uint8, 0–19) -> the same with label 20 on the unlabelled skin between face
    and clothes, CP-VTON+'s ``image-parse-new`` procedure.

    The person's silhouette is every pixel that is not studio background (HSV). Pixels where the
    silhouette and the parse disagree, in the top half of the image, form regions; the largest
    one (by contour area) is filled, and its pixels that the parse left as background become 20.
    rgb: H×W×3 uint8.
    """
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    studio = (hsv[..., 2] >= STUDIO_MIN_VALUE) & (hsv[..., 1] <= STUDIO_MAX_SATURATION)
    labelled = parse > 0
    disagree = (~studio != labelled).astype(np.uint8)
    disagree[parse.shape[0] // 2:] = 0
    contours, _ = cv2.findContours(disagree, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = parse.copy()
    if not contours:
        return out
    region = np.zeros_like(disagree)
    cv2.drawContours(region, [max(contours, key=cv2.contourArea)], 0, 1, thickness=cv2.FILLED)
    out[(region > 0) & ~labelled] = NECK
    return out


def read_person(root: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """(H×W×3 uint8 image, H×W uint8 labels 0–20) of one VITON person at the model size."""
    rgb = np.asarray(load_rgb(root / "image" / f"{stem}.jpg"))
    new = root / "image-parse-new" / f"{stem}.png"
    if new.is_file():
        labels = load_label_map(new)
    else:
        labels = derive_neck(rgb, load_label_map(root / "image-parse" / f"{stem}.png"))
    if rgb.shape[:2] != (INPUT_SIZE[1], INPUT_SIZE[0]) or labels.shape != rgb.shape[:2]:
        raise ValueError(f"{stem}: expected {INPUT_SIZE[1]}×{INPUT_SIZE[0]} image and parse")
    return rgb, labels


def person_stems(root: Path) -> list[str]:
    """Sorted stems of the persons in ``root/image``."""
    return sorted(p.stem for p in (root / "image").glob("*.jpg"))


def load_cache(root: Path, cache_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(stems, N×H×W×3 uint8 images, N×H×W uint8 labels) for every person of ``root``, read once
    and kept in ``cache_dir`` as .npy files (memory-mapped on later calls)."""
    stems = person_stems(root)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{len(stems)}_{stems[0] if stems else 'none'}_{stems[-1] if stems else 'none'}"
    img_file, lab_file = cache_dir / f"images_{key}.npy", cache_dir / f"labels_{key}.npy"
    if img_file.is_file() and lab_file.is_file():
        return stems, np.load(img_file, mmap_mode="r"), np.load(lab_file, mmap_mode="r")
    h, w = INPUT_SIZE[1], INPUT_SIZE[0]
    images = np.zeros((len(stems), h, w, 3), np.uint8)
    labels = np.zeros((len(stems), h, w), np.uint8)

    def one(i: int) -> None:
        images[i], labels[i] = read_person(root, stems[i])

    log.info("reading %d persons into %s", len(stems), cache_dir)
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, range(len(stems))))
    for arr, path in ((images, img_file), (labels, lab_file)):
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        tmp.replace(path)
    return stems, images, labels


# ---------------------------------------------------------------------------------------------
# Backgrounds
# ---------------------------------------------------------------------------------------------
_WORDS = ("SALE", "NEWS", "LOGO", "PRESS", "2026", "OPEN", "SHOP", "TV", "BRAND", "ZX")


def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cells = int(rng.integers(2, 12))
    small = rng.uniform(0, 255, (cells, max(2, cells * w // h), 3)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _shapes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), rng.uniform(0, 255, 3), np.float32)
    for _ in range(int(rng.integers(3, 25))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x0 + int(rng.integers(4, w)), y0 + int(rng.integers(4, h))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)
        elif kind == 1:
            box = (((x0 + x1) / 2, (y0 + y1) / 2), (abs(x1 - x0), abs(y1 - y0)),
                   float(rng.uniform(0, 180)))
            cv2.ellipse(img, box, colour, -1)
        else:
            cv2.line(img, (x0, y0), (x1, y1), colour, int(rng.integers(1, 8)))
    return img


def _press_wall(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A backdrop of repeated logos and words, the kind that fools a parser trained on white."""
    img = np.full((h, w, 3), rng.uniform(120, 255, 3), np.float32)
    step_x, step_y = int(rng.integers(30, 80)), int(rng.integers(20, 60))
    colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
    word = str(rng.choice(_WORDS))
    scale = float(rng.uniform(0.4, 1.2))
    for y in range(0, h + step_y, step_y):
        for x in range(-(y // step_y % 2) * step_x // 2, w, step_x):
            if rng.random() < 0.5:
                cv2.putText(img, word, (x, y), int(rng.integers(0, 8)), scale, colour,
                            int(rng.integers(1, 3)))
            else:
                cv2.circle(img, (x + step_x // 3, y - step_y // 3), int(rng.integers(3, 12)),
                           colour, -1)
    return img


def _stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    period = float(rng.uniform(6, 60))
    angle = float(rng.uniform(0, math.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wave = (np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) > 0)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return np.where(wave[..., None], a, b).astype(np.float32)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    t = np.linspace(0, 1, h if rng.random() < 0.5 else w, dtype=np.float32)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = a + (b - a) * t[:, None]
    return (np.broadcast_to(ramp[:, None], (h, w, 3)) if len(t) == h
            else np.broadcast_to(ramp[None], (h, w, 3))).astype(np.float32)


_GENERATORS = (_smooth_noise, _shapes, _press_wall, _stripes, _gradient)


def make_backgrounds(count: int, seed: int, textures: list[np.ndarray] | None = None
                     ) -> np.ndarray:
    """(count, H, W, 3) uint8 procedural backgrounds (noise, shapes, logo walls, stripes,
    gradients, and crops of ``textures`` — e.g. garment photos — when given), deterministic in
    ``seed``. Some are blurred, some get a second layer blended in."""
    rng = np.random.default_rng(seed)
    h, w = INPUT_SIZE[1], INPUT_SIZE[0]
    out = np.zeros((count, h, w, 3), np.uint8)
    for i in range(count):
        if textures and rng.random() < 0.2:
            tex = textures[int(rng.integers(len(textures)))]
            z = float(rng.uniform(1.0, 3.0))
            big = cv2.resize(tex, None, fx=z, fy=z, interpolation=cv2.INTER_LINEAR)
            y0 = int(rng.integers(0, big.shape[0] - h + 1))
            x0 = int(rng.integers(0, big.shape[1] - w + 1))
            img = big[y0:y0 + h, x0:x0 + w].astype(np.float32)
        else:
            img = _GENERATORS[int(rng.integers(len(_GENERATORS)))](rng, h, w)
        if rng.random() < 0.3:
            other = _GENERATORS[int(rng.integers(len(_GENERATORS)))](rng, h, w)
            img = 0.5 * img + 0.5 * other
        if rng.random() < 0.4:
            k = int(rng.integers(1, 4)) * 2 + 1
            img = cv2.GaussianBlur(img, (k, k), 0)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """Strength of each augmentation (probabilities and ranges)."""
    flip_p: float = 0.5                 # left/right mirror (paired labels swapped)
    scale: tuple[float, float] = (0.7, 1.25)   # zoom factor range
    shift: float = 0.12                 # max shift, fraction of the image side
    rotate_deg: float = 10.0            # max rotation
    background_p: float = 0.75          # replace the studio background
    hue_deg: float = 25.0               # person hue rotation range (±)
    saturation: tuple[float, float] = (0.6, 1.4)
    brightness: tuple[float, float] = (0.65, 1.35)
    contrast: tuple[float, float] = (0.7, 1.3)
    noise_max: float = 0.04             # std of added Gaussian noise, fraction of full scale
    blur_p: float = 0.2                 # probability of a 3×3 box blur


def _studio_alpha(img: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) soft matte: 1 on labelled pixels and on pixels that are not studio white."""
    mx, mn = img.amax(1, keepdim=True), img.amin(1, keepdim=True)
    sat = (mx - mn) / mx.clamp_min(1e-6)
    studio = (mx >= STUDIO_MIN_VALUE / 255) & (sat <= STUDIO_MAX_SATURATION / 255)
    fg = ((labels[:, None] > 0) | ~studio).float()
    return F.avg_pool2d(fg, 3, 1, 1)


def _hue_matrix(deg: torch.Tensor) -> torch.Tensor:
    """(B,) degrees -> (B, 3, 3) RGB rotation about the grey axis."""
    c, s = torch.cos(torch.deg2rad(deg)), torch.sin(torch.deg2rad(deg))
    one_third, r = 1 / 3, math.sqrt(1 / 3)
    m = torch.empty(len(deg), 3, 3)
    for i in range(3):
        for j in range(3):
            if i == j:
                m[:, i, j] = c + (1 - c) * one_third
            else:
                sign = 1 if (j - i) % 3 == 1 else -1
                m[:, i, j] = (1 - c) * one_third - sign * r * s
    return m


def augment(img_u8: torch.Tensor, labels: torch.Tensor, backgrounds: torch.Tensor,
            gen: torch.Generator, cfg: Augment = Augment()) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented batch.

    img_u8: (B, H, W, 3) uint8; labels: (B, H, W) uint8 0–20; backgrounds: (K, H, W, 3) uint8.
    Returns (B, 3, H, W) float in [-1, 1] and (B, H, W) long labels.
    """
    b, h, w = labels.shape

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    img = img_u8.permute(0, 3, 1, 2).float() / 255
    lab = labels.long()
    alpha = _studio_alpha(img, lab)

    # colour of the person
    gray = img.mean(1, keepdim=True)
    img = gray + (img - gray) * u(*cfg.saturation).view(b, 1, 1, 1)
    img = torch.einsum("bij,bjhw->bihw", _hue_matrix(u(-cfg.hue_deg, cfg.hue_deg)), img)

    # geometry: mirror, zoom, shift, rotation (one affine sampling of image, matte and labels)
    flip = torch.rand(b, generator=gen) < cfg.flip_p
    zoom = u(*cfg.scale)
    rot = torch.deg2rad(u(-cfg.rotate_deg, cfg.rotate_deg))
    sx = torch.where(flip, -1.0, 1.0) / zoom
    theta = torch.zeros(b, 2, 3)
    aspect = h / w
    theta[:, 0, 0] = sx * torch.cos(rot)
    theta[:, 0, 1] = -torch.sin(rot) / zoom * aspect
    theta[:, 1, 0] = sx * torch.sin(rot) / aspect
    theta[:, 1, 1] = torch.cos(rot) / zoom
    theta[:, 0, 2] = u(-2 * cfg.shift, 2 * cfg.shift)
    theta[:, 1, 2] = u(-2 * cfg.shift, 2 * cfg.shift)
    grid = F.affine_grid(theta, (b, 1, h, w), align_corners=False)
    img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    alpha = F.grid_sample(alpha, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = F.grid_sample(lab[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                        align_corners=False)[:, 0].long()
    lab = torch.where(flip.view(b, 1, 1), mirror_permutation()[lab], lab)

    # background
    pick = torch.randint(len(backgrounds), (b,), generator=gen)
    bg = backgrounds[pick].permute(0, 3, 1, 2).float() / 255
    bg = torch.where((torch.rand(b, generator=gen) < cfg.background_p).view(b, 1, 1, 1), bg,
                     torch.ones_like(bg))
    img = alpha * img + (1 - alpha) * bg

    # the whole photo
    mean = img.mean((1, 2, 3), keepdim=True)
    img = (img - mean) * u(*cfg.contrast).view(b, 1, 1, 1) + mean
    img = img * u(*cfg.brightness).view(b, 1, 1, 1)
    blur = (torch.rand(b, generator=gen) < cfg.blur_p).view(b, 1, 1, 1)
    img = torch.where(blur, F.avg_pool2d(img, 3, 1, 1, count_include_pad=False), img)
    img = img + torch.randn(img.shape, generator=gen) * u(0, cfg.noise_max).view(b, 1, 1, 1)
    return img.clamp(0, 1) * 2 - 1, lab
