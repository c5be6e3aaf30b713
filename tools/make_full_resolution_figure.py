"""Draw docs/full_resolution.png: one try-on's garment region, upscaled vs full resolution.

    ./run.sh python tools/make_full_resolution_figure.py            # writes docs/full_resolution.png
    ./run.sh python tools/make_full_resolution_figure.py --out x.png

The person is the project's drawn figure framed as VITON frames a person (768×1024) and the
garment its drawn t-shirt with fine print (768×1024), so nothing comes from a data set. The
networks run on the deterministic random weights (the official ones cannot be fetched here): the
colours are noise, and the picture says so; what it shows is how the garment photo's detail
reaches the result with ``garment_resolution`` "model" (the 192×256 image upscaled) and "full".
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cpvton_infer import CPVTONPlusModel
from vton_core.weights import write_random_checkpoints
from worker import sample_images

ROOT = Path(__file__).resolve().parent.parent
#: The crop of the 768×1024 result shown (x0, y0, x1, y1): the print on the chest.
CROP = (215, 330, 495, 610)
#: Each crop is shown at this many screen pixels per photo pixel (nearest: pixels stay visible).
ZOOM = 2
CAPTION_PX = 34


def render(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_random_checkpoints(tmp)
        model = CPVTONPlusModel(tmp, device="cpu", precision="fp32")
        person = sample_images.framed_person(768)
        garment = sample_images.printed_garment(768, 1024)
        prepared = model.prepare_person(person.image, parse=person.parse, pose=person.pose,
                                        person_mask=person.mask)
        cloth = model.prepare_cloth(garment, cloth_mask=sample_images.garment_mask(garment))
        images = {r: model.run(prepared, cloth, garment_resolution=r)[0].image for r in ("model", "full")}
    w, h = CROP[2] - CROP[0], CROP[3] - CROP[1]
    tile_w, tile_h = w * ZOOM, h * ZOOM
    canvas = Image.new("RGB", (2 * tile_w + 10, tile_h + 2 * CAPTION_PX), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=18)
    titles = {"model": 'garment_resolution "model": 192x256 upscaled',
              "full": 'garment_resolution "full" (default)'}
    for i, (name, image) in enumerate(images.items()):
        x = i * (tile_w + 10)
        canvas.paste(image.crop(CROP).resize((tile_w, tile_h), Image.NEAREST), (x, CAPTION_PX))
        draw.text((x + 6, 8), titles[name], fill=(0, 0, 0), font=font)
    draw.text((6, tile_h + CAPTION_PX + 8),
              "RANDOM WEIGHTS: colours are noise; the print is the garment photo's "
              "(768x1024 photos, crop at 2x)", fill=(200, 0, 0), font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "full_resolution.png")
    args = ap.parse_args(argv)
    render(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
