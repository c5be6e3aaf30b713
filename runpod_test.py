"""Local smoke run of the RunPod worker: one real try-on, with pictures and timings.

    ./run.sh python runpod_test.py                          # the images of test_input.json
    ./run.sh python runpod_test.py --person me.jpg --cloth shirt.png
    ./run.sh python runpod_test.py --api http://127.0.0.1:8000     # drive a running dev server:
        ./run.sh python handler.py --rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port 8000

Without ``--api`` the worker's ``handler`` runs in this process, exactly as RunPod calls it.
Writes ``outputs/runpod_test/result.<fmt>``, ``montage.png`` (person | cloth | warped cloth |
result) and ``timings.json``. Without the official checkpoints it runs with RANDOM weights (the
picture is then noise, and it says so); with them (``./download_checkpoints.sh`` puts them where
it looks, or CHECKPOINT_DIR) it uses them. The default person and garment are those of
``test_input.json`` (scikit-image's ``astronaut`` photo and a t-shirt drawn by worker/sample_images.py),
so the smoke run needs nothing beyond the worker's own packages.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import statistics
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

BANNER = "=" * 78
#: Default output folder: the checkout's outputs/ (git-ignored), whatever the current folder.
OUT_DIR = Path(__file__).resolve().parent / "outputs" / "runpod_test"


def _load(path: str, option: str) -> Image.Image:
    """A photo as RGB with EXIF orientation applied, as the API loads it; a missing or
    undecodable file is a :class:`UsageError` naming the option."""
    from vton_core.errors import VTONError
    from vton_core.images import load_rgb

    try:
        return load_rgb(path, field=option)
    except VTONError as err:
        raise UsageError(f"{option}: {err.message} ({path})") from None


class UsageError(Exception):
    """A mistake on the command line: reported in one line, exit status 2."""


def _b64(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


#: Written across the montage when the weights are random, so that a screenshot says it too.
RANDOM_BANNER = "RANDOM WEIGHTS: the networks are untrained, this is NOT a real try-on"
BANNER_HEIGHT = 28


def montage(panels: list, height: int = 384, banner: str | None = None) -> Image.Image:
    """Side-by-side panels ``[(title, image)]`` scaled to one height, titled; ``banner``: a line
    in white on red above them (the random-weights warning)."""
    scaled = [(t, im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height)))
              for t, im in panels]
    top = BANNER_HEIGHT if banner else 0
    out = Image.new("RGB", (sum(im.width for _, im in scaled) + 8 * (len(scaled) + 1),
                            top + height + 28), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    if banner:
        draw.rectangle((0, 0, out.width, top - 1), fill=(200, 0, 0))
        draw.text((8, 8), banner, fill=(255, 255, 255))
    x = 8
    for title, im in scaled:
        out.paste(im, (x, top + 24))
        draw.text((x, top + 6), title, fill=(0, 0, 0))
        x += im.width + 8
    return out


def run_local(person: Image.Image, cloth: Image.Image, fmt: str, repeats: int) -> tuple:
    """Run ``handler.handler`` in this process; returns (output dict, per-call ms, random)."""
    import handler
    from vton_core.checkpoints import GMM_FILE, TOM_FILE
    from worker import logs
    from worker.settings import Settings

    settings = Settings.from_env()
    switch = handler.RANDOM_WEIGHTS_SWITCH
    gmm = settings.gmm_checkpoint or settings.checkpoint_dir / GMM_FILE
    tom = settings.tom_checkpoint or settings.checkpoint_dir / TOM_FILE
    if not (gmm.is_file() and tom.is_file()):
        print(f"{BANNER}\n!!! Official checkpoints not found ({gmm.name}, {tom.name} under "
              f"{settings.checkpoint_dir}).\n!!! Running with RANDOM WEIGHTS: the pipeline is real, "
              f"the picture is noise.\n!!! Get them with ./download_checkpoints.sh "
              f"(README_RUNPOD.md).\n{BANNER}", flush=True)
        settings = dataclasses.replace(settings, allow_random_weights=True)
        switch = "the smoke run, without checkpoints"
    logs.configure_logging(settings.log_level)
    t0 = time.perf_counter()
    handler.set_worker(handler.start_worker(settings, random_weights_switch=switch))
    print(f"worker started (model load + warm-up) in {(time.perf_counter() - t0) * 1000:.0f} ms")
    job = {"id": "runpod-test", "input": {"person_image": _b64(person), "cloth_image": _b64(cloth),
                                          "output_format": fmt, "return_intermediates": True}}
    times, output = [], None
    for _ in range(repeats):
        t1 = time.perf_counter()
        output = handler.handler(job)
        times.append((time.perf_counter() - t1) * 1000)
        if "error" in output:
            break
    return output, times


def run_api(url: str, person: Image.Image, cloth: Image.Image, fmt: str, repeats: int,
            timeout: float) -> tuple:
    """Drive a running dev server over HTTP with the example client; each call (its retries
    included, each logged) ends within ``timeout`` seconds."""
    import logging

    from client_example import CPVTONClient, CPVTONError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"calling {url} (at most {timeout:g} s per call; connection errors and 429/5xx are "
          f"retried, each retry logged)", flush=True)
    client = CPVTONClient(base_url=url, timeout=timeout)
    times, result = [], None
    for _ in range(repeats):
        t1 = time.perf_counter()
        try:
            result = client.try_on_sync(person, cloth, output_format=fmt, return_intermediates=True)
        except CPVTONError as err:
            return {"error": str(err)}, times
        times.append((time.perf_counter() - t1) * 1000)
    output = dict(result.info, success=True, result_image=_b64(result.image),
                  intermediates={k: _b64(v) for k, v in result.intermediates.items()})
    return output, times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Local smoke run of the CP-VTON+ RunPod worker.")
    parser.add_argument("--person", help="person photo (default: the one of test_input.json)")
    parser.add_argument("--cloth", help="garment photo (default: the one of test_input.json)")
    parser.add_argument("--api", metavar="URL", help="dev server URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="with --api: seconds each call may take in all, retries included "
                             "(default: 300)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR,
                        help="where the pictures and timings go (default: outputs/runpod_test/ "
                             "of the checkout, git-ignored)")
    parser.add_argument("--format", default="png", choices=("png", "jpeg", "webp"))
    parser.add_argument("--repeats", type=int, default=2,
                        help="calls to time (the 2nd reuses the cached person analysis)")
    args = parser.parse_args(argv)

    try:
        return _smoke_run(args)
    except UsageError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)      # one line, no traceback
        return 2
    except ModuleNotFoundError as err:
        print(f"{parser.prog}: error: the Python package '{err.name}' is missing: install the "
              f"environment as README.md says (./run.sh python runpod_test.py)", file=sys.stderr)
        return 1


def _smoke_run(args) -> int:
    """Run the smoke test as parsed from the command line; returns the exit status."""
    from worker import sample_images
    default_person, default_cloth = sample_images.request_images()
    person = _load(args.person, "--person") if args.person else default_person
    cloth = _load(args.cloth, "--cloth") if args.cloth else default_cloth
    if args.api:
        output, times = run_api(args.api, person, cloth, args.format, max(1, args.repeats),
                                args.timeout)
    else:
        output, times = run_local(person, cloth, args.format, max(1, args.repeats))
    if "error" in output:
        print(f"FAILED: {output['error']}", file=sys.stderr)
        return 1

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = Image.open(io.BytesIO(base64.b64decode(output["result_image"])))
    result_path = out_dir / f"result.{'jpg' if args.format == 'jpeg' else args.format}"
    result_path.write_bytes(base64.b64decode(output["result_image"]))
    warped = Image.open(io.BytesIO(base64.b64decode(output["intermediates"]["warped_cloth"])))
    montage([("person", person), ("cloth", cloth), ("warped cloth", warped), ("result", result)],
            banner=RANDOM_BANNER if output.get("random_weights") else None).save(out_dir / "montage.png")
    summary = {"calls_ms": [round(t, 1) for t in times],
               "median_ms": round(statistics.median(times), 1) if times else None,
               "timings_ms": output.get("timings_ms"),
               "model_timings_ms": output.get("model_timings_ms"),
               "weights": output.get("weights"), "random_weights": output.get("random_weights"),
               "notes": output.get("notes"), "size": [output.get("width"), output.get("height")]}
    (out_dir / "timings.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {result_path}, {out_dir / 'montage.png'}, {out_dir / 'timings.json'}")
    if output.get("random_weights"):
        print(f"{BANNER}\n!!! RANDOM WEIGHTS were used: the result is not a real try-on.\n{BANNER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
