"""training/ (evaluate, train, losses, metrics): losses from their definitions, metrics against
skimage, a few CPU training steps that reduce the loss, checkpoint round-trips and exact resume,
and the evaluation's folders and metrics.json — on a tiny VITON-format dataset the test draws
(so the core runs without ../shared) and, where present, on the three shared samples."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from networks import build_gmm, build_tom
from tests.helpers.shared_data import ROOT, VITON, needs_shared
from training import evaluate as evaluation
from training import losses, metrics, train
from vton_core.weights import GMM_FILE, TOM_FILE, load_checkpoint

H, W = 256, 192




# ------------------------------------------------------------------------------------------------
# A tiny drawn dataset in the VITON layout
# ------------------------------------------------------------------------------------------------
def _keypoints(dx: int) -> list[float]:
    pts = {0: (96, 40), 1: (96, 70), 2: (66, 72), 3: (56, 110), 4: (52, 145), 5: (126, 72),
           6: (136, 110), 7: (140, 145), 8: (78, 150), 9: (76, 195), 10: (76, 240), 11: (114, 150),
           12: (116, 195), 13: (116, 240), 14: (90, 34), 15: (102, 34), 16: (84, 38), 17: (108, 38)}
    flat = []
    for k in range(18):
        x, y = pts[k]
        flat += [float(x + dx), float(y), 0.9]
    return flat


def _draw_person(root: Path, stem: str, shirt: tuple, dx: int) -> None:
    img = Image.new("RGB", (W, H), (235, 235, 230))
    parse = Image.new("L", (W, H), 0)
    d, p = ImageDraw.Draw(img), ImageDraw.Draw(parse)
    for box, colour, label in (
            ((80 + dx, 18, 112 + dx, 58), (225, 190, 160), 13),     # face
            ((80 + dx, 10, 112 + dx, 22), (60, 40, 30), 2),         # hair
            ((50 + dx, 70, 142 + dx, 150), shirt, 5),               # upper clothes
            ((70 + dx, 150, 122 + dx, 250), (40, 50, 90), 9)):      # pants
        d.rectangle(box, fill=colour)
        p.rectangle(box, fill=label)
    img.save(root / "image" / f"{stem}.jpg", quality=95)
    parse.save(root / "image-parse-new" / f"{stem}.png")
    body = Image.fromarray(((np.asarray(parse) > 0) * 255).astype(np.uint8), "L")
    body.save(root / "image-mask" / f"{stem}.png")
    (root / "pose" / f"{stem}_keypoints.json").write_text(
        json.dumps({"people": [{"pose_keypoints": _keypoints(dx)}]}))


def _draw_cloth(root: Path, name: str, colour: tuple) -> None:
    img = Image.new("RGB", (W, H), (255, 255, 255))
    mask = Image.new("L", (W, H), 0)
    for im, fill in ((img, colour), (mask, 255)):
        dr = ImageDraw.Draw(im)
        dr.rectangle((40, 50, 152, 210), fill=fill)
        dr.polygon([(40, 50), (10, 120), (30, 130), (40, 90)], fill=fill)
        dr.polygon([(152, 50), (182, 120), (162, 130), (152, 90)], fill=fill)
    img.save(root / "cloth" / name, quality=95)
    mask.save(root / "cloth-mask" / name, format="JPEG", quality=95)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """``<root>/train`` with two people and two cloths; pairs: one same-cloth, one cross pair."""
    root = tmp_path_factory.mktemp("tiny_viton")
    mode = root / "train"
    for sub in ("image", "image-parse-new", "image-mask", "pose", "cloth", "cloth-mask"):
        (mode / sub).mkdir(parents=True)
    _draw_person(mode, "000001_0", (200, 40, 40), 0)
    _draw_person(mode, "000002_0", (40, 160, 60), 6)
    _draw_cloth(mode, "000001_1.jpg", (200, 40, 40))
    _draw_cloth(mode, "000002_1.jpg", (40, 160, 60))
    (root / "pairs.txt").write_text("000001_0.jpg 000001_1.jpg\n000002_0.jpg 000001_1.jpg\n")
    (root / "one.txt").write_text("000001_0.jpg 000001_1.jpg\n")
    return root


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory) -> Path:
    """A randomly initialised torchvision VGG19 ``features`` state dict (stands in for the real one)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19_features.pth"
    torch.save(losses.vgg19_features_module().state_dict(), path)
    return path


def _cfg(stage: str, steps: int, **kw) -> train.TrainConfig:
    base = dict(stage=stage, steps=steps, batch_size=1, keep_step=steps, save_count=0,
                display_count=0, shuffle=False, progress=False)
    base.update(kw)
    return train.TrainConfig(**base)


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------
def test_gic_is_zero_for_identity_and_affine_grids_and_positive_when_bent():
    ident = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    affine = torch.tensor([[[1.2, 0.3, 0.1], [-0.2, 0.9, 0.05]]])
    for theta in (ident, affine):
        grid = F.affine_grid(theta, (1, 3, H, W), align_corners=True)
        assert losses.gic_loss(grid).item() < 1e-6
    # the GMM's TPS with zero offsets is the identity grid
    tps = build_gmm().gridGen(torch.zeros(2, 50))
    assert losses.gic_loss(tps).item() < 1e-6
    bent = F.affine_grid(ident, (1, 3, H, W), align_corners=True).clone()
    bent[..., 0] = bent[..., 0] ** 3          # spacing in x varies along the rows
    assert losses.gic_loss(bent).item() > 1e-4


def test_gic_definition_on_a_small_grid():
    gx = torch.tensor([[0.0, 1.0, 3.0, 6.0]]).expand(3, 4)       # x intervals 1, 2, 3
    gy = torch.tensor([[0.0], [1.0], [1.5]]).expand(3, 4)        # y intervals 1, 0.5
    grid = torch.stack([gx, gy], -1)[None]                        # 1×3×4×2
    # interior points (row 1, cols 1..2): x: |1−2| + |2−3| = 2; y: |1−0.5|·2 = 1 → 3 / (1·3·4)
    assert losses.gic_loss(grid).item() == pytest.approx(3 / 12)


def test_cloth_region_and_gmm_loss():
    image = torch.full((1, 3, 4, 4), -0.5)
    pcm = torch.zeros(1, 1, 4, 4)
    pcm[..., :2, :] = 1
    region = losses.cloth_region(image, pcm)
    assert torch.all(region[..., :2, :] == -0.5) and torch.all(region[..., 2:, :] == 1)
    grid = F.affine_grid(torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]), (1, 3, 4, 4), align_corners=True)
    out = losses.gmm_loss(region, region, grid)
    assert out["l1"].item() == 0 and out["loss"].item() == pytest.approx(0.0, abs=1e-4)


def test_vgg19_file_loading_and_perceptual_loss(vgg19_file, tmp_path):
    feats = losses.load_vgg19_features(vgg19_file)
    full = tmp_path / "full.pth"      # a full torchvision state dict (features.* + classifier.*)
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}
               | {"classifier.0.weight": torch.zeros(2, 2)}, full)
    losses.load_vgg19_features(full)
    bad = tmp_path / "bad.pth"
    torch.save({"0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="VGG19"):
        losses.load_vgg19_features(bad)
    with pytest.raises(FileNotFoundError):
        losses.load_vgg19_features(tmp_path / "absent.pth")
    crit = losses.VGGPerceptualLoss(feats)
    x = torch.rand(1, 3, 64, 48) * 2 - 1
    assert crit(x, x).item() == pytest.approx(0.0, abs=1e-7)
    y = x.clone().requires_grad_(True)
    val = crit(y, torch.rand(1, 3, 64, 48) * 2 - 1)
    val.backward()
    assert val.item() > 0 and y.grad is not None
    assert not any(p.requires_grad for p in crit.parameters())


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------
def test_ssim_psnr_iou():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 48, generator=g)
    y = (x + 0.1 * torch.randn(2, 3, 64, 48, generator=g)).clamp(0, 1)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(2))
    s = metrics.ssim(x, y)
    assert torch.all((s > 0) & (s < 1))
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(metrics.psnr(x, y), 10 * torch.log10(1 / mse), atol=1e-3)
    assert metrics.psnr(x, x)[0].item() == metrics.PSNR_MAX_DB
    a = torch.zeros(1, 1, 4, 4)
    b = torch.zeros(1, 1, 4, 4)
    a[..., :2, :] = 1          # 8 pixels
    b[..., 1:3, :] = 0.9       # 8 pixels, 4 shared
    assert metrics.mask_iou(a, b).item() == pytest.approx(4 / 12)
    assert metrics.mask_iou(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)).item() == 1.0
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return
    for i in range(2):
        ref = structural_similarity(x[i].numpy(), y[i].numpy(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, channel_axis=0)
        assert s[i].item() == pytest.approx(ref, abs=1e-5)


def test_inception_score_extremes():
    uniform = torch.full((6, 10), 0.1)
    assert metrics.inception_score(uniform)[0] == pytest.approx(1.0)
    onehot = torch.eye(6)
    assert metrics.inception_score(onehot)[0] == pytest.approx(6.0, rel=1e-6)


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory) -> tuple[Path, Path]:
    """Random stand-ins for the VGG16 backbone and the LPIPS linear layers."""
    torch.manual_seed(1)
    tmp_path = tmp_path_factory.mktemp("lpips")
    backbone, lin = tmp_path / "vgg16.pth", tmp_path / "lpips_vgg.pth"
    torch.save(losses.vgg_features_module("D").state_dict(), backbone)
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1)
                for k, c in enumerate(metrics.LPIPS_CHANNELS)}, lin)
    return backbone, lin


def test_lpips_from_local_files(lpips_files):
    backbone, lin = lpips_files
    net = metrics.LPIPS.from_files(backbone, lin)
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    y = torch.rand(2, 3, 64, 48) * 2 - 1
    assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-6)
    d = net(x, y)
    assert d.shape == (2,) and torch.all(d > 0)
    with pytest.raises(ValueError, match="lin0"):
        metrics.LPIPS(torch.load(backbone, weights_only=True), {})   # no linear-layer weights


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def test_batch_sampler_is_a_function_of_step():
    full = list(train.ResumableBatchSampler(3, 2, steps=5, seed=7))
    tail = list(train.ResumableBatchSampler(3, 2, steps=5, start_step=2, seed=7))
    assert full[2:] == tail
    flat = [i for b in full[:3] for i in b]          # 6 samples = 2 epochs of 3
    assert sorted(flat[:3]) == [0, 1, 2] and sorted(flat[3:6]) == [0, 1, 2]


def test_linear_decay_schedule():
    opt = train.build_optimizer(torch.nn.Linear(2, 2), 1.0)
    sched = train.build_scheduler(opt, steps=6, keep=2)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1, 1, 1, 0.75, 0.5, 0.25])


@pytest.fixture(scope="module")
def gmm_run(tiny_data, tmp_path_factory):
    """Six GMM steps on one pair (batch 1), a resumable checkpoint every 3 steps."""
    out = tmp_path_factory.mktemp("gmm_run")
    torch.manual_seed(0)
    hist = train.train_gmm(tiny_data, "train", tiny_data / "one.txt", out,
                           _cfg("GMM", 6, save_count=3, display_count=3, lr=2e-4),
                           torch.device("cpu"))
    return out, hist


@pytest.mark.slow
def test_gmm_training_reduces_loss_and_writes_files(gmm_run):
    out, hist = gmm_run
    assert [h["step"] for h in hist] == list(range(1, 7))
    assert all(math.isfinite(h["loss"]) for h in hist)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert all(h["loss"] == pytest.approx(h["l1"] + 40 * h["gic"], rel=1e-5) for h in hist)
    stage = out / "GMM"
    for name in ("step_000003.pth", "step_000006.pth", "gmm_final.pth", "loss_log.jsonl",
                 "samples/step_000003.jpg", "samples/step_000006.jpg"):
        assert (stage / name).is_file(), name
    assert Image.open(stage / "samples" / "step_000003.jpg").size == (3 * W, 3 * H)
    assert len((stage / "loss_log.jsonl").read_text().splitlines()) == 6


@pytest.mark.slow
def test_gmm_checkpoints_round_trip(gmm_run):
    out, _ = gmm_run
    gmm = build_gmm()
    load_checkpoint(gmm, out / GMM_FILE)                          # strict, weights_only
    final = torch.load(out / GMM_FILE, weights_only=True)
    step = torch.load(out / "GMM" / "step_000006.pth", weights_only=True)
    assert set(step) >= {"model", "optimizer", "scheduler", "step"} and step["step"] == 6
    assert step["model"].keys() == final.keys()
    assert all(torch.equal(step["model"][k], final[k]) for k in final)
    assert final["extractionA.model.2.num_batches_tracked"].item() == 6   # BatchNorm trained


@pytest.mark.slow
def test_gmm_resume_matches_uninterrupted_run(gmm_run, tiny_data, tmp_path):
    out, hist = gmm_run
    (tmp_path / "GMM").mkdir()
    shutil.copy(out / "GMM" / "step_000003.pth", tmp_path / "GMM")
    resumed = train.train_gmm(tiny_data, "train", tiny_data / "one.txt", tmp_path,
                              _cfg("GMM", 6, lr=2e-4), torch.device("cpu"), resume="latest")
    assert [h["step"] for h in resumed] == [4, 5, 6]
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in hist[3:]], rel=1e-4)
    a = torch.load(out / GMM_FILE, weights_only=True)
    b = torch.load(tmp_path / GMM_FILE, weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


@pytest.mark.slow
def test_tom_training_reduces_loss_and_model_loads(gmm_run, tiny_data, vgg19_file):
    out, _ = gmm_run
    torch.manual_seed(0)
    hist = train.train_tom(tiny_data, "train", tiny_data / "one.txt", out,
                           _cfg("TOM", 3, lr=2e-4, save_count=3), torch.device("cpu"),
                           gmm_checkpoint=out / GMM_FILE, vgg_checkpoint=vgg19_file)
    assert all(h["vgg"] > 0 for h in hist)
    assert all(h["loss"] == pytest.approx(h["l1"] + h["vgg"] + h["mask"], rel=1e-5) for h in hist)
    assert hist[-1]["loss"] < hist[0]["loss"]
    load_checkpoint(build_tom(), out / TOM_FILE)
    assert torch.load(out / "TOM" / "step_000003.pth", weights_only=True)["step"] == 3
    from cpvton_infer import CPVTONPlusModel

    model = CPVTONPlusModel(out, device="cpu", precision="fp32", backend="torch")   # both trained finals, strictly
    assert not model.weights.random


def test_tom_needs_warped_cloth(tiny_data, tmp_path, capsys):
    with pytest.raises(ValueError, match="gmm_checkpoint"):
        train.train_tom(tiny_data, "train", tiny_data / "one.txt", tmp_path, _cfg("TOM", 1),
                        torch.device("cpu"))
    with pytest.raises(SystemExit) as exc:
        train.main(["--stage", "TOM", "--dataroot", str(tiny_data), "--steps", "1",
                    "--checkpoint_dir", str(tmp_path)])
    assert exc.value.code == 2 and "--gmm_checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Evaluation (training.evaluate)
# ------------------------------------------------------------------------------------------------
def test_same_cloth_rule():
    assert evaluation.is_same_cloth("000001_0.jpg", "000001_1.jpg")
    assert not evaluation.is_same_cloth("000002_0.jpg", "000001_1.jpg")
    assert not evaluation.is_same_cloth("000001_0.jpg", "270.jpg")


def _expected_files(result: Path, mode: str, names: list[str]) -> list[Path]:
    return ([result / "GMM" / mode / d / n for d in evaluation.GMM_DIRS for n in names]
            + [result / "TOM" / mode / d / n for d in evaluation.TOM_DIRS for n in names])


@pytest.mark.slow
def test_evaluation_writes_layout_and_metrics(tiny_data, random_ckpt_dir, lpips_files, tmp_path):
    result = tmp_path / "result"
    backbone, lin = lpips_files
    rc = evaluation.main(["--dataroot", str(tiny_data), "--datamode", "train",
                          "--data_list", str(tiny_data / "pairs.txt"),
                          "--checkpoint_dir", str(random_ckpt_dir), "--result_dir", str(result),
                          "-b", "2", "--device", "cpu", "--no_progress",
                          "--lpips_backbone", str(backbone), "--lpips_weights", str(lin)])
    assert rc == 0
    for f in _expected_files(result, "train", ["000001_0.jpg", "000002_0.jpg"]):
        assert f.is_file(), f
        assert Image.open(f).size == (W, H)
    m = json.loads((result / "metrics.json").read_text())
    assert m["num_pairs"] == 2 and m["num_same_cloth"] == 1          # auto: X_0 with X_1 only
    assert -1 <= m["ssim"] <= 1 and m["psnr"] > 0 and 0 <= m["iou"] <= 1 and m["lpips"] > 0
    assert m["is"] is None and "is skipped" in m["note"]
    paired = [r for r in m["per_pair"] if r["same_cloth"]]
    assert [r["im_name"] for r in paired] == ["000001_0.jpg"]
    # the saved try-on is what SSIM/PSNR were computed on (8-bit, before JPEG)
    assert paired[0]["ssim"] == pytest.approx(m["ssim"])
    # the evaluation's GMM output is what training.train --warp_dir reads
    hist = train.train_tom(tiny_data, "train", tiny_data / "one.txt", tmp_path / "ck",
                           _cfg("TOM", 1), torch.device("cpu"),
                           warp_dir=result / "GMM" / "train")
    assert hist[0]["vgg"] == 0 and math.isfinite(hist[0]["loss"])


@pytest.mark.slow
@needs_shared
def test_evaluation_on_shared_samples(random_ckpt_dir, tmp_path):
    result = tmp_path / "shared_result"
    m = evaluation.evaluate(VITON, "test", VITON / "test_pairs.txt", random_ckpt_dir, result,
                            batch_size=2, device="cpu", pairing="paired", progress=False)
    names = [line.split()[0] for line in (VITON / "test_pairs.txt").read_text().splitlines() if line.strip()]
    for f in _expected_files(result, "test", names):
        assert f.is_file(), f
    saved = json.loads((result / "metrics.json").read_text())
    assert saved["num_same_cloth"] == 3
    assert saved["lpips"] is None and "lpips skipped" in saved["note"]
    assert saved["ssim"] == pytest.approx(m["ssim"]) and 0 <= saved["iou"] <= 1


@pytest.mark.slow
def test_cli_help_lists_options():
    for module, options in (("training.evaluate", ("--dataroot", "--datamode", "--data_list", "--checkpoint_dir",
                                         "--result_dir", "--lpips_weights", "--inception_weights")),
                            ("training.train", ("--stage", "--steps", "--checkpoint_dir", "--resume",
                                          "--vgg_checkpoint", "--gmm_checkpoint", "--warp_dir"))):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                             text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        for opt in options:
            assert opt in out.stdout, (module, opt)
