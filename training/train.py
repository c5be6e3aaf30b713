"""Train (or fine-tune) the CP-VTON+ GMM and TOM on a VITON-format dataset.

    python -m training.train --stage GMM --dataroot data --datamode train --data_list train_pairs.txt \
        --checkpoint_dir checkpoints --steps 200000
    python -m training.train --stage TOM ... --gmm_checkpoint checkpoints/GMM/gmm_final.pth \
        --vgg_checkpoint vgg19.pth

Losses (see :mod:`losses`): GMM — L1(warped cloth, person's cloth region) + 40·GIC(grid);
TOM — L1(try-on, person) + VGG19 perceptual + L1(composition mask, person's cloth mask).
Adam (lr 1e-4, betas 0.5/0.999); the learning rate is constant for ``keep_step`` steps, then falls
linearly to 0 at the last step.

Files under ``<checkpoint_dir>/<STAGE>/``: ``step_XXXXXX.pth`` every ``save_count`` steps (a dict:
``model`` — the official-format state dict —, ``optimizer``, ``scheduler``, ``step``, ``stage``),
``gmm_final.pth`` / ``tom_final.pth`` at the end (a plain state dict, the published format that
:class:`cpvton_infer.CPVTONPlusModel` loads strictly), ``samples/step_XXXXXX.jpg`` montages and
``loss_log.jsonl``. ``--resume`` continues from the newest ``step_*.pth`` (or a given one) with
the same data order as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from cp_dataset import CPDataset, grid_image_array
from networks import DEFAULT_CONFIG, GMM, TOM, CPVTONConfig, build_gmm, build_tom, tom_outputs, warp_cloth, warp_image
from training.losses import GIC_WEIGHT, VGGPerceptualLoss, cloth_region, gmm_loss, load_vgg19_features, tom_loss
from vton_core.weights import GMM_FILE, TOM_FILE, load_checkpoint

log = logging.getLogger("train")

STAGES = ("GMM", "TOM")
FINAL_FILES = {"GMM": GMM_FILE, "TOM": TOM_FILE}
STEP_FILE = re.compile(r"step_(\d{6,})\.pth$")
ADAM_BETAS = (0.5, 0.999)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the reference's, except ``steps``)."""

    stage: str
    steps: int
    batch_size: int = 4
    lr: float = 1e-4
    keep_step: int | None = None     # steps at the full learning rate; None → steps // 2
    save_count: int = 5000           # resumable checkpoint every this many steps (0: none)
    display_count: int = 100         # log line + sample montage every this many steps (0: none)
    seed: int = 0                    # data order
    shuffle: bool = True
    workers: int = 0
    gic_weight: float = GIC_WEIGHT
    progress: bool = True

    @property
    def keep(self) -> int:
        return self.steps // 2 if self.keep_step is None else min(self.keep_step, self.steps)


# ------------------------------------------------------------------------------------------------
# Helpers shared with training.evaluate
# ------------------------------------------------------------------------------------------------
def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA GPU is visible")
    return dev


def representation_visuals(agnostic: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a B×22×H×W representation into its pictures (all in [-1, 1]):
    ``shape`` B×1×H×W, ``head`` B×3×H×W, ``pose`` B×1×H×W (the union of the keypoint squares)."""
    return {"shape": agnostic[:, :1], "head": agnostic[:, 1:4],
            "pose": agnostic[:, 4:].amax(1, keepdim=True)}


def montage(rows: Sequence[Sequence[torch.Tensor]]) -> Image.Image:
    """A grid picture of C×H×W tensors in [-1, 1] (C = 1 or 3, one size), one list per row."""
    def rgb(t: torch.Tensor) -> np.ndarray:
        t = t.detach().float().cpu()
        t = t.expand(3, -1, -1) if t.shape[0] == 1 else t
        return ((t + 1) * 0.5 * 255).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()

    return Image.fromarray(np.concatenate([np.concatenate([rgb(t) for t in row], 1) for row in rows], 0))


def save_image_atomic(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    tmp.replace(path)


def torch_save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------
# Data order, optimiser, checkpoints
# ------------------------------------------------------------------------------------------------
class ResumableBatchSampler(torch.utils.data.Sampler):
    """Index batches for steps ``start_step … steps−1``, a pure function of (seed, step).

    Sample k of the run (k = step·batch + j) is position k mod n of the permutation of epoch
    k // n (seeded by ``seed + epoch``), so a resumed run sees exactly the batches an uninterrupted
    one would, and batches may span epochs (useful on tiny datasets).
    """

    def __init__(self, n: int, batch_size: int, steps: int, start_step: int = 0, seed: int = 0,
                 shuffle: bool = True):
        if n <= 0:
            raise ValueError("the dataset is empty")
        self.n, self.batch_size, self.steps, self.start = n, batch_size, steps, start_step
        self.seed, self.shuffle = seed, shuffle
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed + epoch)
                self._perms = {epoch: torch.randperm(self.n, generator=g).tolist()}
            else:
                self._perms = {epoch: list(range(self.n))}
        return self._perms[epoch]

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            first = step * self.batch_size
            yield [self._perm(k // self.n)[k % self.n] for k in range(first, first + self.batch_size)]


def build_optimizer(model: nn.Module, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, betas=ADAM_BETAS)


def build_scheduler(optimizer: torch.optim.Optimizer, steps: int, keep: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Constant for ``keep`` steps, then linear decay reaching 0 after the last step.

    (The reference defined this schedule but never stepped it, so its learning rate stayed
    constant; here it is applied.)"""
    decay = max(1, steps - keep)

    def factor(step: int) -> float:
        return max(0.0, 1.0 - max(0, step - keep) / decay)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_checkpoint_path(stage_dir: Path, step: int) -> Path:
    return stage_dir / f"step_{step:06d}.pth"


def latest_step_checkpoint(stage_dir: Path) -> Path | None:
    """The ``step_*.pth`` with the highest step in ``stage_dir``, or None."""
    found = [(int(m.group(1)), p) for p in Path(stage_dir).glob("step_*.pth")
             if (m := STEP_FILE.search(p.name))]
    return max(found)[1] if found else None


def save_training_state(path: Path, model: nn.Module, optimizer, scheduler, step: int, stage: str) -> None:
    """A resumable checkpoint; ``["model"]`` is the official-format state dict (CPU tensors)."""
    torch_save_atomic({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "step": int(step), "stage": stage}, path)


def load_training_state(path: Path, model: nn.Module, optimizer, scheduler, stage: str) -> int:
    """Restore a :func:`save_training_state` file (weights-only load); returns its step."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path} is not a resumable training checkpoint (no 'model'/'step')")
    if state.get("stage", stage) != stage:
        raise ValueError(f"{path} is a {state['stage']} checkpoint, not {stage}")
    model.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def save_final(model: nn.Module, path: Path) -> Path:
    """The published format: a plain state dict of CPU tensors."""
    torch_save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


# ------------------------------------------------------------------------------------------------
# Per-stage forward + loss
# ------------------------------------------------------------------------------------------------
def gmm_forward(gmm: GMM, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """GMM on a dataset batch → grid B×H×W×2, theta B×50, warped_cloth B×3×H×W,
    warped_mask B×1×H×W (in [0, 1], not binarised)."""
    cloth = batch["cloth"].to(device)
    cloth_mask = batch["cloth_mask"].to(device)
    grid, theta = gmm(batch["agnostic_gmm"].to(device), cloth_mask)
    warped, warped_mask = warp_cloth(cloth, cloth_mask, grid)
    return {"grid": grid, "theta": theta, "warped_cloth": warped, "warped_mask": warped_mask}


def gmm_training_step(gmm: GMM, batch: dict, device: torch.device, gic_weight: float = GIC_WEIGHT
                      ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(losses, outputs) of one GMM batch; outputs also hold the target ``cloth_region``."""
    out = gmm_forward(gmm, batch, device)
    target = cloth_region(batch["image"].to(device), batch["parse_cloth"].to(device))
    out["cloth_region"] = target
    return gmm_loss(out["warped_cloth"], target, out["grid"], gic_weight), out


def tom_inputs(batch: dict, device: torch.device, gmm: GMM | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The warped cloth B×3×H×W and binary warped mask B×1×H×W for the TOM: from the batch
    (``warp_dir`` files) or from a frozen GMM (mask binarised at 0.5, as at inference)."""
    if "warped_cloth" in batch:
        return batch["warped_cloth"].to(device), (batch["warped_mask"].to(device) >= 0.5).float()
    if gmm is None:
        raise ValueError("TOM training needs the warped cloth: give a GMM checkpoint or a warp_dir")
    with torch.no_grad():
        out = gmm_forward(gmm, batch, device)
    return out["warped_cloth"], (out["warped_mask"] >= 0.5).float()


def tom_training_step(tom: TOM, batch: dict, device: torch.device, gmm: GMM | None = None,
                      perceptual: nn.Module | None = None
                      ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(losses, outputs) of one TOM batch."""
    warped, mask = tom_inputs(batch, device, gmm)
    image = batch["image"].to(device)
    raw = tom(torch.cat([batch["agnostic_tom"].to(device), warped, mask], 1))
    rendered, composite, tryon = tom_outputs(raw, warped)
    pcm = batch["parse_cloth"].to(device)
    losses = tom_loss(tryon, image, composite, pcm, perceptual)
    return losses, {"warped_cloth": warped, "warped_mask": mask, "rendered": rendered,
                    "composite_mask": composite, "tryon": tryon}


def _gmm_montage(batch: dict, out: dict, grid_image: torch.Tensor) -> Image.Image:
    vis = representation_visuals(batch["agnostic_gmm"][:1])
    image = batch["image"][0]
    warped = out["warped_cloth"][0].cpu()
    wgrid = warp_image(grid_image.to(out["grid"].device)[None], out["grid"][:1])[0].cpu()
    return montage([[vis["head"][0], vis["shape"][0], vis["pose"][0]],
                    [batch["cloth"][0], warped, out["cloth_region"][0].cpu()],
                    [wgrid, (warped + image) * 0.5, image]])


def _tom_montage(batch: dict, out: dict) -> Image.Image:
    vis = representation_visuals(batch["agnostic_tom"][:1])
    return montage([[vis["head"][0], vis["shape"][0], vis["pose"][0]],
                    [out["warped_cloth"][0].cpu(), batch["parse_cloth"][0] * 2 - 1,
                     out["composite_mask"][0].cpu() * 2 - 1],
                    [out["rendered"][0].cpu(), out["tryon"][0].cpu(), batch["image"][0]]])


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------
def train(model: nn.Module, dataset: torch.utils.data.Dataset, out_dir: str | Path, cfg: TrainConfig,
          device: torch.device, step_fn: Callable[[dict], tuple[dict, dict]],
          montage_fn: Callable[[dict, dict], Image.Image] | None = None,
          resume: str | Path | None = None) -> list[dict[str, float]]:
    """Run ``cfg.steps`` optimisation steps of ``model`` (already on ``device``) and write the
    checkpoints under ``out_dir/<stage>/``. ``step_fn(batch) → (losses, outputs)``; ``resume`` is a
    ``step_*.pth`` path or ``"latest"``. Returns the per-step losses of this invocation."""
    if cfg.stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}")
    stage_dir = Path(out_dir) / cfg.stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    optimizer = build_optimizer(model, cfg.lr)
    scheduler = build_scheduler(optimizer, cfg.steps, cfg.keep)
    start = 0
    if resume:
        path = latest_step_checkpoint(stage_dir) if str(resume) == "latest" else Path(resume)
        if path is None:
            log.warning("--resume: no step_*.pth in %s; starting from step 0", stage_dir)
        else:
            start = load_training_state(path, model, optimizer, scheduler, cfg.stage)
            log.info("resumed from %s at step %d", path, start)
    model.train()
    sampler = ResumableBatchSampler(len(dataset), cfg.batch_size, cfg.steps, start, cfg.seed, cfg.shuffle)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                                         pin_memory=device.type == "cuda")
    history: list[dict[str, float]] = []
    from tqdm import tqdm

    bar = tqdm(loader, total=len(sampler), initial=0, desc=f"train {cfg.stage}", unit="step",
               disable=not cfg.progress, dynamic_ncols=True)
    log_path = stage_dir / "loss_log.jsonl"
    with open(log_path, "a") as log_file:
        for i, batch in enumerate(bar):
            step = start + i + 1
            lr = optimizer.param_groups[0]["lr"]          # the rate this step uses
            losses, out = step_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            scheduler.step()
            record = {"step": step, "lr": lr,
                      **{k: float(v.detach()) for k, v in losses.items()}}
            history.append(record)
            log_file.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if cfg.display_count and step % cfg.display_count == 0:
                log.info("step %d: %s", step, ", ".join(f"{k} {v:.5g}" for k, v in record.items()
                                                        if k != "step"))
                if montage_fn is not None:
                    with torch.no_grad():
                        save_image_atomic(montage_fn(batch, out),
                                          stage_dir / "samples" / f"step_{step:06d}.jpg")
            if cfg.save_count and step % cfg.save_count == 0:
                save_training_state(step_checkpoint_path(stage_dir, step), model, optimizer,
                                    scheduler, step, cfg.stage)
    bar.close()
    final = save_final(model, Path(out_dir) / FINAL_FILES[cfg.stage])
    log.info("wrote %s", final)
    return history


def train_gmm(dataroot: str | Path, datamode: str, data_list: str | Path, out_dir: str | Path,
              cfg: TrainConfig, device: torch.device, init_checkpoint: str | Path | None = None,
              resume: str | Path | None = None, model_cfg: CPVTONConfig = DEFAULT_CONFIG
              ) -> list[dict[str, float]]:
    """Train the GMM (BatchNorm in train mode) and write ``out_dir/GMM/gmm_final.pth``."""
    dataset = CPDataset(dataroot, datamode, data_list, stage="GMM", cfg=model_cfg)
    gmm = build_gmm(model_cfg)
    if init_checkpoint:
        load_checkpoint(gmm, Path(init_checkpoint))
    gmm.to(device)
    grid_image = torch.from_numpy(grid_image_array(model_cfg))
    return train(gmm, dataset, out_dir, cfg, device,
                 step_fn=lambda b: gmm_training_step(gmm, b, device, cfg.gic_weight),
                 montage_fn=lambda b, o: _gmm_montage(b, o, grid_image), resume=resume)


def train_tom(dataroot: str | Path, datamode: str, data_list: str | Path, out_dir: str | Path,
              cfg: TrainConfig, device: torch.device, gmm_checkpoint: str | Path | None = None,
              warp_dir: str | Path | None = None, vgg_checkpoint: str | Path | None = None,
              init_checkpoint: str | Path | None = None, resume: str | Path | None = None,
              model_cfg: CPVTONConfig = DEFAULT_CONFIG) -> list[dict[str, float]]:
    """Train the TOM and write ``out_dir/TOM/tom_final.pth``.

    The warped cloth comes from ``warp_dir`` (``warp-cloth``/``warp-mask`` as training.evaluate writes
    them) or from a frozen GMM loaded from ``gmm_checkpoint``; one of them is required. Without
    ``vgg_checkpoint`` the perceptual term is left out (with a warning)."""
    if not gmm_checkpoint and not warp_dir:
        raise ValueError("TOM training needs the GMM's warped cloth: pass gmm_checkpoint "
                         "(--gmm_checkpoint) or warp_dir (--warp_dir, training.evaluate's GMM output)")
    dataset = CPDataset(dataroot, datamode, data_list, stage="TOM", cfg=model_cfg,
                        warp_dir=None if gmm_checkpoint else warp_dir)
    gmm = None
    if gmm_checkpoint:
        gmm = build_gmm(model_cfg)
        load_checkpoint(gmm, Path(gmm_checkpoint))
        gmm.to(device).requires_grad_(False).eval()
    perceptual = None
    if vgg_checkpoint:
        perceptual = VGGPerceptualLoss(load_vgg19_features(vgg_checkpoint)).to(device)
    else:
        log.warning("no --vgg_checkpoint: the VGG perceptual term is SKIPPED (the TOM loss is "
                    "L1 + mask L1 only); give a local torchvision VGG19 state dict to include it")
    tom = build_tom(model_cfg)
    if init_checkpoint:
        load_checkpoint(tom, Path(init_checkpoint))
    tom.to(device)
    return train(tom, dataset, out_dir, cfg, device,
                 step_fn=lambda b: tom_training_step(tom, b, device, gmm, perceptual),
                 montage_fn=_tom_montage, resume=resume)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train the CP-VTON+ GMM or TOM on a VITON-format dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--stage", choices=STAGES, required=True)
    p.add_argument("--dataroot", default="data", help="folder holding <datamode>/{image, cloth, ...}")
    p.add_argument("--datamode", default="train")
    p.add_argument("--data_list", default="train_pairs.txt",
                   help="pairs file (path, or name inside --dataroot)")
    p.add_argument("--checkpoint_dir", default="checkpoints",
                   help="output folder: <dir>/<STAGE>/step_*.pth, gmm_final.pth / tom_final.pth")
    p.add_argument("--steps", type=int, required=True, help="total optimisation steps")
    p.add_argument("--keep_step", type=int, default=None,
                   help="steps at the full learning rate before the linear decay to 0 "
                        "(default: steps // 2)")
    p.add_argument("-b", "--batch_size", "--batch-size", dest="batch_size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (betas 0.5, 0.999)")
    p.add_argument("--save_count", type=int, default=5000, help="resumable checkpoint every N steps")
    p.add_argument("--display_count", type=int, default=100,
                   help="log line and sample montage (samples/step_*.jpg) every N steps")
    p.add_argument("--checkpoint", default=None,
                   help="initial weights (official-format state dict) for fine-tuning")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue from the newest <dir>/<STAGE>/step_*.pth, or from the given file")
    p.add_argument("--gmm_checkpoint", default=None,
                   help="TOM only: GMM weights used (frozen) to warp the cloth on the fly")
    p.add_argument("--warp_dir", default=None,
                   help="TOM only: folder with warp-cloth/ and warp-mask/ (training.evaluate's "
                        "<result_dir>/GMM/<datamode>) instead of --gmm_checkpoint")
    p.add_argument("--vgg_checkpoint", default=None,
                   help="TOM only: local torchvision VGG19 state dict for the perceptual loss; "
                        "nothing is downloaded — without it the perceptual term is skipped "
                        "with a warning")
    p.add_argument("--gic_weight", type=float, default=GIC_WEIGHT, help="GMM: weight of the GIC loss")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order and initial weights")
    p.add_argument("--no_shuffle", action="store_true", help="use the pairs in file order")
    p.add_argument("-j", "--workers", type=int, default=0, help="data-loading worker processes")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.stage == "TOM" and not (args.gmm_checkpoint or args.warp_dir):
        build_parser().error("--stage TOM needs --gmm_checkpoint or --warp_dir (the GMM's warped cloth)")
    if args.steps <= 0:
        build_parser().error("--steps must be positive")
    torch.manual_seed(args.seed)
    cfg = TrainConfig(stage=args.stage, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      keep_step=args.keep_step, save_count=args.save_count,
                      display_count=args.display_count, seed=args.seed,
                      shuffle=not args.no_shuffle, workers=args.workers,
                      gic_weight=args.gic_weight, progress=not args.no_progress)
    device = pick_device(args.device)
    log.info("training %s for %d steps on %s (batch %d, lr %g, decay after step %d)",
             cfg.stage, cfg.steps, device, cfg.batch_size, cfg.lr, cfg.keep)
    common = dict(dataroot=args.dataroot, datamode=args.datamode, data_list=args.data_list,
                  out_dir=args.checkpoint_dir, cfg=cfg, device=device,
                  init_checkpoint=args.checkpoint, resume=args.resume)
    if args.stage == "GMM":
        history = train_gmm(**common)
    else:
        history = train_tom(**common, gmm_checkpoint=args.gmm_checkpoint, warp_dir=args.warp_dir,
                            vgg_checkpoint=args.vgg_checkpoint)
    if history:
        log.info("done: loss %.5f at step 1 of this run → %.5f at step %d", history[0]["loss"],
                 history[-1]["loss"], history[-1]["step"])
    print(f"wrote {Path(args.checkpoint_dir) / FINAL_FILES[args.stage]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
