"""The worker's input schema: check a job's ``input`` and normalise it, before anything is decoded.

:func:`parse_request` accepts the three request forms (single, ``pairs`` batch, one person with
``cloth_images``) and returns a :class:`Request` of plain references: base64 strings and URLs
are kept as text (decoding happens later, item by item), only the small pose JSON is turned into
an 18×3 array here. Any structural problem raises :class:`vton_core.errors.InvalidInput` (or
:class:`vton_core.errors.BatchTooLarge`) whose message names the offending field, e.g.
``pairs[1].cloth_image: expected a base64 string``. Unknown fields are refused so that typos do
not silently fall back to defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

import numpy as np

from cp_dataset import keypoints_from_openpose
from vton_core.errors import BatchTooLarge, InvalidInput, echoed_name
from vton_core.model_spec import DEFAULT_CONFIG, GARMENT_RESOLUTIONS, OUTPUT_SIZES

PERSON_FIELDS = ("person_image", "person_image_url", "person_parse", "person_pose", "person_mask")
CLOTH_FIELDS = ("cloth_image", "cloth_image_url", "cloth_mask")
OPTION_FIELDS = ("output_format", "jpeg_quality", "output_size", "garment_resolution",
                 "return_intermediates")
BATCH_FIELDS = ("pairs", "cloth_images")

OUTPUT_FORMATS = ("png", "jpeg", "webp")
DEFAULT_OUTPUT_FORMAT = "png"
DEFAULT_JPEG_QUALITY = 90
DEFAULT_OUTPUT_SIZE = "original"
DEFAULT_GARMENT_RESOLUTION = "full"
#: Names of the optional intermediate images (``return_intermediates: true``), in the model's
#: order: the GMM's warp (garment, its mask, the warped grid.png), then the TOM's outputs.
INTERMEDIATES = ("warped_cloth", "warped_mask", "warped_grid", "rendered", "composite_mask", "parse",
                 "pose_overlay")

MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class ImageRef:
    """One image input as sent: exactly one of ``b64`` (raw or data URI) and ``url`` is set.

    ``field`` is the full field path used in error messages (``"pairs[0].person_image"``).
    """

    field: str
    b64: Optional[str] = None
    url: Optional[str] = None


@dataclass(frozen=True)
class PersonSpec:
    """A person photo and its optional precomputed annotations (not decoded yet)."""

    image: ImageRef
    parse: Optional[ImageRef] = None
    pose: Optional[np.ndarray] = None       # 18×3 float64, (x, y, confidence) in image pixels
    mask: Optional[ImageRef] = None


@dataclass(frozen=True)
class ClothSpec:
    """A garment photo and its optional mask (not decoded yet)."""

    image: ImageRef
    mask: Optional[ImageRef] = None


@dataclass(frozen=True)
class Item:
    """One try-on: ``persons[person]`` wearing ``cloth``; ``field`` prefixes its error messages."""

    person: int
    cloth: ClothSpec
    field: str


@dataclass(frozen=True)
class Options:
    """Output options, shared by every item of a job."""

    output_format: str = DEFAULT_OUTPUT_FORMAT
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    output_size: str = DEFAULT_OUTPUT_SIZE
    garment_resolution: str = DEFAULT_GARMENT_RESOLUTION
    return_intermediates: bool = False

    def result_options(self) -> dict:
        """The options that shape the model's result (``CPVTONPlusModel.run`` keywords)."""
        return {"output_size": self.output_size, "garment_resolution": self.garment_resolution}


@dataclass(frozen=True)
class Request:
    """A validated job. ``mode`` is ``"single"``, ``"pairs"`` or ``"cloth_images"``."""

    mode: str
    persons: tuple
    items: tuple
    options: Options

    @property
    def is_batch(self) -> bool:
        return self.mode != "single"


def _where(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _check_keys(obj: dict, allowed: Sequence[str], prefix: str) -> None:
    for key in obj:
        if not isinstance(key, str) or key not in allowed:
            raise InvalidInput("unknown field", field=_where(prefix, echoed_name(key)))


def _b64_field(obj: dict, name: str, prefix: str) -> Optional[ImageRef]:
    """An optional base64 image field (raw base64 or a ``data:`` URI)."""
    if name not in obj or obj[name] is None:
        return None
    field = _where(prefix, name)
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidInput(f"expected a base64 string, got {_type_name(value)}", field=field)
    if not value.strip():
        raise InvalidInput("is empty", field=field)
    return ImageRef(field=field, b64=value)


def _url_field(obj: dict, name: str, prefix: str) -> Optional[ImageRef]:
    """An optional http(s) URL field (reachability and address checks happen at download)."""
    if name not in obj or obj[name] is None:
        return None
    field = _where(prefix, name)
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidInput(f"expected a URL string, got {_type_name(value)}", field=field)
    if len(value) > MAX_URL_LENGTH:
        raise InvalidInput(f"URL longer than {MAX_URL_LENGTH} characters", field=field)
    try:
        parts = urlsplit(value.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidInput("not a valid URL", field=field) from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise InvalidInput("must be an http(s) URL with a host", field=field)
    return ImageRef(field=field, url=value.strip())


def _image(obj: dict, stem: str, prefix: str, *, required: bool) -> Optional[ImageRef]:
    """``<stem>`` (base64) or ``<stem>_url``: exactly one of them."""
    b64 = _b64_field(obj, stem, prefix)
    url = _url_field(obj, f"{stem}_url", prefix)
    if b64 and url:
        field = _where(prefix, stem)
        raise InvalidInput(f"give either {stem} or {stem}_url, not both", field=field)
    if required and not (b64 or url):
        field = _where(prefix, stem)
        raise InvalidInput(f"is required (base64 in {stem}, or {stem}_url)", field=field)
    return b64 or url


#: Keypoint coordinates beyond this magnitude are refused (no photo is that large).
MAX_COORDINATE = 1e6


def parse_pose(value: Any, field: str) -> np.ndarray:
    """OpenPose JSON to an 18×3 float array of (x, y, confidence) in person-image pixels.

    Accepted: ``{"people": [{"pose_keypoints_2d": [54 numbers]}]}`` (``pose_keypoints`` as in
    VITON's files is accepted too; the first person is used), a flat list of 54 numbers, or a
    list of 18 ``[x, y, confidence]`` triples. The parsing is :func:`cp_dataset.keypoints_from_openpose`
    (one copy of it); the worker adds that a pose object must hold a person.
    """
    if isinstance(value, dict):
        people = value.get("people")
        if not isinstance(people, list) or not people:
            raise InvalidInput("expected an OpenPose object with a non-empty 'people' list",
                               field=field)
    elif not isinstance(value, list):
        raise InvalidInput(f"expected an OpenPose object or a list of keypoints, "
                           f"not {_type_name(value)}", field=field)
    try:
        pose = keypoints_from_openpose(value, DEFAULT_CONFIG.num_keypoints).astype(np.float64)
    except ValueError as exc:
        raise InvalidInput(str(exc), field=field) from None
    if np.abs(pose[:, :2]).max() > MAX_COORDINATE:
        raise InvalidInput("keypoint coordinates out of range", field=field)
    return pose


def _person(obj: dict, prefix: str) -> PersonSpec:
    image = _image(obj, "person_image", prefix, required=True)
    pose = None
    if obj.get("person_pose") is not None:
        pose = parse_pose(obj["person_pose"], _where(prefix, "person_pose"))
    return PersonSpec(image=image, parse=_b64_field(obj, "person_parse", prefix), pose=pose,
                      mask=_b64_field(obj, "person_mask", prefix))


def _cloth(obj: dict, prefix: str) -> ClothSpec:
    return ClothSpec(image=_image(obj, "cloth_image", prefix, required=True),
                     mask=_b64_field(obj, "cloth_mask", prefix))


def _choice(obj: dict, name: str, default: str, choices: Sequence[str]) -> str:
    """The option ``name`` (absent or null: ``default``), one of ``choices`` in any case."""
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or value.lower() not in choices:
        raise InvalidInput(f"must be one of {', '.join(choices)}", field=name)
    return value.lower()


def _options(obj: dict) -> Options:
    fmt = obj.get("output_format")
    if isinstance(fmt, str):
        fmt = fmt.lower().replace("jpg", "jpeg")
    fmt = _choice({"output_format": fmt}, "output_format", DEFAULT_OUTPUT_FORMAT, OUTPUT_FORMATS)
    quality = obj.get("jpeg_quality", DEFAULT_JPEG_QUALITY)
    if quality is None:
        quality = DEFAULT_JPEG_QUALITY
    if isinstance(quality, float) and quality.is_integer():
        quality = int(quality)
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
        raise InvalidInput("must be an integer from 1 to 100", field="jpeg_quality")
    inter = obj.get("return_intermediates", False)
    if inter is None:
        inter = False
    if not isinstance(inter, bool):
        raise InvalidInput("must be true or false",
                           field="return_intermediates")
    return Options(output_format=fmt, jpeg_quality=quality,
                   output_size=_choice(obj, "output_size", DEFAULT_OUTPUT_SIZE, OUTPUT_SIZES),
                   garment_resolution=_choice(obj, "garment_resolution", DEFAULT_GARMENT_RESOLUTION,
                                              GARMENT_RESOLUTIONS),
                   return_intermediates=inter)


def _batch(payload: dict, name: str, max_items: int, *, what: str) -> list:
    """The non-empty, bounded array ``payload[name]``."""
    entries = payload[name]
    if not isinstance(entries, list) or not entries:
        raise InvalidInput(f"expected a non-empty array{what}", field=name)
    if len(entries) > max_items:
        raise BatchTooLarge(f"{len(entries)} items exceeds the limit of {max_items}", field=name)
    return entries


def _pairs_request(payload: dict, options: Options, max_items: int) -> Request:
    _check_keys(payload, ("pairs",) + OPTION_FIELDS, "")
    persons, items = [], []
    for i, pair in enumerate(_batch(payload, "pairs", max_items, what=" of objects")):
        prefix = f"pairs[{i}]"
        if not isinstance(pair, dict):
            raise InvalidInput(f"expected an object, got {_type_name(pair)}", field=prefix)
        _check_keys(pair, PERSON_FIELDS + CLOTH_FIELDS, prefix)
        persons.append(_person(pair, prefix))
        items.append(Item(person=i, cloth=_cloth(pair, prefix), field=prefix))
    return Request("pairs", tuple(persons), tuple(items), options)


def _cloth_images_request(payload: dict, options: Options, max_items: int) -> Request:
    _check_keys(payload, ("cloth_images",) + PERSON_FIELDS + OPTION_FIELDS, "")
    entries = _batch(payload, "cloth_images", max_items, what="")
    person = _person(payload, "")
    items = []
    for i, entry in enumerate(entries):
        prefix = f"cloth_images[{i}]"
        if isinstance(entry, str):
            if not entry.strip():
                raise InvalidInput("is empty", field=prefix)
            cloth = ClothSpec(image=ImageRef(field=prefix, b64=entry))
        elif isinstance(entry, dict):
            _check_keys(entry, CLOTH_FIELDS, prefix)
            cloth = _cloth(entry, prefix)
        else:
            raise InvalidInput(f"expected a base64 string or an object with "
                               f"cloth_image, got {_type_name(entry)}", field=prefix)
        items.append(Item(person=0, cloth=cloth, field=prefix))
    return Request("cloth_images", (person,), tuple(items), options)


def parse_request(payload: Any, *, max_items: int) -> Request:
    """Validate a job's ``input`` and return the normalised :class:`Request`.

    ``max_items`` bounds the number of try-on items (``BATCH_TOO_LARGE`` above it). Raises
    :class:`vton_core.errors.InvalidInput` naming the field for every structural problem.
    """
    if not isinstance(payload, dict):
        raise InvalidInput(f"expected a JSON object, got {_type_name(payload)}", field="input")
    if not payload:
        raise InvalidInput("is empty (person_image and cloth_image are required)",
                           field="input")
    options = _options(payload)
    if payload.get("pairs") is not None:
        return _pairs_request(payload, options, max_items)
    if payload.get("cloth_images") is not None:
        return _cloth_images_request(payload, options, max_items)
    _check_keys(payload, PERSON_FIELDS + CLOTH_FIELDS + OPTION_FIELDS, "")
    person = _person(payload, "")
    cloth = _cloth(payload, "")
    return Request("single", (person,), (Item(person=0, cloth=cloth, field=""),), options)
