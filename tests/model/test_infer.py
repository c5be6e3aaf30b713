"""CPVTONPlusModel: loading rules, input forms, batching, precision."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cpvton_infer import CPVTONPlusModel, cpu_has_native_bf16
from tests.helpers.shared_data import needs_shared, viton_pairs, viton_sample
from training.metrics import psnr
from vton_core.errors import CheckpointError, InvalidInput


def test_missing_checkpoints_fail_loudly(tmp_path):
    with pytest.raises(CheckpointError) as e:
        CPVTONPlusModel(tmp_path, device="cpu")
    msg = str(e.value)
    assert str(tmp_path / "GMM" / "gmm_final.pth") in msg and "download_checkpoints.sh" in msg


def test_random_weights_only_when_asked_and_then_flagged(tmp_path, random_ckpt_dir):
    m = CPVTONPlusModel(tmp_path, device="cpu", allow_random_weights=True, backend="torch")
    assert m.weights.random
    # The in-memory random weights are the same as the files the tests write, and those files
    # are recognised as random too (issue 14, item 6).
    files = CPVTONPlusModel(random_ckpt_dir, device="cpu", backend="torch")
    assert files.weights.random
    for a, b in zip(m.gmm.state_dict().values(), files.gmm.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoint_paths_are_overridable(tmp_path, random_ckpt_dir):
    m = CPVTONPlusModel(tmp_path / "nowhere", device="cpu", backend="torch",
                        gmm_checkpoint=random_ckpt_dir / "GMM" / "gmm_final.pth",
                        tom_checkpoint=random_ckpt_dir / "TOM" / "tom_final.pth")
    assert len(m.weights.gmm_sha256) == 64 and m.weights.random   # recipe files are flagged


def test_precision_and_device_resolution(random_ckpt_dir):
    m = CPVTONPlusModel(random_ckpt_dir, device="auto", precision="auto", backend="torch")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert m.device.type == expected
    if expected == "cpu":   # bf16 only where the CPU has native bf16 (emulated bf16 is slow)
        assert m.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    with pytest.raises(ValueError):
        CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp8", backend="torch")


@needs_shared
def test_input_forms_give_the_same_result(model):
    s = viton_sample(*viton_pairs()[0])
    ref = model.try_on(**s)
    person_pil = Image.open(s["person"])
    forms = [
        dict(person=person_pil, cloth=Image.open(s["cloth"])),
        dict(person=np.asarray(person_pil.convert("RGB")), cloth=str(s["cloth"])),
        dict(person=s["person"].read_bytes(), cloth=s["cloth"].read_bytes()),
    ]
    extra = dict(parse=np.asarray(Image.open(s["parse"])), pose=s["pose"],
                 person_mask=np.asarray(Image.open(s["person_mask"])) > 0,
                 cloth_mask=Image.open(s["cloth_mask"]))
    for f in forms:
        r = model.try_on(f["person"], f["cloth"], **extra)
        np.testing.assert_array_equal(np.asarray(r.image), np.asarray(ref.image))
    for name in ("warped_cloth", "rendered", "warped_grid"):
        assert getattr(ref, name).size == (192, 256) and getattr(ref, name).mode == "RGB"
    for name in ("warped_mask", "composite_mask"):
        assert getattr(ref, name).mode == "L"
    assert ref.parse.shape == (256, 192) and ref.keypoints.shape == (18, 3)
    assert set(ref.timings_ms) >= {"decode", "representation", "cloth", "networks"}


@needs_shared
def test_mismatched_mask_size_names_the_field(model):
    s = viton_sample(*viton_pairs()[0])
    with pytest.raises(InvalidInput, match="person_mask"):
        model.try_on(s["person"], s["cloth"], parse=s["parse"], pose=s["pose"],
                     person_mask=np.ones((10, 10), bool), cloth_mask=s["cloth_mask"])
    with pytest.raises(InvalidInput, match="person_pose"):
        model.try_on(s["person"], s["cloth"], parse=s["parse"], pose={"people": [{"x": 1}]},
                     person_mask=s["person_mask"], cloth_mask=s["cloth_mask"])


@needs_shared
def test_bf16_on_cpu_stays_close_to_fp32(random_ckpt_dir, model, capsys):
    s = viton_sample(*viton_pairs()[1])
    bf16 = CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="bf16", backend="torch")
    a = np.asarray(model.try_on(**s).image)
    b = np.asarray(bf16.try_on(**s).image)
    value = psnr(torch.tensor(a)[None], torch.tensor(b)[None], data_range=255.0).item()
    with capsys.disabled():
        print(f"\n[bf16 vs fp32 on CPU] PSNR = {value:.2f} dB")
    assert value >= 25.0  # random weights amplify rounding; with real weights it is higher


def test_encoded_png_round_trip_of_result(model, tmp_path):
    # A synthetic 192×256 person with every input supplied: no preprocessing involved.
    rng = np.random.default_rng(0)
    person = rng.integers(0, 255, (256, 192, 3), dtype=np.uint8)
    parse = np.zeros((256, 192), np.uint8)
    parse[40:200, 50:140] = 5
    parse[10:40, 80:110] = 13
    kp = np.column_stack([rng.uniform(40, 150, 18), rng.uniform(20, 240, 18), np.ones(18)])
    cloth_mask = np.zeros((256, 192), bool)
    cloth_mask[30:230, 20:170] = True
    r = model.try_on(person, person, parse=parse, pose=kp, person_mask=parse > 0,
                     cloth_mask=cloth_mask)
    buf = io.BytesIO()
    r.image.save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).size == (192, 256)


@needs_shared
def test_channels_last_gives_the_same_result(random_ckpt_dir, model):
    s = viton_sample(*viton_pairs()[2])
    nhwc = CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32", channels_last=True,
                           backend="torch")
    assert nhwc.channels_last and not model.channels_last
    a = np.asarray(model.try_on(**s).image).astype(int)
    b = np.asarray(nhwc.try_on(**s).image).astype(int)
    assert (np.abs(a - b) <= 1).mean() >= 0.999
