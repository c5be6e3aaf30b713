"""Write test_input.json: the request ``python handler.py`` runs locally (the SDK's convention).

    python tools/make_test_input.py          # rewrites test_input.json in the repository root

The images are the project's bundled ones (scikit-image's astronaut photo, scaled down and
JPEG-encoded, and the t-shirt drawn by worker/sample_images.py), so the file stays small (< 200 KB)
and holds no data from elsewhere.
"""
from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

from worker import sample_images

ROOT = Path(__file__).resolve().parent.parent

#: Size of the person photo in the request, and its JPEG quality: small, still clearly a person.
PERSON_SIDE = 320
JPEG_QUALITY = 85


def _b64(image, fmt: str, **save) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def build() -> dict:
    person = sample_images.person_photo().resize((PERSON_SIDE, PERSON_SIDE))
    cloth = sample_images.garment(192, 256)
    return {"input": {
        "person_image": "data:image/jpeg;base64," + _b64(person, "JPEG", quality=JPEG_QUALITY),
        "cloth_image": _b64(cloth, "PNG", optimize=True),
        "output_format": "jpeg",
        "jpeg_quality": 90,
    }}


def main() -> int:
    path = ROOT / "test_input.json"
    text = json.dumps(build(), indent=1)
    path.write_text(text + "\n")
    print(f"wrote {path} ({len(text) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
