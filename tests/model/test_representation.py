"""The person representation's pure functions and the VITON dataset's input formats."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

import cp_dataset
from cp_dataset import CPDataset, keypoints_from_openpose, normalize, person_representation, pose_maps
from networks import DEFAULT_CONFIG
from tests.helpers.shared_data import VITON, needs_shared

H, W, R = DEFAULT_CONFIG.height, DEFAULT_CONFIG.width, DEFAULT_CONFIG.pose_radius


def pil_pose_maps(kp: np.ndarray) -> np.ndarray:
    """The reference's rasterisation: one PIL image per keypoint."""
    maps = []
    for x, y in kp[:, :2]:
        im = Image.new("L", (W, H))
        if x > 1 and y > 1:
            ImageDraw.Draw(im).rectangle((x - R, y - R, x + R, y + R), "white", "white")
        maps.append(normalize(np.asarray(im))[0])
    return np.stack(maps)


def test_pose_maps_equal_pil_rectangles_for_float_and_edge_coordinates():
    rng = np.random.default_rng(0)
    kp = np.zeros((18, 3))
    kp[:, 0] = rng.uniform(-20, W + 20, 18)
    kp[:, 1] = rng.uniform(-20, H + 20, 18)
    kp[:4, :2] = [[0.5, 100], [1.0, 1.0], [1.5, 1.5], [W - 0.3, H - 0.7]]   # edge cases
    kp[4:8, :2] = np.round(kp[4:8, :2])                                      # integer coordinates
    np.testing.assert_array_equal(pose_maps(kp), pil_pose_maps(kp))


def test_representation_layout():
    rng = np.random.default_rng(1)
    image = rng.uniform(-1, 1, (3, H, W)).astype(np.float32)
    parse = rng.integers(0, 21, (H, W)).astype(np.uint8)
    body = parse > 0
    kp = np.column_stack([rng.uniform(2, W, 18), rng.uniform(2, H, 18), np.ones(18)])
    for stage, labels in cp_dataset.HEAD_LABELS.items():
        rep = person_representation(image, parse, body, kp, stage)
        assert rep.shape == (DEFAULT_CONFIG.agnostic_channels, H, W)
        assert rep.min() >= -1 and rep.max() <= 1
        keep = np.isin(parse, labels)
        np.testing.assert_array_equal(rep[1:4][:, keep], image[:, keep])
        assert np.all(rep[1:4][:, ~keep] == -1)
        np.testing.assert_array_equal(rep[4:], pose_maps(kp))


def test_openpose_key_variants_and_arrays():
    flat = list(np.arange(54, dtype=float) + 0.25)
    a = keypoints_from_openpose({"people": [{"pose_keypoints": flat}]})
    b = keypoints_from_openpose({"people": [{"pose_keypoints_2d": flat}]})
    c = keypoints_from_openpose(np.asarray(flat).reshape(18, 3))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert a.dtype == np.float32 and a[0, 0] == 0.25
    assert not keypoints_from_openpose({"people": []}).any()
    for bad in ({"people": [{}]}, {"nope": 1}, [1, 2, 3], np.zeros((17, 3)), [float("nan")] * 54):
        with pytest.raises(ValueError):
            keypoints_from_openpose(bad)


@needs_shared
def test_dataset_accepts_palette_parse_png_masks_and_pose_2d(tmp_path):
    src = VITON / "test"
    ref = CPDataset(VITON, "test", "test_pairs.txt", stage="TOM")
    root = tmp_path / "test"
    shutil.copytree(src, root)
    for png in (root / "image-parse-new").glob("*.png"):              # L → P (same indices)
        p = Image.open(png).convert("L").convert("P")
        p.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
        p.save(png)
    for js in (root / "pose").glob("*.json"):                         # old key → new key, floats
        d = json.loads(js.read_text())
        d["people"][0]["pose_keypoints_2d"] = [float(v) for v in d["people"][0].pop("pose_keypoints")]
        js.write_text(json.dumps(d))
    pairs = []
    for line in (VITON / "test_pairs.txt").read_text().split("\n"):
        if not line.strip():
            continue
        person, cloth = line.split()
        png_name = cloth.replace(".jpg", ".png")                          # cloth mask as PNG
        m = Image.open(root / "cloth-mask" / cloth).convert("L")
        Image.fromarray(((np.asarray(m) >= 128) * 255).astype(np.uint8)).save(root / "cloth-mask" / png_name)
        shutil.copy(root / "cloth" / cloth, root / "cloth" / png_name)
        pairs.append(f"{person} {png_name}")
    (tmp_path / "pairs.txt").write_text("\n".join(pairs))
    ds = CPDataset(tmp_path, "test", tmp_path / "pairs.txt", stage="TOM")
    for i in range(len(ds)):
        a, b = ref[i], ds[i]
        for key in ("agnostic_gmm", "agnostic_tom", "cloth_mask", "image"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
