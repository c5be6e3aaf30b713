"""Evaluate CP-VTON+ on a VITON-format folder: the reference's result layout plus the paper's metrics.

    python -m training.evaluate --dataroot data --datamode test --data_list test_pairs.txt \
        --checkpoint_dir checkpoints --result_dir result

For every pair, GMM then TOM (batched), and the images are written as the reference's test.py
wrote them (named by the person image, 8-bit JPEG through ``(x + 1)/2·255`` truncated; masks as
``m·2 − 1``):

    <result_dir>/GMM/<datamode>/{warp-cloth, warp-mask, warped_grid, overlayed_TPS}/
    <result_dir>/TOM/<datamode>/{try-on, p_rendered, m_composite, im_pose, shape, im_h}/

(``warp-cloth``/``warp-mask`` are what ``training.train --stage TOM --warp_dir`` reads.)

Metrics, on *same-cloth* pairs (the person wears the cloth of the pair, so the person photo is the
ground truth): SSIM and PSNR of the saved try-on against the person image, IoU of the binarised
warped mask against the person's upper-clothes parse (labels 5, 6, 7), and — only from local weight
files, nothing is downloaded — LPIPS (VGG16). The Inception Score is computed over all try-on
images when an Inception-v3 weights file is given. Skipped metrics are ``null`` with a note.
Written to ``<result_dir>/metrics.json`` and printed.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from cp_dataset import CPDataset
from cpvton_infer import PRECISIONS, CPVTONPlusModel, to_uint8
from training.metrics import LPIPS, inception_probs, inception_score, load_inception, mask_iou, psnr, ssim, to_unit

log = logging.getLogger("test")

GMM_DIRS = ("warp-cloth", "warp-mask", "warped_grid", "overlayed_TPS")
TOM_DIRS = ("try-on", "p_rendered", "m_composite", "im_pose", "shape", "im_h")
PAIRINGS = ("auto", "paired", "unpaired")
OVERLAY_CLOTH_WEIGHT = 0.7     # overlayed_TPS = 0.7·warped cloth + 0.3·person


def is_same_cloth(im_name: str, c_name: str) -> bool:
    """VITON naming: person ``X_0.jpg`` wears cloth ``X_1.jpg`` (any suffixes after the last ``_``;
    identical names count too)."""
    a, b = Path(im_name).stem, Path(c_name).stem
    if a == b:
        return True
    return "_" in a and "_" in b and a.rsplit("_", 1)[0] == b.rsplit("_", 1)[0]


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → the 8-bit values the reference would save, as floats in [0, 1]."""
    return torch.floor(((x.float() + 1) * 0.5 * 255).clamp(0, 255)) / 255


def save_batch(images: torch.Tensor, names: Sequence[str], folder: Path) -> None:
    """Save B×C×H×W tensors in [-1, 1] as JPEG files ``folder/name`` (the reference's save_images)."""
    for img, name in zip(images, names):
        Image.fromarray(to_uint8(img)).save(folder / name, format="JPEG")


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate(dataroot: str | Path, datamode: str, data_list: str | Path, checkpoint_dir: str | Path,
             result_dir: str | Path, *, batch_size: int = 4, device: str = "auto",
             precision: str = "fp32", workers: int = 0, pairing: str = "auto",
             gmm_checkpoint: str | Path | None = None, tom_checkpoint: str | Path | None = None,
             lpips_backbone: str | Path | None = None, lpips_weights: str | Path | None = None,
             inception_weights: str | Path | None = None, progress: bool = True) -> dict:
    """Run the model over the pairs, write the result folders and ``metrics.json``; return the
    metrics dict (means over same-cloth pairs; ``null`` where not computed, with ``note``)."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}")
    model = CPVTONPlusModel(checkpoint_dir, device=device, precision=precision,
                            gmm_checkpoint=gmm_checkpoint, tom_checkpoint=tom_checkpoint)
    dev = model.device
    dataset = CPDataset(dataroot, datamode, data_list, stage="TOM", cfg=model.cfg)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=workers)
    result_dir = Path(result_dir)
    gmm_dir, tom_dir = result_dir / "GMM" / datamode, result_dir / "TOM" / datamode
    dirs = {name: gmm_dir / name for name in GMM_DIRS} | {name: tom_dir / name for name in TOM_DIRS}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)

    notes: list[str] = []
    lpips_net = None
    if lpips_backbone and lpips_weights:
        lpips_net = LPIPS.from_files(lpips_backbone, lpips_weights).to(dev)
    else:
        notes.append("lpips skipped: needs local weight files (--lpips_backbone VGG16 state dict "
                     "and --lpips_weights LPIPS v0.1 linear layers); nothing is downloaded")
    inception = None
    if inception_weights:
        inception = load_inception(inception_weights).to(dev)
    else:
        notes.append("is skipped: needs a local Inception-v3 state dict (--inception_weights); "
                     "nothing is downloaded")

    per_pair: list[dict] = []
    probs: list[torch.Tensor] = []
    from tqdm import tqdm

    with torch.inference_mode():
        for batch in tqdm(loader, desc="test", unit="batch", disable=not progress, dynamic_ncols=True):
            names, c_names = list(batch["im_name"]), list(batch["c_name"])
            out = model.forward_tensors(batch["agnostic_gmm"], batch["agnostic_tom"], batch["cloth"],
                                        batch["cloth_mask"])
            image = batch["image"].to(dev)
            b = image.shape[0]
            warped, wmask = out["warped_cloth"], out["warped_mask"]
            # GMM stage outputs
            save_batch(warped, names, dirs["warp-cloth"])
            save_batch(wmask * 2 - 1, names, dirs["warp-mask"])
            save_batch(out["warped_grid"], names, dirs["warped_grid"])
            save_batch(OVERLAY_CLOTH_WEIGHT * warped + (1 - OVERLAY_CLOTH_WEIGHT) * image, names,
                       dirs["overlayed_TPS"])
            # TOM stage outputs
            save_batch(out["tryon"], names, dirs["try-on"])
            save_batch(out["rendered"], names, dirs["p_rendered"])
            save_batch(out["composite_mask"] * 2 - 1, names, dirs["m_composite"])
            agn = batch["agnostic_tom"]
            save_batch(agn[:, 4:].amax(1, keepdim=True), names, dirs["im_pose"])
            save_batch(agn[:, :1], names, dirs["shape"])
            save_batch(agn[:, 1:4], names, dirs["im_h"])

            # metrics
            tryon_q = quantize(out["tryon"])                     # B×3×H×W in [0, 1], as saved
            person = to_unit(image)
            same = [pairing == "paired" or (pairing == "auto" and is_same_cloth(n, c))
                    for n, c in zip(names, c_names)]
            s, p = ssim(tryon_q, person), psnr(tryon_q, person)
            iou = mask_iou(wmask, batch["parse_cloth"].to(dev))
            lp = lpips_net(tryon_q * 2 - 1, image) if lpips_net is not None else None
            if inception is not None:
                probs.append(inception_probs(inception, tryon_q * 2 - 1))
            for i in range(b):
                row = {"im_name": names[i], "c_name": c_names[i], "same_cloth": same[i]}
                if same[i]:
                    row.update(ssim=float(s[i]), psnr=float(p[i]), iou=float(iou[i]),
                               lpips=None if lp is None else float(lp[i]))
                per_pair.append(row)

    paired_rows = [r for r in per_pair if r["same_cloth"]]
    if not paired_rows:
        notes.append("ssim/psnr/iou/lpips: no same-cloth pairs (--pairing auto counts person X_0 "
                     "with cloth X_1; use --pairing paired if every cloth is the one worn)")
    metrics = {
        "num_pairs": len(per_pair),
        "num_same_cloth": len(paired_rows),
        "pairing": pairing,
        "ssim": _mean([r["ssim"] for r in paired_rows]),
        "psnr": _mean([r["psnr"] for r in paired_rows]),
        "iou": _mean([r["iou"] for r in paired_rows]),
        "lpips": _mean([r["lpips"] for r in paired_rows]) if lpips_net is not None else None,
        "is": None, "is_std": None,
    }
    if inception is not None and probs:
        metrics["is"], metrics["is_std"] = inception_score(torch.cat(probs),
                                                           splits=min(10, max(1, len(per_pair) // 50)))
    metrics.update(note="; ".join(notes), weights=model.weights.short(),
                   dataroot=str(dataroot), datamode=datamode, data_list=str(data_list),
                   per_pair=per_pair)
    result_dir.mkdir(parents=True, exist_ok=True)
    tmp = result_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(result_dir / "metrics.json")
    return metrics


def format_metrics(m: dict) -> str:
    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    lines = [f"pairs: {m['num_pairs']} ({m['num_same_cloth']} same-cloth, pairing {m['pairing']})",
             f"SSIM  {f(m['ssim'], '.4f')}", f"PSNR  {f(m['psnr'], '.2f')} dB",
             f"IoU   {f(m['iou'], '.4f')}", f"LPIPS {f(m['lpips'], '.4f')}",
             f"IS    {f(m['is'], '.3f')}"]
    if m.get("note"):
        lines.append(f"note: {m['note']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run CP-VTON+ (GMM then TOM) over a VITON-format dataset, write the "
                    "reference's result folders and the paper's metrics (metrics.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataroot", default="data", help="folder holding <datamode>/{image, cloth, ...}")
    p.add_argument("--datamode", default="test")
    p.add_argument("--data_list", default="test_pairs.txt",
                   help="pairs file (path, or name inside --dataroot)")
    p.add_argument("--checkpoint_dir", default="checkpoints",
                   help="folder with GMM/gmm_final.pth and TOM/tom_final.pth")
    p.add_argument("--gmm_checkpoint", default=None, help="GMM weights (overrides checkpoint_dir)")
    p.add_argument("--tom_checkpoint", default=None, help="TOM weights (overrides checkpoint_dir)")
    p.add_argument("--result_dir", default="result", help="output folder")
    p.add_argument("-b", "--batch_size", "--batch-size", dest="batch_size", type=int, default=4)
    p.add_argument("-j", "--workers", type=int, default=0, help="data-loading worker processes")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="fp32", choices=("auto",) + PRECISIONS,
                   help="network precision (fp32 for reproducing the paper's numbers)")
    p.add_argument("--pairing", default="auto", choices=PAIRINGS,
                   help="which pairs get the paired metrics: auto = VITON names (person X_0 with "
                        "cloth X_1), paired = all, unpaired = none")
    p.add_argument("--lpips_backbone", default=None,
                   help="local torchvision VGG16 state dict for LPIPS (with --lpips_weights)")
    p.add_argument("--lpips_weights", default=None,
                   help="local LPIPS v0.1 VGG linear-layer file (lpips package's vgg.pth); "
                        "LPIPS is skipped without it")
    p.add_argument("--inception_weights", default=None,
                   help="local torchvision Inception-v3 state dict for the Inception Score; "
                        "IS is skipped without it")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if bool(args.lpips_backbone) != bool(args.lpips_weights):
        parser.error("LPIPS needs both --lpips_backbone and --lpips_weights")
    metrics = evaluate(args.dataroot, args.datamode, args.data_list, args.checkpoint_dir,
                       args.result_dir, batch_size=args.batch_size, device=args.device,
                       precision=args.precision, workers=args.workers, pairing=args.pairing,
                       gmm_checkpoint=args.gmm_checkpoint, tom_checkpoint=args.tom_checkpoint,
                       lpips_backbone=args.lpips_backbone, lpips_weights=args.lpips_weights,
                       inception_weights=args.inception_weights, progress=not args.no_progress)
    print(format_metrics(metrics))
    print(f"results and metrics.json in {args.result_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
