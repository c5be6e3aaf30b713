"""The try-on at the photo's resolution (vton_core.compose): exact where it can be, close to the
model image, fine print carried through, bounded on hostile sizes (issue 20)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from cpvton_infer import CPVTONPlusModel, tensor_to_pil
from vton_core.compose import (
    _GARMENT_PAD,
    FullResolutionTryOn,
    fit_to_frame,
    garment_frame_size,
    silhouette_composite,
)
from vton_core.errors import InvalidInput
from worker import sample_images

MW, MH = 192, 256
#: The full-resolution try-on, box-filtered to 192×256, against the model's own image (random
#: weights: measured 32.6 dB; the difference is the garment drawn from its photo instead of the
#: 192×256 fitted garment, and the sharper silhouette).
MIN_MODEL_PSNR_DB = 30.0
#: Fine print (text and 1-px stripes) on a 768×1024 garment, worn by a 768×1024 person: the
#: share of the change it causes in the result that is high-frequency, as a fraction of the
#: print's own share (random weights, measured 0.36 at full resolution, 0.012 upscaled; the
#: random GMM's warp compresses parts of the garment, which no resampling keeps at 1 px).
MIN_PRINT_HF_FULL, MAX_PRINT_HF_MODEL = 0.3, 0.1


def identity_grid() -> np.ndarray:
    """256×192×2: every model pixel samples its own place (``align_corners=True``)."""
    gx, gy = np.meshgrid(np.linspace(-1, 1, MW), np.linspace(-1, 1, MH))
    return np.stack([gx, gy], -1).astype(np.float32)


def box_map(box_width: int) -> np.ndarray:
    """The 2×3 map from box pixels (from the box's corner) to model pixels."""
    s = box_width / MW
    return np.array([[1 / s, 0, 0.5 / s - 0.5], [0, 1 / s, 0.5 / s - 0.5]])


def noise_photo(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def analytic(garment: Image.Image, mask: np.ndarray, box_width: int = 768) -> FullResolutionTryOn:
    ones = np.ones((1, MH, MW), np.float32)
    return FullResolutionTryOn.build(
        grid=identity_grid(), rendered=np.zeros((3, MH, MW), np.float32), composite=ones,
        warped_mask=ones, garment=garment, garment_mask=mask, box_width=box_width,
        max_pixels=box_width * box_width * 4 // 3)


@pytest.mark.parametrize("size", [(768, 1024), (1536, 2048), (600, 1024)],
                         ids=["native", "2x-larger", "narrower-padded"])
def test_identity_grid_and_full_mask_draw_the_fitted_garment_photo(size):
    """With an identity grid and M = 1 the result is the garment photo fitted to the box at the
    box's resolution by the model's own fit rule (white padding included): to within one grey
    level (exact coordinates land on pixel centres)."""
    photo = noise_photo(*size)
    mask = np.ones(size[::-1], bool)
    out = analytic(photo, mask).render(box_map(768), (768, 1024))
    expected = np.asarray(fit_to_frame(photo, mask, (768, 1024))[0], np.float32)
    inside = fit_to_frame(photo, mask, (768, 1024))[1]
    assert np.abs(out - expected)[inside].max() <= 1.0
    # outside the garment mask M is 0 there: the rendered person (zeros = grey 127.5) shows
    assert np.allclose(out[~inside], 127.5, atol=1.0)


def test_the_garment_is_never_drawn_finer_than_needed_or_than_its_photo():
    assert garment_frame_size(768, (768, 1024), 10**9, (MW, MH)) == (768, 1024)
    assert garment_frame_size(768, (96, 128), 10**9, (MW, MH)) == (192, 256)     # no upsampling
    assert garment_frame_size(768, (4000, 4000), 10**9, (MW, MH)) == (768, 1024)  # the box's scale
    w, h = garment_frame_size(30000, (30000, 40000), 10**6, (MW, MH))            # the pixel budget
    assert w * h <= 10**6 and w * 4 == h * 3
    assert garment_frame_size(50, (4000, 4000), 10**9, (MW, MH)) == (192, 256)    # a small box


def test_the_silhouette_sharpens_only_the_soft_edge():
    soft = np.array([[0.0, 0.05, 0.5, 1.0, 1.0]], np.float32)
    sharp = np.array([[0.0, 0.0, 1.0, 1.0, 0.0]], np.float32)
    m = soft * 0.8                                    # TOM shows 80 % of the garment
    out = silhouette_composite(m, soft, sharp)
    assert out[0, 0] == 0 and out[0, 3] == pytest.approx(0.8)     # outside, inside: unchanged
    assert out[0, 2] == pytest.approx(0.8)            # inside the sharp edge: fully the garment
    assert out[0, 4] == 0                             # a hole the model size could not see
    assert out[0, 1] == pytest.approx(0.5 * 0.04)     # handing over to M where soft is faint


def full_box_render(model: CPVTONPlusModel, person, cloth) -> tuple[np.ndarray, Image.Image]:
    """(the full-resolution try-on over the whole person box, the 192×256 model image)."""
    reps = person.representations()
    out = model.forward_arrays(reps["GMM"][None], reps["TOM"][None], cloth.cloth[None], cloth.mask[None])
    x0, y0, x1, y1 = person.framing.box
    bw, bh = int(x1 - x0), int(y1 - y0)
    full = model.full_resolution(0, person, cloth, out).render(box_map(bw), (bw, bh))
    return np.clip(full + 0.5, 0, 255).astype(np.uint8), tensor_to_pil(out["tryon"][0])


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def test_downsampled_to_the_model_size_it_stays_close_to_the_model_image(model):
    sp = sample_images.synthetic_person(768, 1024)
    person = model.prepare_person(sp.image, parse=sp.parse, pose=sp.pose, person_mask=sp.mask)
    garment = sample_images.printed_garment(768, 1024)
    cloth = model.prepare_cloth(garment, cloth_mask=sample_images.garment_mask(garment))
    full, model_image = full_box_render(model, person, cloth)
    down = cv2.resize(full, (MW, MH), interpolation=cv2.INTER_AREA)
    assert psnr_u8(down, np.asarray(model_image)) >= MIN_MODEL_PSNR_DB


def high_frequency_share(a: np.ndarray) -> float:
    """The share of an image's energy above a Gaussian of sigma 2 px (1-px strokes: most)."""
    a = a.astype(np.float32)
    high = a - cv2.GaussianBlur(a, (0, 0), 2)
    return float((high ** 2).sum() / max(float((a ** 2).sum()), 1e-9))


@pytest.fixture(scope="module")
def openvino_model(random_ckpt_dir):
    return CPVTONPlusModel(random_ckpt_dir, device="cpu", precision="fp32", backend="openvino")


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_fine_print_reaches_the_result_at_full_resolution(backend, model, request):
    net = model if backend == "torch" else request.getfixturevalue("openvino_model")
    person = sample_images.framed_person(768)                     # box = the 768×1024 photo
    plain = sample_images.garment(768, 1024)
    printed = sample_images.printed_garment(768, 1024)
    mask = sample_images.garment_mask(plain)
    prepared = net.prepare_person(person.image, parse=person.parse, pose=person.pose,
                                  person_mask=person.mask)
    own = high_frequency_share(np.asarray(printed, np.float32) - np.asarray(plain, np.float32))
    share = {}
    for resolution in ("full", "model"):
        a, b = (net.run(prepared, net.prepare_cloth(g, cloth_mask=mask),
                        garment_resolution=resolution)[0].image for g in (plain, printed))
        assert b.size == (768, 1024)
        share[resolution] = high_frequency_share(np.asarray(b, np.float32) - np.asarray(a, np.float32)) / own
    assert share["full"] >= MIN_PRINT_HF_FULL, share
    assert share["model"] <= MAX_PRINT_HF_MODEL, share


def test_model_image_and_output_size_model_are_unchanged_by_the_option(model):
    sp = sample_images.synthetic_person(384, 512)
    person = model.prepare_person(sp.image, parse=sp.parse, pose=sp.pose, person_mask=sp.mask)
    garment = sample_images.printed_garment(384, 512)
    cloth = model.prepare_cloth(garment)
    full, classic = (model.run(person, cloth, garment_resolution=r)[0] for r in ("full", "model"))
    assert np.array_equal(np.asarray(full.model_image), np.asarray(classic.model_image))
    small = model.run(person, cloth, output_size="model")[0]
    assert small.image.size == (MW, MH)
    assert np.array_equal(np.asarray(small.image), np.asarray(full.model_image))
    assert not np.array_equal(np.asarray(full.image), np.asarray(classic.image))
    with pytest.raises(InvalidInput, match="garment_resolution"):
        model.run(person, cloth, garment_resolution="4k")


@pytest.mark.parametrize("garment_size", [(4000, 1), (1, 4000), (40, 53), (6000, 6000)],
                         ids=["1xN-wide", "1xN-tall", "tiny", "36-MP"])
def test_hostile_garment_sizes_stay_bounded(model, garment_size, tmp_path, monkeypatch):
    """A strip, a garment much smaller than the box and a huge one: the fitted garment never has
    more pixels than the person photo, the result has the photo's size, nothing is written."""
    monkeypatch.chdir(tmp_path)
    sp = sample_images.synthetic_person(384, 512)
    person = model.prepare_person(sp.image, parse=sp.parse, pose=sp.pose, person_mask=sp.mask)
    w, h = garment_size
    garment = Image.new("RGB", garment_size, (200, 40, 60))
    mask = np.ones((h, w), bool)
    cloth = model.prepare_cloth(garment, cloth_mask=mask)
    reps = person.representations()
    out = model.forward_arrays(reps["GMM"][None], reps["TOM"][None], cloth.cloth[None], cloth.mask[None])
    drawn = model.full_resolution(0, person, cloth, out)
    h, w = (n - 2 * _GARMENT_PAD for n in drawn.garment.shape[:2])
    assert w * h <= max(384 * 512, MW * MH) and w * 4 == h * 3
    assert model.run(person, cloth)[0].image.size == (384, 512)
    assert list(tmp_path.iterdir()) == []


def test_a_box_far_outside_the_photo_draws_only_the_photo(model):
    """A caller's pose that frames the person in a box mostly outside the photo (allowed up to
    the pose margins): only the part inside the photo is drawn; the fitted garment stays within
    the photo's pixel count."""
    sp = sample_images.synthetic_person(192 * 2, 256 * 2)
    pose = sp.pose.copy()
    pose[[8, 11], 1] = 510                            # the hips at the bottom: a box past the photo
    person = model.prepare_person(sp.image, parse=sp.parse, pose=pose, person_mask=sp.mask)
    x0, y0, x1, y1 = person.framing.box
    assert y1 > 512                                   # the box extends past the photo
    garment = sample_images.printed_garment(1536, 2048)
    cloth = model.prepare_cloth(garment)
    result = model.run(person, cloth)[0]
    assert result.image.size == (384, 512)
