"""A try-on demo page: drop a person photo and a garment photo, see the worker's result.

    ./run.sh python demo.py                               # http://127.0.0.1:7860
    ./run.sh python demo.py --host 0.0.0.0 --port 7861    # reachable from other machines
    ALLOW_RANDOM_WEIGHTS=1 ./run.sh python demo.py        # without checkpoints (noise, said so)

Two targets, chosen on the page:

* **this machine**: the worker itself, in this process: :func:`handler.start_worker` with the
  worker's :class:`worker.settings.Settings` (the same environment variables, fitness checks,
  warm-up, random-weights rule and typed errors), built once at start; each try-on is one
  :func:`handler.handler` job.
* **an endpoint**: a RunPod endpoint id with an API key, or a base URL such as the local dev
  server (``python handler.py --rp_serve_api``), through :class:`client_example.CPVTONClient`.
  The key is used for that one request: it is never logged, shown or kept.

Every request is the worker's own JSON input (docs/API.md), so the page shows what a client
gets: the result at full resolution, the intermediates, the timings, the weights' identity and
the notes, or the worker's typed error next to the field it names. Uploads are bounded by the
worker's ``MAX_INPUT_BYTES``; the Gradio queue runs one try-on at a time and queues the rest.
Requires requirements_demo.txt (``./run.sh`` installs it; the worker's image does not).
"""
from __future__ import annotations

import argparse
import html
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw, ImageFont

import client_example
import handler
from client_example import CPVTONClient, CPVTONError, TryOnResult, decode_image
from vton_core.errors import CheckpointError, InvalidInput
from vton_core.model_spec import GARMENT_RESOLUTIONS, OUTPUT_SIZES
from worker import logs, sample_images, schema
from worker.settings import Settings

log = logging.getLogger("cpvton.demo")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
THIS_MACHINE = "this machine"
ENDPOINT = "an endpoint"
#: Seconds the endpoint client retries one HTTP call (429, 5xx, refused connections): a page
#: should say "unavailable" within seconds, not after the client's default minute.
ENDPOINT_RETRY_S = 15.0
#: Seconds to wait for an endpoint's result (a RunPod cold start included).
ENDPOINT_TIMEOUT_S = 300.0
#: The text drawn into every random-weights result and shown above it.
RANDOM_WEIGHTS_TEXT = "RANDOM WEIGHTS: not a real try-on"
#: Display height of the two photo inputs (CSS pixels).
PHOTO_HEIGHT_PX = 320
#: Narrowest a photo input gets before the two stack (CSS pixels).
PHOTO_MIN_WIDTH_PX = 200
#: Share of the parse colours in the parse-over-person picture.
PARSE_ALPHA = 0.55
#: The random-weights band drawn into a result: its height as a share of the image's shorter
#: side (at least BAND_MIN_PX), its text's size as a share of the band, its colour.
BAND_SHARE, BAND_MIN_PX, BAND_TEXT_SHARE, BAND_RGB = 0.06, 14, 0.6, (176, 0, 32)

#: The inputs an error can be shown next to: the worker's field names → the page's slots.
ANNOTATION_FIELDS = ("person_parse", "person_pose", "person_mask", "cloth_mask")
SLOTS = ("person_image", "cloth_image") + ANNOTATION_FIELDS + ("options", "target", "status")
#: Codes of a failure to reach a target (the client's, and the page's own two).
TARGET_CODES = ("UNAVAILABLE", "TIMEOUT", "REQUEST_FAILED", "BAD_RESPONSE", "NOT_SUPPORTED",
                "NO_TARGET", "NO_API_KEY")
#: Captions of the intermediates in the gallery (the worker's names: worker.schema.INTERMEDIATES).
CAPTIONS = {"warped_cloth": "warped garment", "warped_mask": "warped mask",
            "warped_grid": "warped grid", "rendered": "rendered person",
            "composite_mask": "composite mask", "parse": "parse overlay",
            "pose_overlay": "pose skeleton"}

CSS = """
.field-error { color: #b00020; font-weight: 600; margin: 0.2em 0 0.6em; }
.random-weights-note { background: #b00020; color: white !important; font-weight: 700;
  padding: 0.5em 0.8em; border-radius: 6px; text-align: center; }
"""


# ------------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------------
def error_slot(code: str, message: str) -> tuple[str, str]:
    """(slot, text) for a failed request: the worker's ``"<field>: <message>"`` goes next to
    the input it names (``pairs[0].`` prefixes never occur: the page sends single try-ons);
    a client-side failure (HTTP, timeout, no answer) goes to the target."""
    name, sep, _rest = message.partition(": ")
    stem = name.removesuffix("_url")
    if sep and stem in schema.PERSON_FIELDS + schema.CLOTH_FIELDS:
        return stem, f"{code}: {message}"
    if sep and name in schema.OPTION_FIELDS:
        return "options", f"{code}: {message}"
    if code.startswith("HTTP_") or code in TARGET_CODES:
        return "target", f"{code}: {message}"
    return "status", f"{code}: {message}"


def stamp_random_weights(image: Image.Image) -> Image.Image:
    """A copy of ``image`` (RGB) with a red band across its top saying it is not a real try-on,
    so that no saved or shared copy of a random-weights result can pass for one."""
    out = image.convert("RGB").copy()
    w, h = out.size
    band = max(BAND_MIN_PX, round(min(w, h) * BAND_SHARE))
    draw = ImageDraw.Draw(out)
    draw.rectangle([0, 0, w, band], fill=BAND_RGB)
    font = ImageFont.load_default(size=round(band * BAND_TEXT_SHARE))
    left, top, right, bottom = draw.textbbox((0, 0), RANDOM_WEIGHTS_TEXT, font=font)
    draw.text(((w - (right - left)) / 2 - left, (band - (bottom - top)) / 2 - top),
              RANDOM_WEIGHTS_TEXT, fill=(255, 255, 255), font=font)
    return out


def parse_overlay(parse: Image.Image, person: Image.Image) -> Image.Image:
    """The worker's parse (a palette PNG whose pixel values are the labels, in its own colours)
    over ``person`` (the 192×256 pose picture: the framed person); background stays as is."""
    labels = np.asarray(parse)
    colours = np.asarray(parse.convert("RGB"), np.float64)
    base = np.asarray(person.convert("RGB").resize(parse.size), np.float64)
    alpha = np.where(labels > 0, PARSE_ALPHA, 0.0)[..., None]
    return Image.fromarray((base * (1 - alpha) + colours * alpha).round().astype(np.uint8))


def gallery(intermediates: dict) -> list[tuple[Image.Image, str]]:
    """(image, caption) of each intermediate the worker returned, in its order."""
    items = []
    for name, image in intermediates.items():
        if name == "parse" and "pose_overlay" in intermediates:
            image = parse_overlay(image, intermediates["pose_overlay"])
        items.append((image.convert("RGB"), CAPTIONS.get(name, name)))
    return items


def _ms_line(timings: dict) -> str:
    return " · ".join(f"{k} {float(v):.0f}" for k, v in timings.items()) or "none"


def describe(info: dict, runtime: Optional[dict], where: str) -> str:
    """Markdown: what the result is, the timings, the worker's identity and its notes."""
    weights = info.get("weights") or {}
    lines = [f"**Result** ({where}): {info.get('width')}×{info.get('height')} "
             f"{info.get('format')}, output_size {info.get('output_size')}, garment_resolution "
             f"{info.get('garment_resolution')}, person cache hit: "
             f"{'yes' if info.get('person_cache_hit') else 'no'}",
             f"**Timings (ms)**: job: {_ms_line(info.get('timings_ms') or {})}; model: "
             f"{_ms_line(info.get('model_timings_ms') or {})}",
             "**Weights**: " + ", ".join(f"{k} `{v}`" for k, v in weights.items())]
    if runtime:
        lines.append("**Runtime**: " + ", ".join(f"{k} `{v}`" for k, v in runtime.items()))
    else:
        lines.append("**Runtime**: backend and precision are not in an endpoint's response "
                     "(see its worker log)")
    notes = info.get("notes") or []
    lines.append("**Notes**: " + ("; ".join(notes) if notes else "none"))
    return "\n\n".join(lines)


# ------------------------------------------------------------------------------------------------
# The request
# ------------------------------------------------------------------------------------------------
@dataclass
class Request:
    """One try-on as the page collected it: file paths (``None`` when not given) and options."""

    person: Optional[str]
    cloth: Optional[str]
    annotations: dict = field(default_factory=dict)   # ANNOTATION_FIELDS → path
    options: dict = field(default_factory=dict)       # the worker's option fields

    def photos(self) -> tuple[Optional[bytes], Optional[bytes]]:
        """The person and garment files' bytes, as uploaded."""
        return tuple(None if p is None else Path(p).read_bytes() for p in (self.person, self.cloth))

    def payload(self) -> dict:
        """The worker's job input (docs/API.md), checked by the worker's own schema: files as
        base64 of their bytes, as sent (the worker decodes and checks them), the pose file as
        its JSON. Raises :class:`vton_core.errors.InvalidInput` naming the field (a missing
        photo, a pose file that is not JSON, ...)."""
        out: dict = {}
        for name, data in zip(("person_image", "cloth_image"), self.photos()):
            if data is not None:
                out[name] = client_example.encode_image(data)
        for name, path in self.annotations.items():
            if path is None:
                continue
            data = Path(path).read_bytes()
            if name == "person_pose":
                try:
                    out[name] = json.loads(data)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise InvalidInput("not a JSON file (OpenPose JSON or a list of keypoints)",
                                       field=name) from None
            else:
                out[name] = client_example.encode_image(data)
        out.update(self.options)
        schema.parse_request(out, max_items=1)
        return out


class LocalWorker:
    """The worker in this process, started once (or the reason it could not start)."""

    def __init__(self, settings: Optional[Settings]):
        self.worker = None
        self.problem = "this machine's model is switched off (--no-local)"
        self.jobs = 0
        if settings is None:
            return
        try:
            self.worker = handler.start_worker(settings)
        except CheckpointError as err:        # the path is for the operator's log only
            log.error("this machine: %s", err.message)
            self.problem = (f"{err.client_message()}. Get them with ./download_checkpoints.sh, "
                            "or start the demo with ALLOW_RANDOM_WEIGHTS=1 (random weights)")
        except Exception as err:  # noqa: BLE001 - the page still serves the endpoint target
            log.error("this machine: the worker did not start: %s", err)
            self.problem = f"this machine's worker did not start ({type(err).__name__}; see the log)"
        else:
            handler.set_worker(self.worker)

    @property
    def random_weights(self) -> bool:
        return bool(self.worker is not None and self.worker.identity["random"])

    def runtime(self) -> dict:
        model = self.worker.model
        return {"backend": model.backend, "precision": model.precision, "device": str(model.device)}

    def try_on(self, payload: dict) -> TryOnResult:
        """One :func:`handler.handler` job; raises :class:`CPVTONError` with the worker's
        code and message as a client would get them."""
        if self.worker is None:
            raise CPVTONError("UNAVAILABLE", self.problem)
        self.jobs += 1
        out = handler.handler({"id": f"demo-{self.jobs}", "input": payload})
        if "error" in out:
            raise CPVTONError.from_error(out["error"])
        rest = {k: v for k, v in out.items() if k not in ("result_image", "intermediates")}
        return TryOnResult(image=decode_image(out["result_image"]),
                           intermediates={k: decode_image(v)
                                          for k, v in out.get("intermediates", {}).items()},
                           info=rest)


def endpoint_try_on(target: str, api_key: str, request: Request, payload: dict) -> TryOnResult:
    """One ``/runsync`` try-on of ``payload`` (from ``request``) through :class:`CPVTONClient`:
    ``target`` is a RunPod endpoint id or an http(s) base URL. The key lives in this call only
    (the client's session is closed and its redaction list forgets the key afterwards)."""
    target, api_key = target.strip(), api_key.strip()
    if not target:
        raise CPVTONError("NO_TARGET", "give a RunPod endpoint id (with its API key) or a base URL "
                          "such as http://127.0.0.1:8000")
    is_url = target.lower().startswith(("http://", "https://"))
    if not is_url and not api_key:
        raise CPVTONError("NO_API_KEY", "a RunPod endpoint needs its API key")
    client = CPVTONClient(None if is_url else target, api_key or None,
                          base_url=target if is_url else None, timeout=ENDPOINT_TIMEOUT_S,
                          max_retry_s=ENDPOINT_RETRY_S)
    person, cloth = request.photos()               # present: the payload passed the schema
    others = {k: v for k, v in payload.items() if k not in ("person_image", "cloth_image")}
    with client:                                   # closed after the call: the key is forgotten
        return client.try_on_sync(person, cloth, **others)


# ------------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------------
def photo_input(label: str, elem_id: str) -> gr.Image:
    """An image input (upload, webcam, clipboard) that hands over an uploaded file as it was
    sent, not decoded or re-encoded by Gradio, so the worker reads the original bytes (EXIF,
    format) and a broken file gets the worker's typed error. Webcam and clipboard captures
    arrive as data URIs, which Gradio saves as files."""
    component = gr.Image(label=label, type="filepath", image_mode=None, elem_id=elem_id,
                         sources=["upload", "webcam", "clipboard"], height=PHOTO_HEIGHT_PX)
    gradio_preprocess = component.preprocess

    def preprocess(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return gradio_preprocess(payload)

    # An instance attribute, not a subclass: Gradio writes a .pyi file beside the module that
    # defines a component class.
    component.preprocess = preprocess
    return component


def write_examples(folder: Path) -> list[list[Optional[str]]]:
    """The bundled examples, drawn here (no ../shared needed): the smoke run's photo and
    t-shirt (test_input.json), and a drawn figure framed as VITON frames a person with its exact
    parse, pose and masks wearing a printed shirt. Rows: person, garment, the four annotations."""
    folder.mkdir(parents=True, exist_ok=True)
    person, cloth = sample_images.request_images()
    person.save(folder / "photo_person.png")
    cloth.save(folder / "tshirt.png")
    figure = sample_images.framed_person(384)
    shirt = sample_images.printed_garment(384, 512, (40, 90, 160))
    figure.image.save(folder / "figure.png")
    Image.fromarray(figure.parse, "L").save(folder / "figure_parse.png")
    Image.fromarray(figure.mask.astype(np.uint8) * 255, "L").save(folder / "figure_mask.png")
    (folder / "figure_pose.json").write_text(json.dumps(
        {"people": [{"pose_keypoints_2d": figure.pose.reshape(-1).round(2).tolist()}]}))
    shirt.save(folder / "printed_shirt.png")
    Image.fromarray(sample_images.garment_mask(shirt).astype(np.uint8) * 255, "L").save(
        folder / "printed_shirt_mask.png")
    f = {name: str(folder / name) for name in (
        "photo_person.png", "tshirt.png", "figure.png", "figure_parse.png", "figure_pose.json",
        "figure_mask.png", "printed_shirt.png", "printed_shirt_mask.png")}
    return [[f["photo_person.png"], f["tshirt.png"], None, None, None, None],
            [f["figure.png"], f["printed_shirt.png"], f["figure_parse.png"],
             f["figure_pose.json"], f["figure_mask.png"], f["printed_shirt_mask.png"]]]


def build_page(local: LocalWorker, examples: list, max_upload_bytes: int) -> gr.Blocks:
    """The Gradio page (not launched)."""
    def error_box(slot: str) -> gr.HTML:
        return gr.HTML("", elem_id=f"error-{slot}", elem_classes="field-error", visible=False)

    with gr.Blocks(title="CP-VTON+ try-on", analytics_enabled=False) as page:
        gr.Markdown("# CP-VTON+ virtual try-on\nA person photo and an in-shop garment photo (the "
                    "garment alone on a plain background); the worker frames the person, "
                    "analyses pose and parse, and returns the try-on at the photo's size. "
                    f"Uploads up to {max_upload_bytes / 1e6:g} MB (the worker's MAX_INPUT_BYTES).")
        if local.random_weights:
            gr.HTML(f"<div class='random-weights-note'>This machine runs on {RANDOM_WEIGHTS_TEXT}"
                    " (ALLOW_RANDOM_WEIGHTS=1 without checkpoints): the pipeline is real, the "
                    "picture is noise.</div>", elem_id="local-random-weights")
        errors: dict[str, gr.HTML] = {}
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    with gr.Column(min_width=PHOTO_MIN_WIDTH_PX):
                        person = photo_input("Person photo", "person_image")
                        errors["person_image"] = error_box("person_image")
                    with gr.Column(min_width=PHOTO_MIN_WIDTH_PX):
                        cloth = photo_input("Garment photo", "cloth_image")
                        errors["cloth_image"] = error_box("cloth_image")
                annotation_inputs = []
                with gr.Accordion("Precomputed annotations (optional; computed when absent)",
                                  open=False):
                    for name, label, types in (
                            ("person_parse", "person_parse (label map PNG, 0-20)", [".png"]),
                            ("person_pose", "person_pose (OpenPose JSON)", [".json"]),
                            ("person_mask", "person_mask (PNG)", [".png"]),
                            ("cloth_mask", "cloth_mask (PNG)", [".png"])):
                        annotation_inputs.append(gr.File(label=label, file_types=types,
                                                         type="filepath", elem_id=name))
                        errors[name] = error_box(name)
                gr.Examples(examples=examples, inputs=[person, cloth, *annotation_inputs],
                            label="Examples (drawn here; the second comes with its exact "
                                  "annotations)")
                with gr.Accordion("Options", open=True):
                    output_size = gr.Radio(list(OUTPUT_SIZES), value=schema.DEFAULT_OUTPUT_SIZE,
                                           label="output_size: the photo's size, or the "
                                                 "network's 192×256", elem_id="output_size")
                    garment_resolution = gr.Radio(
                        list(GARMENT_RESOLUTIONS), value=schema.DEFAULT_GARMENT_RESOLUTION,
                        label="garment_resolution: the garment drawn from its photo at the "
                              "result's resolution, or the 192×256 image upscaled",
                        elem_id="garment_resolution")
                    output_format = gr.Radio(list(schema.OUTPUT_FORMATS), value=schema.DEFAULT_OUTPUT_FORMAT,
                                             label="output_format", elem_id="output_format")
                    quality = gr.Slider(1, 100, value=schema.DEFAULT_JPEG_QUALITY, step=1,
                                        label="jpeg_quality (jpeg and webp)")
                    intermediates = gr.Checkbox(True, label="return_intermediates",
                                                elem_id="return_intermediates")
                    errors["options"] = error_box("options")
                with gr.Group():
                    target = gr.Radio([THIS_MACHINE, ENDPOINT], label="Run on",
                                      value=THIS_MACHINE if local.worker is not None else ENDPOINT,
                                      elem_id="target")
                    endpoint = gr.Textbox(label="RunPod endpoint id, or a base URL "
                                                "(e.g. http://127.0.0.1:8000, the local dev server)",
                                          elem_id="endpoint")
                    api_key = gr.Textbox(label="RunPod API key (used for this request only; never "
                                               "logged or kept)", type="password", elem_id="api_key")
                    errors["target"] = error_box("target")
                run = gr.Button("Try on", variant="primary", elem_id="run")
            with gr.Column(scale=1):
                banner = gr.HTML(f"<div class='random-weights-note'>{RANDOM_WEIGHTS_TEXT}: the "
                                 "pipeline is real, the picture is noise</div>",
                                 elem_id="random-weights-banner", visible=False)
                errors["status"] = error_box("status")
                result = gr.Image(label="Result (full resolution)", type="pil", format="png",
                                  interactive=False, elem_id="result")
                shown = gr.Gallery(label="Intermediates (192×256)", columns=4, format="png",
                                   height="auto", elem_id="intermediates")
                info = gr.Markdown(elem_id="info")

        inputs = [target, endpoint, api_key, person, cloth, *annotation_inputs, output_format,
                  quality, output_size, garment_resolution, intermediates]
        outputs = [banner, result, shown, info, *(errors[s] for s in SLOTS)]

        def try_on(target_name, endpoint_text, key, person_path, cloth_path, *rest):
            annotations = dict(zip(ANNOTATION_FIELDS, rest[:len(ANNOTATION_FIELDS)]))
            fmt, q, size, garment, inter = rest[len(ANNOTATION_FIELDS):]
            request = Request(person_path, cloth_path, annotations,
                              {"output_format": fmt, "jpeg_quality": int(q), "output_size": size,
                               "garment_resolution": garment, "return_intermediates": bool(inter)})
            t0 = time.perf_counter()
            try:
                payload = request.payload()
                if target_name == ENDPOINT:
                    res = endpoint_try_on(endpoint_text or "", key or "", request, payload)
                    runtime, where = None, "endpoint"
                else:
                    res, runtime, where = local.try_on(payload), local.runtime(), THIS_MACHINE
            except InvalidInput as err:
                return failure(*error_slot(err.code, str(err)))
            except CPVTONError as err:
                return failure(*error_slot(err.code, err.message))
            log.info("demo: try-on on %s in %.0f ms", where, (time.perf_counter() - t0) * 1000)
            random = bool(res.info.get("random_weights"))
            image = stamp_random_weights(res.image) if random else res.image
            return (gr.update(visible=random), image, gallery(res.intermediates),
                    describe(res.info, runtime, where), *(hidden() for _ in SLOTS))

        def failure(slot: str, text: str):
            boxes = [gr.update(value=html.escape(text), visible=True) if s == slot else hidden()
                     for s in SLOTS]
            return (gr.update(visible=False), None, [], "", *boxes)

        def hidden():
            return gr.update(value="", visible=False)

        def clear():
            return tuple(hidden() for _ in SLOTS)

        # The last request's errors go at once; the try-on waits its turn in the queue, one at a
        # time (a second request while one runs is queued), showing its progress on the result.
        run.click(clear, None, [errors[s] for s in SLOTS], queue=False, show_progress="hidden",
                  api_visibility="private").then(
            try_on, inputs, outputs, concurrency_limit=1, api_name="try_on",
            show_progress_on=[result])
    return page


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to serve on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--no-local", action="store_true",
                        help="do not load this machine's model (the page then runs on endpoints only)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as err:
        print(f"invalid configuration: {err}", file=sys.stderr)
        return 1
    logs.configure_logging(settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)     # Gradio's own start-up requests
    local = LocalWorker(None if args.no_local else settings)
    with tempfile.TemporaryDirectory(prefix="cpvton-demo-") as tmp:
        examples = write_examples(Path(tmp))
        page = build_page(local, examples, settings.max_input_bytes)
        page.queue(default_concurrency_limit=1)
        print(f"demo: serving http://{args.host}:{args.port} (this machine: "
              f"{'ready' if local.worker is not None else local.problem})", flush=True)
        page.launch(server_name=args.host, server_port=args.port, max_file_size=settings.max_input_bytes,
                    allowed_paths=[tmp], run_history=False, footer_links=["gradio"], ssr_mode=False,
                    show_error=False, quiet=True, css=CSS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
