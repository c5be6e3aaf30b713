"""Train the person parser (:mod:`vton_preprocess.parser`) on a VITON-format folder.

    python -m training.train_parser --dataroot DATA/train --workdir /tmp/parser_run \
        --out vton_preprocess/assets/person_parser.pt --steps 6000 [--bf16]

A second phase may start from the weights of a first (``--init``, with a fresh optimizer and
schedule), drawing part of each batch from the persons that show a rare label (dress, coat, skirt,
legs, …; ``--rare-fraction``) and adding a soft Dice term to the cross-entropy (``--dice``), which
weighs every class present in the batch equally. The card of an ``--init`` run lists the commands
of both phases.

Reads ``image/`` and ``image-parse-new/`` (or ``image-parse/``, deriving the neck label 20) of the
VITON **train** split; the last ``--val`` persons by sorted name are held out for validation and
never trained on. Seeded and resumable: the work directory holds the data cache, ``last.pt``
(model, optimizer, step; written atomically every ``--save-every`` steps) and ``log.jsonl``; run
the same command again to continue. Batch order and augmentation depend only on the seed and the
step, so an interrupted run continues exactly as an unbroken one would.

At the end the fp16 weights and their JSON card (data, recipe, steps, validation IoUs, sha256) are
written to ``--out`` (see ``vton_preprocess/assets/person_parser.json``).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.metrics import confusion_matrix, parse_ious
from training.parser_data import Augment, augment, load_cache, make_backgrounds
from vton_core.digest import file_sha256
from vton_preprocess.parser import NUM_LABELS, ParserConfig, PersonParser, card_path, save_parser, to_input

log = logging.getLogger("train_parser")

BACKGROUND_COUNT = 1500      # procedural backgrounds generated at start (deterministic in seed)
TEXTURE_COUNT = 300          # garment photos of the train split used as background textures
WARMUP_STEPS = 200           # linear learning-rate warm-up before the cosine decay
VAL_BATCH = 32
#: Labels seen on few VITON train persons (dress, coat, socks, jumpsuit, scarf, skirt, legs,
#: shoes); ``--rare-fraction`` of each batch comes from persons showing one of them.
RARE_LABELS = (6, 7, 8, 10, 11, 12, 16, 17, 18, 19)
RARE_MIN_PIXELS = 50            # a person "shows" a label when at least this many pixels carry it


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", type=Path, required=True,
                   help="VITON-format folder of the train split (image/, image-parse[-new]/)")
    p.add_argument("--workdir", type=Path, required=True,
                   help="cache, resumable checkpoint and log (outside the repository)")
    p.add_argument("--out", type=Path, required=True, help="final weights (.pt; card beside it)")
    p.add_argument("--steps", type=int, default=6000, help="optimizer steps")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--val", type=int, default=500, help="last N persons held out for validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast (fast only on CPUs with native bf16, or GPUs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these parser weights (a previous phase's --out)")
    p.add_argument("--rare-fraction", type=float, default=0.0,
                   help="share of each batch drawn from persons showing a rare label")
    p.add_argument("--dice", type=float, default=0.0,
                   help="weight of the soft Dice term added to the cross-entropy")
    return p.parse_args(argv)


def lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over WARMUP_STEPS, then cosine decay to 0 at ``total``."""
    warm = min(WARMUP_STEPS, max(1, total // 10))
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def batch_indices(step: int, batch: int, n: int, seed: int) -> np.ndarray:
    """Indices of the persons in batch ``step``: epochs of seeded permutations, so the order
    depends only on (seed, step)."""
    first = step * batch
    out = []
    while len(out) < batch:
        epoch, pos = divmod(first + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[pos:pos + batch - len(out)].tolist())
    return np.asarray(out)


def rare_persons(labels: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """Indices of the persons (N×H×W label maps) showing at least RARE_MIN_PIXELS pixels of one
    of :data:`RARE_LABELS`."""
    rare = np.zeros(256, bool)
    rare[list(RARE_LABELS)] = True
    found = []
    for i in range(0, len(labels), chunk):
        part = np.asarray(labels[i:i + chunk])
        counts = rare[part].reshape(len(part), -1).sum(1)
        found.extend((i + np.flatnonzero(counts >= RARE_MIN_PIXELS)).tolist())
    return np.asarray(found, np.int64)


def mixed_batch(step: int, batch: int, n: int, rare: np.ndarray, fraction: float,
                seed: int) -> np.ndarray:
    """Batch ``step``: ``round(fraction * batch)`` persons from ``rare`` (their own seeded
    epochs), the rest from all ``n``; depends only on (seed, step)."""
    k = int(round(fraction * batch)) if len(rare) else 0
    common = batch_indices(step, batch - k, n, seed)
    if not k:
        return common
    return np.concatenate([common, rare[batch_indices(step, k, len(rare), seed + 1)]])


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean soft Dice over the classes present in ``target``.

    logits: (B, L, H, W) float; target: (B, H, W) long in 0..L-1. Each class counts once,
    however few its pixels, which is what the mean IoU rewards."""
    prob = logits.float().softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (prob * onehot).sum((0, 2, 3))
    size = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = 2 * inter[present] / size[present].clamp_min(1e-6)
    return 1 - dice.mean()


@torch.inference_mode()
def evaluate(model: PersonParser, images: np.ndarray, labels: np.ndarray, device) -> dict:
    """IoUs (see :func:`metrics.parse_ious`) of ``model`` on N×H×W×3 images / N×H×W labels."""
    was_training = model.training
    model.eval()
    conf = np.zeros((NUM_LABELS, NUM_LABELS), np.int64)
    for i in range(0, len(images), VAL_BATCH):
        pred = model(to_input(np.asarray(images[i:i + VAL_BATCH])).to(device)).argmax(1)
        conf += confusion_matrix(pred.cpu().numpy(), np.asarray(labels[i:i + VAL_BATCH]),
                                 NUM_LABELS)
    model.train(was_training)
    return parse_ious(conf)


def _save_state(path: Path, model, opt, step: int, args) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "args": {k: str(v) for k, v in vars(args).items()}}, tmp)
    tmp.replace(path)


def _textures(root: Path, count: int, seed: int) -> list[np.ndarray]:
    """A seeded sample of the split's garment photos (H×W×3 uint8), used as backgrounds."""
    from vton_core.images import load_rgb
    files = sorted((root / "cloth").glob("*.jpg"))
    if not files:
        return []
    pick = np.random.default_rng(seed).choice(len(files), min(count, len(files)), replace=False)
    return [np.asarray(load_rgb(files[i])) for i in sorted(pick)]


def train(args: argparse.Namespace) -> dict:
    """Run (or continue) training; returns the card written beside ``args.out``."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.workdir.mkdir(parents=True, exist_ok=True)
    stems, images, labels = load_cache(args.dataroot, args.workdir / "cache")
    n_val = min(args.val, len(stems) // 2)
    n_train = len(stems) - n_val
    if n_train < 1:
        raise SystemExit("train_parser: the data folder holds no person to train on")
    backgrounds = torch.from_numpy(make_backgrounds(
        BACKGROUND_COUNT, args.seed, _textures(args.dataroot, TEXTURE_COUNT, args.seed)))

    model = PersonParser(ParserConfig()).to(device)
    init_card = _load_init(model, args.init) if args.init else None
    rare = rare_persons(labels[:n_train]) if args.rare_fraction > 0 else np.zeros(0, np.int64)
    if args.rare_fraction > 0:
        log.info("%d of %d train persons show a rare label", len(rare), n_train)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    state_file = args.workdir / "last.pt"
    step = 0
    if state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log.info("resumed from step %d", step)
    log_file = (args.workdir / "log.jsonl").open("a")
    model.train()
    started = time.time()
    bar = tqdm(total=args.steps, initial=step, desc="train_parser", unit="step", smoothing=0.05)
    while step < args.steps:
        idx = np.sort(mixed_batch(step, args.batch, n_train, rare, args.rare_fraction, args.seed))
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        x, y = augment(torch.from_numpy(np.asarray(images[idx])),
                       torch.from_numpy(np.asarray(labels[idx])), backgrounds, gen)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(x.to(device))
        loss = F.cross_entropy(logits.float(), y.to(device))
        if args.dice:
            loss = loss + args.dice * soft_dice_loss(logits, y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        record = {"step": step, "loss": round(loss.item(), 5)}
        if step % args.val_every == 0 or step == args.steps:
            ious = evaluate(model, images[n_train:], labels[n_train:], device)
            record["val"] = {k: v for k, v in ious["groups"].items()} | {"miou": ious["miou"]}
            log.info("step %d val %s", step, json.dumps(record["val"]))
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        if step % args.save_every == 0 or step == args.steps:
            _save_state(state_file, model, opt, step, args)
    bar.close()

    ious = evaluate(model, images[n_train:], labels[n_train:], device)
    card = {
        "what": "CP-VTON+ person parser: 21 labels (LIP 0-19 + neck 20) at 256x192",
        "data": {"source": "VITON train split (the reference layout; e.g. the public repository "
                           "sahiljit/cp-vton-plus, data/train); research-only, see README_RUNPOD.md",
                 "persons": len(stems), "train": n_train,
                 "validation": f"last {n_val} persons by sorted name ({stems[n_train]} .. {stems[-1]})"},
        "recipe": {"steps": args.steps, "batch": args.batch, "optimizer": "AdamW",
                   "lr": args.lr, "weight_decay": args.weight_decay, "schedule":
                   f"linear warm-up {WARMUP_STEPS} steps, cosine to 0", "seed": args.seed,
                   "bf16_autocast": args.bf16, "augment": asdict(Augment()),
                   "backgrounds": BACKGROUND_COUNT, "garment_textures": TEXTURE_COUNT,
                   "rare_fraction": args.rare_fraction, "rare_labels": list(RARE_LABELS),
                   "dice": args.dice},
        "trained_on": {"device": str(device), "torch": torch.__version__,
                       "machine": platform.processor() or platform.machine(),
                       "seconds_this_run": round(time.time() - started)},
        "validation_iou": {**{k: round(v, 4) for k, v in ious["groups"].items() if v is not None},
                           "miou": round(ious["miou"], 4),
                           "per_class": {str(k): (None if v is None else round(v, 4))
                                         for k, v in ious["per_class"].items()}},
        "retrain": _retrain_commands(args, init_card),
    }
    if init_card is not None:
        card["init"] = {"sha256": init_card["sha256"], "recipe": init_card["recipe"],
                        "validation_iou": init_card.get("validation_iou"),
                        **{k: init_card[k] for k in ("history", "init") if k in init_card}}
    save_parser(model.cpu(), args.out, card)
    return json.loads(args.out.with_suffix(".json").read_text())


def _load_init(model: PersonParser, path: Path) -> dict:
    """Load a previous phase's weights (strict keys and shapes) into ``model``; returns its card."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in state.items()}, strict=True)
    card = json.loads(card_path(path).read_text())
    if card.get("sha256") != file_sha256(path):
        raise SystemExit(f"train_parser: {path.name} does not match its card's sha256")
    log.info("initialised from %s (sha256 %s)", path.name, card["sha256"][:12])
    return card


def _retrain_commands(args: argparse.Namespace, init_card: dict | None) -> list[str]:
    """The commands that rebuild these weights from the data: the ``--init`` phases' own (phase
    k writing /tmp/parser_phase{k}.pt), then this run's, which writes the committed file."""
    earlier = [] if init_card is None else init_card.get("retrain", [])
    earlier = [earlier] if isinstance(earlier, str) else list(earlier)
    phase = len(earlier) + 1
    if earlier:
        earlier[-1] = earlier[-1].replace("--out vton_preprocess/assets/person_parser.pt",
                                          f"--out /tmp/parser_phase{phase - 1}.pt")
    workdir = "/tmp/parser_run" if phase == 1 else f"/tmp/parser_run{phase}"
    cmd = (f"python -m training.train_parser --dataroot DATA/train --workdir {workdir} "
           f"--out vton_preprocess/assets/person_parser.pt --steps {args.steps}"
           + (f" --lr {args.lr:g}" if args.lr != 3e-3 else "")
           + (f" --init /tmp/parser_phase{phase - 1}.pt" if init_card is not None else "")
           + (f" --rare-fraction {args.rare_fraction:g}" if args.rare_fraction else "")
           + (f" --dice {args.dice:g}" if args.dice else "")
           + (" --bf16" if args.bf16 else ""))
    return [*earlier, cmd]


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    card = train(parse_args(argv))
    log.info("validation IoU %s", json.dumps({k: v for k, v in card["validation_iou"].items()
                                               if k != "per_class"}))


if __name__ == "__main__":
    main()
