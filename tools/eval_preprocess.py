#!/usr/bin/env python
"""Accuracy and speed of the automatic preprocessing on a VITON-format folder with ground truth.

    python tools/eval_preprocess.py --dataroot DATA --datamode test [--last 500] [--json OUT] \
        [--parser-backend torch|openvino [--parser-precision fp32|bf16|auto] [--openvino-cache-dir DIR]]

Persons: one confusion matrix over all pixels (192×256) of the parse against ``image-parse-new``
(or ``image-parse``, with the neck label derived as CP-VTON+ did) gives the per-class IoU, the
grouped IoUs of :data:`training.metrics.PARSE_GROUPS` and the mean IoU over the classes present;
plus the keypoint error (median px over all keypoints present in both), the body-mask IoU where
``image-mask`` exists and the wall time per person. Cloths: mask IoU. Photos (``--photos``): time
per call and the share of labelled pixels outside MediaPipe's selfie segmentation (dilated), an
independent check that nothing in the background is labelled. The person parser runs on the
backend and precision given (:func:`vton_preprocess.load_person_parser`; default torch fp32).
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

import vton_preprocess as P
from training.metrics import confusion_matrix, parse_ious
from training.parser_data import read_person
from vton_core.images import load_label_map, load_rgb
from vton_preprocess.parser_runtime import BACKENDS, NUM_LABELS, ParserRunner

#: (comparison, value) per overall figure; the parse targets are issue 12's, for a full split.
TARGETS = {"keypoint_median_px": ("<=", 3.0), "body_iou": (">=", 0.96),
           "head": (">=", 0.92), "hair": (">=", 0.85), "face": (">=", 0.89), "neck": (">=", 0.65),
           "upper_clothes": (">=", 0.92), "arms": (">=", 0.85), "lower_body": (">=", 0.88),
           "miou": (">=", 0.70), "cloth_iou_mean": (">=", 0.95), "cloth_iou_min": (">=", 0.90),
           "outside_person_max": ("<=", 0.03)}
#: Dilation of the independent person mask, as a fraction of the photo's height.
OUTSIDE_DILATE_FRAC = 0.01


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (1.0 when both are empty)."""
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


def read_pose(path: Path) -> np.ndarray:
    """OpenPose JSON -> 18×3 float32."""
    person = json.loads(path.read_text())["people"][0]
    flat = person.get("pose_keypoints_2d", person.get("pose_keypoints"))
    return np.asarray(flat, np.float32).reshape(18, 3)


def keypoint_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean errors over keypoints present (confidence > 0) in both."""
    ok = (pred[:, 2] > 0) & (gt[:, 2] > 0)
    return np.linalg.norm(pred[ok, :2] - gt[ok, :2], axis=1)


def timed(fn, *args, repeat: int = 5):
    """(result of the first call, median seconds over ``repeat`` further calls, or the first
    call's time when ``repeat`` is 0)."""
    t = time.perf_counter()
    out = fn(*args)
    ts = [time.perf_counter() - t] if repeat <= 0 else []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t)
    return out, float(np.median(ts))


def evaluate(root: Path, repeat: int, first: int | None = None, last: int | None = None,
             cloths: bool = True, parser: ParserRunner | None = None) -> dict:
    """Figures over the persons of ``root`` (all, or the ``first`` / ``last`` N by sorted name)
    and its cloths (see the module's docstring); persons parsed by ``parser`` (None: torch)."""
    P.warm_up(parser)
    analyze = functools.partial(P.analyze_rgb, parser=parser)
    stems = sorted(p.stem for p in (root / "image").glob("*.jpg"))
    stems = stems[:first] if first else stems[-last:] if last else stems
    persons, errs, conf = [], [], np.zeros((NUM_LABELS, NUM_LABELS), np.int64)
    for stem in stems:
        rgb, gt_parse = read_person(root, stem)
        a, secs = timed(analyze, rgb, repeat=repeat)
        conf += confusion_matrix(a.parse, gt_parse, NUM_LABELS)
        e = keypoint_errors(a.keypoints, read_pose(root / "pose" / f"{stem}_keypoints.json"))
        errs.extend(e.tolist())
        row = {"image": f"{stem}.jpg", "keypoint_median_px": float(np.median(e)) if len(e) else None,
               "keypoints_compared": int(len(e)), "ms": secs * 1e3}
        mask_file = root / "image-mask" / f"{stem}.png"
        if mask_file.is_file():
            row["body_iou"] = iou(a.body_mask, load_label_map(mask_file) >= 128)
        persons.append(row)
    ious = parse_ious(conf)
    overall = {"persons": len(persons),
               "keypoint_median_px": float(np.median(errs)) if errs else None,
               **ious["groups"], "miou": ious["miou"],
               "ms_median": float(np.median([r["ms"] for r in persons])) if persons else None}
    bodies = [r["body_iou"] for r in persons if "body_iou" in r]
    if bodies:
        overall["body_iou"] = float(np.mean(bodies))
    cloth_rows = []
    for c_path in sorted((root / "cloth").glob("*.jpg")) if cloths else []:
        rgb = np.asarray(load_rgb(c_path))
        m, secs = timed(P.segment_cloth, rgb, repeat=repeat)
        gt = np.asarray(Image.open(root / "cloth-mask" / c_path.name).convert("L")) >= 128
        cloth_rows.append({"cloth": c_path.name, "cloth_iou": iou(m, gt), "ms": secs * 1e3})
    if cloth_rows:
        overall["cloth_iou_mean"] = float(np.mean([r["cloth_iou"] for r in cloth_rows]))
        overall["cloth_iou_min"] = float(np.min([r["cloth_iou"] for r in cloth_rows]))
    return {"persons": persons, "cloths": cloth_rows, "per_class_iou": ious["per_class"],
            "overall": overall}


def outside_person(rgb: np.ndarray, parse: np.ndarray) -> float:
    """Share of the labelled pixels of ``parse`` (H×W) outside MediaPipe's selfie segmentation
    of ``rgb`` (H×W×3 uint8), thresholded at 0.5 and dilated by OUTSIDE_DILATE_FRAC of H."""
    from vton_preprocess import models
    selfie = models.run("selfie", rgb).segmentation_mask >= 0.5
    k = 2 * max(1, round(OUTSIDE_DILATE_FRAC * rgb.shape[0])) + 1
    person = cv2.dilate(selfie.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    labelled = parse > 0
    return float((labelled & ~person).sum() / max(1, labelled.sum()))


def time_photos(photos: Path, repeat: int, parser: ParserRunner | None = None) -> dict:
    """Per ordinary photo (any size): median ms per call, and for persons the share of labelled
    pixels outside the person (:func:`outside_person`); persons parsed by ``parser``."""
    out = {}
    for kind, fn in (("person", functools.partial(P.analyze_rgb, parser=parser)),
                     ("cloth", P.segment_cloth)):
        for f in sorted((photos / kind).glob("*")):
            rgb = np.asarray(load_rgb(f))
            res, secs = timed(fn, rgb, repeat=repeat)
            row = {"ms": secs * 1e3}
            if kind == "person":
                row["outside_person"] = outside_person(rgb, res.parse)
            out[f"{kind}/{f.name} ({rgb.shape[1]}x{rgb.shape[0]})"] = row
    return out


def time_stages(images: list[Path], repeat: int, parser: ParserRunner | None = None) -> dict:
    """Median ms per stage of :func:`preprocess.analyze_rgb` (each MediaPipe graph, the parse
    by ``parser`` (None: torch), and the rest) for each image, measured by wrapping the
    MediaPipe runs and the parser runner for ``repeat`` calls (at least 1) after one warm-up call."""
    from vton_preprocess import models
    acc: dict[str, float] = {}

    def timer(name, fn):
        def wrapped(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[name] = acc.get(name, 0.0) + time.perf_counter() - t
        return wrapped

    run = models.run
    models.run = lambda name, rgb: timer(name, run)(name, rgb)
    timed_parser = timer("parser", parser if parser is not None else P.load_person_parser())
    out = {}
    try:
        for f in images:
            rgb = np.asarray(load_rgb(f))
            P.analyze_rgb(rgb, parser=timed_parser)
            runs = []
            for _ in range(max(1, repeat)):
                acc.clear()
                t = time.perf_counter()
                P.analyze_rgb(rgb, parser=timed_parser)
                total = time.perf_counter() - t
                row = dict(acc, total=total)
                row["other"] = total - sum(acc.values())
                runs.append(row)
            keys = sorted({k for r in runs for k in r})
            out[f"{f.name} ({rgb.shape[1]}x{rgb.shape[0]})"] = {
                k: float(np.median([r.get(k, 0.0) for r in runs])) * 1e3 for k in keys}
    finally:
        models.run = run
    return out


def _check(key: str, value) -> str:
    if key not in TARGETS or value is None:
        return ""
    op, t = TARGETS[key]
    ok = value <= t if op == "<=" else value >= t
    return f"{op} {t:<5g} {'ok' if ok else 'MISSED'}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataroot", type=Path, required=True)
    ap.add_argument("--datamode", default="test")
    ap.add_argument("--first", type=int, default=None, help="only the first N persons by name")
    ap.add_argument("--last", type=int, default=None, help="only the last N persons by name")
    ap.add_argument("--no-cloth", action="store_true", help="skip the cloth masks")
    ap.add_argument("--photos", type=Path, default=None,
                    help="folder with person/ and cloth/ photos (default: <dataroot>/../photos)")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per image (0: first call)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--stages", action="store_true",
                    help="also time each stage of the person analysis (median over --repeat calls)")
    ap.add_argument("--parser-backend", choices=BACKENDS, default="torch",
                    help="backend of the person parser (default: torch)")
    ap.add_argument("--parser-precision", choices=("fp32", "bf16", "auto"), default="fp32",
                    help="precision of the person parser (bf16 and auto: OpenVINO only)")
    ap.add_argument("--openvino-cache-dir", type=Path, default=None,
                    help="export cache folder of the OpenVINO parser (default: the per-user one)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    parser = P.load_person_parser(args.parser_backend, cache_dir=args.openvino_cache_dir,
                                  precision=args.parser_precision)
    print(f"person parser: {parser.backend} {parser.precision} (sha256 {parser.sha256[:12]})")
    res = evaluate(args.dataroot / args.datamode, args.repeat, args.first, args.last,
                   cloths=not args.no_cloth, parser=parser)
    res["parser"] = {"backend": parser.backend, "precision": parser.precision, "sha256": parser.sha256}
    photos = args.photos or args.dataroot.parent / "photos"
    res["photos"] = time_photos(photos, args.repeat, parser) if photos.is_dir() else {}
    if res["photos"]:
        res["overall"]["outside_person_max"] = max(
            (r["outside_person"] for r in res["photos"].values() if "outside_person" in r), default=0.0)

    print("per-class IoU: " + " ".join(f"{k}={v:.3f}" for k, v in res["per_class_iou"].items()
                                       if v is not None))
    if res["cloths"]:
        print(f"\n{'cloth':14s} {'iou':>6s} {'ms':>6s}")
        for r in res["cloths"]:
            print(f"{r['cloth']:14s} {r['cloth_iou']:6.3f} {r['ms']:6.1f}")
    if res["photos"]:
        print("\nphotos (median ms per call; share of labels outside the person)")
        for k, r in res["photos"].items():
            extra = f"  outside {r['outside_person']:.4f}" if "outside_person" in r else ""
            print(f"  {k:40s} {r['ms']:7.1f}{extra}")
    print("\noverall              value   target")
    for k, v in res["overall"].items():
        shown = "-" if v is None else f"{v:7.3f}" if isinstance(v, float) else f"{v:7d}"
        print(f"  {k:18s} {shown:>7s}   {_check(k, v)}")
    if args.stages:
        imgs = sorted((args.dataroot / args.datamode / "image").glob("*.jpg"))[:20]
        if photos.is_dir():
            imgs += sorted((photos / "person").glob("*"))
        res["stage_ms"] = time_stages(imgs, args.repeat, parser)
        print("\nstages (median ms per call)")
        for k, row in res["stage_ms"].items():
            print(f"  {k:32s} " + " ".join(f"{n}={v:.1f}" for n, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
