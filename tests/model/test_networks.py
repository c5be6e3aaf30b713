"""Architecture, checkpoints and geometry of the networks (random weights, CPU)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import networks
from networks import DEFAULT_CONFIG, TpsGridGen, build_gmm, build_tom, feature_correlation, warp_cloth, warp_image
from tests.helpers.shared_data import SPEC_KEYS, needs_shared
from vton_core.errors import CheckpointError
from vton_core.weights import load_checkpoint, random_state_dict, write_random_checkpoints

H, W = DEFAULT_CONFIG.height, DEFAULT_CONFIG.width


def identity_grid(b: int = 1) -> torch.Tensor:
    """B×H×W×2 grid of the pixel centres in align_corners=True coordinates."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    return torch.stack([xs, ys], -1).expand(b, H, W, 2)


@needs_shared
@pytest.mark.parametrize("name,build", [("GMM", build_gmm), ("TOM", build_tom)])
def test_state_dict_keys_and_shapes_equal_spec(name, build):
    spec = json.loads(SPEC_KEYS.read_text())[name]
    mine = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in build().state_dict().items()]
    assert mine == [tuple(e) for e in spec]


def test_parameter_counts_match_published_sizes():
    # spec §5: GMM ≈ 19.1 M, TOM ≈ 21.4 M parameters; 104 and 24 state-dict entries.
    gmm, tom = build_gmm(), build_tom()
    assert len(gmm.state_dict()) == 104 and len(tom.state_dict()) == 24
    assert round(sum(p.numel() for p in gmm.parameters()) / 1e6, 1) == 19.1
    assert round(sum(p.numel() for p in tom.parameters()) / 1e6, 1) == 21.4


def test_geometry_buffers_are_not_persistent():
    sd = build_gmm().state_dict()
    assert not any("gridGen" in k for k in sd)


def test_official_format_round_trips_strict(tmp_path):
    gmm_path, tom_path = write_random_checkpoints(tmp_path)
    for build, path, seed in ((build_gmm, gmm_path, 1234), (build_tom, tom_path, 5678)):
        saved = torch.load(path, weights_only=True)
        assert isinstance(saved, dict) and all(isinstance(v, torch.Tensor) for v in saved.values())
        m = build()
        digest = load_checkpoint(m, path)
        assert len(digest) == 64
        for k, v in random_state_dict(build(), seed).items():
            torch.testing.assert_close(m.state_dict()[k], v, rtol=0, atol=0)


def test_missing_checkpoint_names_path_and_remedy(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(build_gmm(), tmp_path / "GMM" / "gmm_final.pth")
    assert "gmm_final.pth" in str(e.value) and "download_checkpoints.sh" in str(e.value)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    gmm_path, _ = write_random_checkpoints(tmp_path)
    data = gmm_path.read_bytes()
    gmm_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*gmm_final.pth"):
        load_checkpoint(build_gmm(), gmm_path)


def test_wrong_shape_checkpoint_is_a_clear_error(tmp_path):
    state = build_gmm().state_dict()
    state["regression.linear.weight"] = torch.zeros(50, 700)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"wrong shape, e.g. regression.linear.weight"):
        load_checkpoint(build_gmm(), path)


def test_wrong_keys_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "tom.pth"
    torch.save(build_gmm().state_dict(), path)        # a GMM file where the TOM is expected
    with pytest.raises(CheckpointError, match="does not match the CP-VTON\\+ architecture"):
        load_checkpoint(build_tom(), path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": torch.zeros(1), "obj": object()}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(build_gmm(), path)


def test_zero_offsets_give_the_identity_grid():
    grid = TpsGridGen()(torch.zeros(2, 2 * DEFAULT_CONFIG.num_control_points))
    assert grid.shape == (2, H, W, 2)
    torch.testing.assert_close(grid, identity_grid(2), rtol=0, atol=1e-5)


def test_affine_offsets_are_reproduced_exactly():
    # A TPS through affinely displaced control points is that affine map (no bending).
    ctrl = torch.from_numpy(networks.tps_control_points(5)).float()       # N×2
    a = torch.tensor([[0.9, 0.1], [-0.05, 1.1]])
    t = torch.tensor([0.05, -0.1])
    target = ctrl @ a.T + t
    theta = (target - ctrl).T.reshape(1, -1)                              # x offsets, then y
    expected = identity_grid(1) @ a.T + t
    torch.testing.assert_close(TpsGridGen()(theta), expected, rtol=0, atol=1e-5)


def test_identity_grid_reproduces_the_input_with_align_corners_true():
    torch.manual_seed(0)
    cloth = torch.rand(1, 3, H, W) * 2 - 1
    mask = (torch.rand(1, 1, H, W) > 0.5).float()
    warped, warped_mask = warp_cloth(cloth, mask, identity_grid(1))
    # Tolerance 1e-4: float32 rounding of linspace moves a sample by ~1e-5 px.
    torch.testing.assert_close(warped, cloth, rtol=0, atol=1e-4)
    torch.testing.assert_close(warped_mask, mask, rtol=0, atol=1e-4)
    # Pin the choice: align_corners=False would shift every pixel of this grid.
    shifted = F.grid_sample(cloth, identity_grid(1), align_corners=False, padding_mode="border")
    assert (shifted - cloth).abs().max() > 0.1


def test_padding_modes_border_for_cloth_zeros_for_mask():
    cloth = torch.ones(1, 3, H, W)
    mask = torch.ones(1, 1, H, W)
    outside = torch.full((1, H, W, 2), 2.0)                               # entirely off the image
    warped, warped_mask = warp_cloth(cloth, mask, outside)
    assert torch.all(warped == 1) and torch.all(warped_mask == 0)
    assert torch.all(warp_image(cloth, outside) == 0)


def test_tom_upsampling_is_bilinear_without_align_corners():
    ups = [m for m in build_tom().modules() if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == DEFAULT_CONFIG.tom_downsamplings
    assert all(u.mode == "bilinear" and u.align_corners is False and u.scale_factor == 2 for u in ups)


def test_correlation_layout_is_column_major_over_the_first_map():
    torch.manual_seed(0)
    fa, fb = torch.randn(2, 8, 4, 3), torch.randn(2, 8, 4, 3)
    corr = feature_correlation(fa, fb)                                    # B×12×4×3
    h = 4
    for (y, x, i, j) in [(0, 0, 0, 0), (3, 1, 2, 2), (1, 2, 3, 0)]:
        expected = (fa[:, :, y, x] * fb[:, :, i, j]).sum(1)
        torch.testing.assert_close(corr[:, x * h + y, i, j], expected)


def test_forward_shapes_and_finiteness():
    gmm, tom = build_gmm(), build_tom()
    b = 2
    with torch.inference_mode():
        grid, theta = gmm(torch.randn(b, 22, H, W), torch.rand(b, 1, H, W))
        raw = tom(torch.randn(b, 26, H, W))
    assert grid.shape == (b, H, W, 2) and theta.shape == (b, 50)
    assert theta.abs().max() <= 1 and torch.isfinite(grid).all()
    assert raw.shape == (b, 4, H, W) and torch.isfinite(raw).all()


def test_models_follow_to_dtype_and_device():
    gmm = build_gmm().to(torch.float64)
    assert gmm.gridGen.kernel.dtype == torch.float64
    with torch.inference_mode():
        grid, _ = gmm(torch.randn(1, 22, H, W, dtype=torch.float64),
                      torch.rand(1, 1, H, W, dtype=torch.float64))
    assert grid.dtype == torch.float64
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        g = build_gmm().to("cuda")
        assert g.gridGen.kernel.device.type == "cuda"


def test_no_hardwired_cuda_calls():
    import inspect

    import cp_dataset
    import cpvton_infer
    for mod in (networks, cp_dataset, cpvton_infer):
        assert ".cuda()" not in inspect.getsource(mod)


def test_tampered_checkpoint_is_refused_when_its_hash_is_pinned(tmp_path):
    from vton_core.weights import file_sha256
    gmm_path, _ = write_random_checkpoints(tmp_path)
    good = file_sha256(gmm_path)
    assert load_checkpoint(build_gmm(), gmm_path, expected_sha256=good.upper()) == good
    state = torch.load(gmm_path, weights_only=True)
    state["regression.linear.bias"] += 0.01                      # same keys and shapes
    torch.save(state, gmm_path)
    with pytest.raises(CheckpointError, match="not the expected"):
        load_checkpoint(build_gmm(), gmm_path, expected_sha256=good)
