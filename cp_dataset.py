"""The CP-VTON+ person representation and the VITON-format dataset.

The pure functions here turn (person image, parse labels, body mask, COCO-18 keypoints) into the
22-channel cloth-agnostic person representation of spec §3; the dataset and the inference code
both call them, so there is one copy of this logic.

Arrays are numpy float32, C×H×W at the model size (256×192), normalised to [-1, 1] as
``(x/255 − 0.5)/0.5`` unless stated otherwise. Nothing here imports torch (the OpenVINO serving
path never does); a ``torch.utils.data.DataLoader`` collates the dataset's arrays into tensors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from vton_core.images import load_label_map, load_mask, load_rgb
from vton_core.model_spec import DEFAULT_CONFIG, CPVTONConfig

# LIP / CIHP labels (spec §4).
LABELS = {
    "background": 0, "hat": 1, "hair": 2, "glove": 3, "sunglasses": 4, "upper_clothes": 5,
    "dress": 6, "coat": 7, "socks": 8, "pants": 9, "jumpsuits": 10, "scarf": 11, "skirt": 12,
    "face": 13, "left_arm": 14, "right_arm": 15, "left_leg": 16, "right_leg": 17,
    "left_shoe": 18, "right_shoe": 19, "neck": 20,
}
#: Parse labels kept in the head channels, per stage (spec §3.2).
HEAD_LABELS = {
    "GMM": (1, 4, 13),
    "TOM": (1, 2, 4, 9, 12, 13, 16, 17),
}
#: Upper-body garment labels (upper clothes, dress, coat): the region the try-on replaces.
CLOTH_LABELS = (5, 6, 7)
#: COCO-18 keypoint names in OpenPose order (spec §4); "right" is the person's right.
KEYPOINT_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
#: Binarisation threshold of 8-bit masks (cloth masks are JPEGs in VITON).
MASK_THRESHOLD = 128
#: The body-shape channel is blurred by down-sampling by this factor and back (spec §3.1).
SHAPE_DOWNSAMPLE = 16
STAGES = tuple(HEAD_LABELS)


# ------------------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------------------
def normalize(a: np.ndarray) -> np.ndarray:
    """uint8 H×W×C (or H×W) → float32 C×H×W (or 1×H×W) in [-1, 1], as ToTensor + Normalize(0.5, 0.5)
    (the same float32 operations, so the same bits)."""
    t = np.asarray(a, dtype=np.uint8)
    t = t[None] if t.ndim == 2 else t.transpose(2, 0, 1)
    return np.ascontiguousarray((t.astype(np.float32) / np.float32(255) - np.float32(0.5))
                                / np.float32(0.5))


def body_shape(body_mask: np.ndarray, cfg: CPVTONConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Body mask H×W (bool or 0/255) → blurred shape channel 1×H×W in [-1, 1].

    As the reference: an 8-bit image, PIL BILINEAR down to (W/16, H/16) and back to (W, H).
    """
    m = Image.fromarray(((np.asarray(body_mask) > 0) * 255).astype(np.uint8), "L")
    if m.size != (cfg.width, cfg.height):
        m = m.resize((cfg.width, cfg.height), Image.BILINEAR)
    small = m.resize((cfg.width // SHAPE_DOWNSAMPLE, cfg.height // SHAPE_DOWNSAMPLE), Image.BILINEAR)
    return normalize(np.asarray(small.resize((cfg.width, cfg.height), Image.BILINEAR)))


def label_mask(parse: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """H×W bool: where ``parse`` holds any of ``labels`` (a 256-entry lookup table)."""
    lut = np.zeros(256, dtype=bool)
    lut[list(labels)] = True
    return lut[parse]


def head_image(image: np.ndarray, parse: np.ndarray, stage: str) -> np.ndarray:
    """Person 3×H×W float32 in [-1, 1] → the kept regions of ``stage`` (RGB), −1 elsewhere.

    Equal to the reference's ``image · keep − (1 − keep)`` for finite images.
    """
    keep = label_mask(parse, HEAD_LABELS[stage])
    return np.where(keep, image, np.float32(-1.0)).astype(np.float32, copy=False)


def pose_maps(keypoints: np.ndarray, cfg: CPVTONConfig = DEFAULT_CONFIG) -> np.ndarray:
    """COCO-18 keypoints (K×2 or K×3, pixel coordinates at the model size) → K×H×W in {−1, 1}.

    Each point with ``x > 1 and y > 1`` becomes a filled square of half-size ``cfg.pose_radius``,
    rasterised exactly as PIL's ``ImageDraw.rectangle((x−r, y−r, x+r, y+r))`` in the reference:
    corners truncated towards zero, both ends inclusive, clipped to the image. One slice fill
    per present keypoint into a −1 float32 array (no per-keypoint image).
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, np.shape(keypoints)[-1])[:, :2]
    r = cfg.pose_radius
    out = np.full((len(kp), cfg.height, cfg.width), -1.0, np.float32)
    lo = np.maximum(np.trunc(kp - r).astype(np.int64), 0)              # K×2 (x0, y0), clipped
    hi = np.trunc(kp + r).astype(np.int64) + 1                          # K×2 exclusive ends
    for k in np.flatnonzero((kp[:, 0] > 1) & (kp[:, 1] > 1)):
        out[k, lo[k, 1]:hi[k, 1], lo[k, 0]:hi[k, 0]] = 1.0
    return out


def person_representation(image: np.ndarray, parse: np.ndarray, body_mask: np.ndarray,
                          keypoints: np.ndarray, stage: str,
                          cfg: CPVTONConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The 22-channel agnostic representation ``[shape, head(3), pose(18)]`` for one stage.

    image: 3×H×W in [-1, 1]; parse: H×W uint8 labels; body_mask: H×W bool;
    keypoints: 18×3 (x, y, confidence) in model pixels. Returns 22×H×W in [-1, 1].
    """
    if stage not in HEAD_LABELS:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    return np.concatenate([body_shape(body_mask, cfg), head_image(image, parse, stage),
                           pose_maps(keypoints, cfg)], 0)


def person_representations(image: np.ndarray, parse: np.ndarray, body_mask: np.ndarray,
                           keypoints: np.ndarray, cfg: CPVTONConfig = DEFAULT_CONFIG
                           ) -> dict[str, np.ndarray]:
    """Both stages' representations, sharing the shape and pose channels: {"GMM": 22×H×W, "TOM": …}."""
    shape = body_shape(body_mask, cfg)
    pose = pose_maps(keypoints, cfg)
    return {s: np.concatenate([shape, head_image(image, parse, s), pose], 0) for s in STAGES}


def cloth_mask_array(mask: np.ndarray) -> np.ndarray:
    """Binary mask H×W (bool) → 1×H×W float32 in {0, 1} (the GMM's mask input is not normalised)."""
    return np.asarray(mask, dtype=bool).astype(np.float32)[None]


def keypoints_from_openpose(data: Mapping | Sequence, num_keypoints: int = 18) -> np.ndarray:
    """OpenPose JSON (dict with ``people[0]["pose_keypoints"]`` or ``["pose_keypoints_2d"]``), a
    flat list of x, y, c triples, or a K×2 / K×3 array → K×3 float32 (x, y, confidence).

    A file with no people gives all-zero keypoints (all missing). Raises ``ValueError`` on
    anything else.
    """
    if isinstance(data, Mapping):
        people = data.get("people")
        if not isinstance(people, list):
            raise ValueError("pose JSON has no 'people' list")
        if not people:
            return np.zeros((num_keypoints, 3), np.float32)
        person = people[0]
        if not isinstance(person, Mapping):
            raise ValueError("pose JSON 'people[0]' is not an object")
        flat = person.get("pose_keypoints_2d", person.get("pose_keypoints"))
        if flat is None:
            raise ValueError("pose JSON has neither 'pose_keypoints_2d' nor 'pose_keypoints'")
        data = flat
    if isinstance(data, (list, tuple)):
        # JSON values: numbers only (no strings, no booleans), flat or as [x, y, c] triples.
        values = [v for item in data for v in (item if isinstance(item, (list, tuple)) else (item,))]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError("pose keypoints must be numbers")
    try:
        a = np.asarray(data, dtype=np.float64)
    except OverflowError:     # an integer of hundreds of digits
        raise ValueError("pose keypoints must be finite numbers of a sensible size") from None
    except (TypeError, ValueError):
        raise ValueError("pose keypoints are not numbers") from None
    if a.ndim == 1:
        if a.size != num_keypoints * 3:
            raise ValueError(f"expected {num_keypoints * 3} pose numbers, got {a.size}")
        a = a.reshape(num_keypoints, 3)
    if a.ndim != 2 or a.shape[0] != num_keypoints or a.shape[1] not in (2, 3):
        raise ValueError(f"expected {num_keypoints}×3 keypoints, got shape {a.shape}")
    if a.shape[1] == 2:
        a = np.concatenate([a, (a > 0).all(1, keepdims=True).astype(np.float64)], 1)
    with np.errstate(over="ignore"):
        out = a.astype(np.float32)
    if not np.isfinite(out).all():       # NaN, ±inf, or beyond float32's range
        raise ValueError("pose keypoints must be finite")
    return out


def load_keypoints(path: str | Path) -> np.ndarray:
    """Read an OpenPose JSON file → 18×3 float32."""
    with open(path) as f:
        return keypoints_from_openpose(json.load(f))


GRID_IMAGE = Path(__file__).resolve().parent / "grid.png"
GRID_SPACING = 16   # pixels between the lines of grid.png


def draw_grid(cfg: CPVTONConfig = DEFAULT_CONFIG, spacing: int = GRID_SPACING) -> Image.Image:
    """A W×H RGB picture of black grid lines on white: warped by the TPS grid it shows the warp."""
    a = np.full((cfg.height, cfg.width, 3), 255, np.uint8)
    a[spacing // 2::spacing, :] = 0
    a[:, spacing // 2::spacing] = 0
    return Image.fromarray(a, "RGB")


def grid_image_array(cfg: CPVTONConfig = DEFAULT_CONFIG) -> np.ndarray:
    """grid.png (beside this file) as 3×H×W float32 in [-1, 1]; drawn anew if the file is absent."""
    im = Image.open(GRID_IMAGE).convert("RGB") if GRID_IMAGE.is_file() else draw_grid(cfg)
    if im.size != (cfg.width, cfg.height):
        im = im.resize((cfg.width, cfg.height), Image.NEAREST)
    return normalize(np.asarray(im))


# ------------------------------------------------------------------------------------------------
# Dataset (VITON layout, spec §4)
# ------------------------------------------------------------------------------------------------
def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """A pairs file of lines ``person.jpg cloth.jpg`` → list of (person, cloth) names."""
    pairs = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            pairs.append((parts[0], parts[1]))
    return pairs


class CPDataset:
    """VITON-format dataset: ``<root>/<datamode>/{image, image-parse-new, image-mask, pose,
    cloth, cloth-mask}`` and a pairs file. A map-style dataset for ``torch.utils.data.DataLoader``
    (whose collation turns the arrays into tensors).

    Each item is a dict of numpy arrays: ``im_name``, ``c_name``; ``image`` 3×H×W, ``cloth`` 3×H×W in [-1, 1];
    ``cloth_mask`` 1×H×W in {0, 1}; ``agnostic`` (this stage's) and ``agnostic_gmm`` /
    ``agnostic_tom`` 22×H×W; ``parse_cloth`` 1×H×W in {0, 1} (the person's upper-body garment);
    ``parse`` H×W int64 labels; ``keypoints`` 18×3. With ``stage="TOM"`` and ``warp_dir`` given,
    ``warped_cloth`` / ``warped_mask`` are read from ``warp_dir/{warp-cloth, warp-mask}``.
    """

    def __init__(self, dataroot: str | Path, datamode: str = "test", data_list: str = "test_pairs.txt",
                 stage: str = "GMM", cfg: CPVTONConfig = DEFAULT_CONFIG,
                 warp_dir: str | Path | None = None):
        if stage not in HEAD_LABELS:
            raise ValueError(f"stage must be one of {STAGES}")
        self.root = Path(dataroot) / datamode
        self.stage = stage
        self.cfg = cfg
        self.warp_dir = Path(warp_dir) if warp_dir else None
        list_path = Path(data_list)
        if not list_path.is_absolute() and not list_path.exists():
            list_path = Path(dataroot) / data_list
        self.pairs = read_pairs(list_path)

    def __len__(self) -> int:
        return len(self.pairs)

    def _checked_rgb(self, path: Path) -> Image.Image:
        im = load_rgb(path, field=str(path.name))
        if im.size != (self.cfg.width, self.cfg.height):
            im = im.resize((self.cfg.width, self.cfg.height), Image.BILINEAR)
        return im

    def __getitem__(self, index: int) -> dict:
        im_name, c_name = self.pairs[index]
        stem = Path(im_name).stem
        root = self.root
        image = normalize(np.asarray(self._checked_rgb(root / "image" / im_name)))
        cloth = normalize(np.asarray(self._checked_rgb(root / "cloth" / c_name)))
        cloth_mask = cloth_mask_array(load_mask(root / "cloth-mask" / c_name, threshold=MASK_THRESHOLD))
        parse = load_label_map(root / "image-parse-new" / f"{stem}.png")
        body = load_mask(root / "image-mask" / f"{stem}.png", threshold=1)
        keypoints = load_keypoints(root / "pose" / f"{stem}_keypoints.json")
        reps = person_representations(image, parse, body, keypoints, self.cfg)
        item = {
            "im_name": im_name, "c_name": c_name, "image": image, "cloth": cloth,
            "cloth_mask": cloth_mask, "agnostic": reps[self.stage], "agnostic_gmm": reps["GMM"],
            "agnostic_tom": reps["TOM"], "parse": parse.astype(np.int64),
            "parse_cloth": label_mask(parse, CLOTH_LABELS).astype(np.float32)[None],
            "keypoints": keypoints,
        }
        if self.stage == "TOM" and self.warp_dir is not None:
            item["warped_cloth"] = normalize(np.asarray(self._checked_rgb(self.warp_dir / "warp-cloth" / im_name)))
            item["warped_mask"] = cloth_mask_array(
                load_mask(self.warp_dir / "warp-mask" / im_name, threshold=MASK_THRESHOLD))
        return item
