#!/usr/bin/env python
"""Accuracy and speed of the automatic preprocessing on a VITON-format folder with ground truth.

    python tools/eval_preprocess.py --dataroot /work/shared/data/viton --datamode test [--json OUT]

Per person image: keypoint error (median px at 192×256 over keypoints present in both), IoU of the
body mask, face (label 13), head (2, 13) and lower body (9, 12, 16, 17); per cloth: mask IoU.
Overall: the median keypoint error over all pooled keypoints, the mean of each IoU (and the min for
cloth), and the median wall time per call on this machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image

import vton_preprocess as P
from vton_core.images import load_label_map, load_rgb

TARGETS = {"keypoint_median_px": ("<=", 4.0), "body_iou": (">=", 0.96), "face_iou": (">=", 0.80),
           "head_iou": (">=", 0.85), "lower_iou": (">=", 0.80), "cloth_iou_mean": (">=", 0.95),
           "cloth_iou_min": (">=", 0.90)}
REGIONS = {"face_iou": (13,), "head_iou": (2, 13), "lower_iou": (9, 12, 16, 17)}


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


def evaluate(root: Path, repeat: int) -> dict:
    P.warm_up()
    persons, cloths, errs = [], [], []
    for img_path in sorted((root / "image").glob("*.jpg")):
        stem = img_path.stem
        rgb = np.asarray(load_rgb(img_path))
        scale = P.MODEL_SIZE[0] / rgb.shape[1]
        a, secs = timed(P.analyze_rgb, rgb, repeat=repeat)
        gt_parse = load_label_map(root / "image-parse-new" / f"{stem}.png")
        gt_body = load_label_map(root / "image-mask" / f"{stem}.png") >= 128
        e = keypoint_errors(a.keypoints, read_pose(root / "pose" / f"{stem}_keypoints.json")) * scale
        errs.extend(e.tolist())
        row = {"image": img_path.name, "keypoint_median_px": float(np.median(e)) if len(e) else None,
               "keypoints_compared": int(len(e)), "body_iou": iou(a.body_mask, gt_body), "ms": secs * 1e3}
        for k, labels in REGIONS.items():
            row[k] = iou(np.isin(a.parse, labels), np.isin(gt_parse, labels))
        persons.append(row)
    for c_path in sorted((root / "cloth").glob("*.jpg")):
        rgb = np.asarray(load_rgb(c_path))
        m, secs = timed(P.segment_cloth, rgb, repeat=repeat)
        gt = np.asarray(Image.open(root / "cloth-mask" / c_path.name).convert("L")) >= 128
        cloths.append({"cloth": c_path.name, "cloth_iou": iou(m, gt), "ms": secs * 1e3})
    overall = {"keypoint_median_px": float(np.median(errs)) if errs else None}
    for k in ("body_iou", *REGIONS):
        overall[k] = float(np.mean([r[k] for r in persons]))
    overall["cloth_iou_mean"] = float(np.mean([r["cloth_iou"] for r in cloths]))
    overall["cloth_iou_min"] = float(np.min([r["cloth_iou"] for r in cloths]))
    return {"persons": persons, "cloths": cloths, "overall": overall}


def time_photos(photos: Path, repeat: int) -> dict:
    """Median analysis / cloth time on ordinary photos (any size), if the folder exists."""
    out = {}
    for kind, fn in (("person", P.analyze_rgb), ("cloth", P.segment_cloth)):
        for f in sorted((photos / kind).glob("*")):
            rgb = np.asarray(load_rgb(f))
            _, secs = timed(fn, rgb, repeat=repeat)
            out[f"{kind}/{f.name} ({rgb.shape[1]}x{rgb.shape[0]})"] = secs * 1e3
    return out


def time_stages(images: list[Path], repeat: int) -> dict:
    """Median ms per stage of :func:`preprocess.analyze_rgb` (each MediaPipe graph, the parse,
    and the rest) for each image, measured by wrapping the stage functions for ``repeat`` calls
    (at least 1) after one warm-up call."""
    from vton_preprocess import models, person
    acc: dict[str, float] = {}

    def timer(name, fn):
        def wrapped(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[name] = acc.get(name, 0.0) + time.perf_counter() - t
        return wrapped

    run, parse = models.run, person.parse_person
    models.run = lambda name, rgb: timer(name, run)(name, rgb)
    person.parse_person = timer("parse", parse)
    out = {}
    try:
        for f in images:
            rgb = np.asarray(load_rgb(f))
            P.analyze_rgb(rgb)
            runs = []
            for _ in range(max(1, repeat)):
                acc.clear()
                t = time.perf_counter()
                P.analyze_rgb(rgb)
                total = time.perf_counter() - t
                row = dict(acc, total=total)
                row["other"] = total - sum(acc.values())
                runs.append(row)
            keys = sorted({k for r in runs for k in r})
            out[f"{f.name} ({rgb.shape[1]}x{rgb.shape[0]})"] = {
                k: float(np.median([r.get(k, 0.0) for r in runs])) * 1e3 for k in keys}
    finally:
        models.run, person.parse_person = run, parse
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataroot", type=Path, required=True)
    ap.add_argument("--datamode", default="test")
    ap.add_argument("--photos", type=Path, default=None,
                    help="folder with person/ and cloth/ photos to time (default: <dataroot>/../photos)")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per image")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--stages", action="store_true",
                    help="also time each stage of the person analysis (median over --repeat calls)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = evaluate(args.dataroot / args.datamode, args.repeat)
    photos = args.photos or args.dataroot.parent / "photos"
    res["photo_ms"] = time_photos(photos, args.repeat) if photos.is_dir() else {}

    print(f"{'image':14s} {'kp px':>6s} {'n':>3s} {'body':>6s} {'face':>6s} {'head':>6s} {'lower':>6s} {'ms':>6s}")
    for r in res["persons"]:
        kp = "-" if r["keypoint_median_px"] is None else f"{r['keypoint_median_px']:.2f}"
        print(f"{r['image']:14s} {kp:>6s} {r['keypoints_compared']:3d} {r['body_iou']:6.3f} "
              f"{r['face_iou']:6.3f} {r['head_iou']:6.3f} {r['lower_iou']:6.3f} {r['ms']:6.1f}")
    print(f"\n{'cloth':14s} {'iou':>6s} {'ms':>6s}")
    for r in res["cloths"]:
        print(f"{r['cloth']:14s} {r['cloth_iou']:6.3f} {r['ms']:6.1f}")
    print("\noverall            value   target")
    for k, v in res["overall"].items():
        op, t = TARGETS[k]
        ok = v is not None and (v <= t if op == "<=" else v >= t)
        print(f"  {k:18s} {v:7.3f}   {op} {t:<5g} {'ok' if ok else 'MISSED'}")
    if res["photo_ms"]:
        print("\nphotos (median ms per call)")
        for k, v in res["photo_ms"].items():
            print(f"  {k:40s} {v:7.1f}")
    if args.stages:
        imgs = sorted((args.dataroot / args.datamode / "image").glob("*.jpg"))
        if photos.is_dir():
            imgs += sorted((photos / "person").glob("*"))
        res["stage_ms"] = time_stages(imgs, args.repeat)
        print("\nstages (median ms per call)")
        for k, row in res["stage_ms"].items():
            print(f"  {k:32s} " + " ".join(f"{n}={v:.1f}" for n, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
