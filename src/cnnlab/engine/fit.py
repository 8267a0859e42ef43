"""One training epoch, its optimizer and learning rate, and the TrainState a checkpoint keeps (the loop over epochs is
engine/run.py's)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from cnnlab.config import Recipe
from cnnlab.engine.context import RunContext
from cnnlab.engine.distributed import all_sum, rank, shard, unwrap, world
from cnnlab.engine.progress import Bar
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models.classifiers import param_groups


class TrainingDiverged(CnnlabError):
    """The loss, a weight or a BatchNorm statistic became NaN or infinite."""


def nonfinite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers holding a NaN or an infinity.

    Why: a finite loss does not prove finite weights (lr=1e6 with BatchNorm leaves inf running variances while
    the training loss, computed with batch statistics, stays finite). One fused max-abs per tensor (NaN
    propagates, nothing overflows as a squared norm would) and a single host sync: cheap enough for every epoch.
    """
    named = [(n, t.detach()) for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_floating_point()]
    if not named:
        return []
    peaks = torch.stack([m.float() for m in torch._foreach_norm([t for _, t in named], ord=math.inf)])
    ok = torch.isfinite(peaks)
    if bool(all_sum(ok.all().logical_not().to(torch.float64).cpu().reshape(1))[0] == 0):
        return []  # every rank is finite (all ranks agree, so all stop together)
    bad = [named[i][0] for i in (~ok).nonzero().flatten().tolist()]
    return bad or ["(on another process)"]


@dataclass
class TrainState:
    """Everything besides weights that resume needs (kept in every checkpoint)."""

    epoch: int = 0                   # next epoch to run
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    lr_factor: float = 1.0           # plateau schedule's accumulated decay
    train_seconds: float = 0.0
    train_images: int = 0
    history: list[dict] = field(default_factory=list)


def build_optimizer(model: torch.nn.Module, r: Recipe) -> torch.optim.Optimizer:
    """Adam/AdamW/SGD over the trainable parameters (U-Net encoders frozen for warm-up epochs included).

    Fused kernels where torch has them (CPU and CUDA, float parameters): one pass over all tensors instead
    of a Python loop per tensor; measured 4x faster Adam/AdamW steps for the course U-Net on this CPU.
    """
    o = r.optim
    params = param_groups(model, o.lr)  # pre-trained layers of transfer models get lr * their lr_scale
    tensors = [p for g in params for p in g["params"]]
    fused = bool(tensors) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors) or None
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, fused=fused)
    raise ConfigError(f"unknown optimizer '{o.name}' (optim.name)", "valid: adam, adamw, sgd")


def lr_at(epoch: int, r: Recipe, state: TrainState) -> float:
    """Learning rate of an epoch: warmup, then none/cosine/step, times the plateau factor."""
    o = r.optim
    if o.schedule not in ("none", "cosine", "plateau", "step"):
        raise ConfigError(f"unknown optim.schedule '{o.schedule}'", "valid: none, cosine, plateau, step")
    if epoch < o.warmup_epochs:
        return o.lr * (epoch + 1) / (o.warmup_epochs + 1)
    e, span = epoch - o.warmup_epochs, max(r.train.epochs - o.warmup_epochs, 1)
    if o.schedule == "cosine":
        return o.lr * 0.5 * (1 + math.cos(math.pi * e / span))
    if o.schedule == "step":
        return o.lr * o.gamma ** (e // o.step_size)
    return o.lr * state.lr_factor


def set_encoder_requires_grad(model: torch.nn.Module, trainable: bool) -> None:
    """The epoch schedule's freeze (model.freeze_encoder_epochs): requires_grad of the modules the model names as
    its encoder (`encoder_modules`), nothing for a model without. Only requires_grad: unlike
    models.encoders.set_encoder_trainable, it leaves BatchNorm's mode alone."""
    for m in getattr(model, "encoder_modules", lambda: [])():
        for p in m.parameters():
            p.requires_grad_(trainable)


def _batches(perm: torch.Tensor, r: Recipe) -> list[torch.Tensor]:
    """An epoch's batches of a permutation: whole global batches only, capped by max_steps_per_epoch."""
    bs = min(r.train.batch_size, len(perm))
    batches = list(perm[: len(perm) - len(perm) % bs].split(bs)) if len(perm) >= bs else [perm]
    return batches[: r.train.max_steps_per_epoch] if r.train.max_steps_per_epoch else batches


def epoch_images(n: int, r: Recipe) -> int:
    """How many training images one epoch over n samples sees (the total of its progress bar)."""
    return sum(len(b) for b in _batches(torch.arange(n), r))


def scheduled_size(r: Recipe, epoch: int) -> tuple[int, int] | None:
    """The training size of epoch (0-based) under train.size_schedule; None for data.size (no resizing).

    Why: early epochs learn coarse shapes that a quarter of the pixels show as well (progressive resizing, as
    fastai's); each side is rounded to a multiple of 16 (at least 32) so encoders that halve it 4-5 times keep
    whole feature maps."""
    end = 0
    for scale, epochs in r.train.size_schedule:
        end += int(epochs)
        if epoch < end:
            return tuple(max(32, int(round(side * scale / 16)) * 16) for side in r.data.size)
    return None


def train_one_epoch(ctx: RunContext, model: torch.nn.Module, epoch: int,
                    bar: Bar | None = None) -> tuple[float, int, float]:
    """One pass over the shuffled training split; returns mean loss, images seen, seconds.

    model: the module the steps call (ctx.core, or its DDP/compiled wrapper). ctx.scaler: the run's one fp16
    GradScaler (created once and checkpointed, so its scale carries over epochs and resumes). Ends by checking
    every weight and buffer is finite: a diverged epoch never reaches a checkpoint.
    bar: advanced after each step by the step's global batch, with this process's mean loss so far (the loss is
    read back for the sum already, so showing it adds no device sync).
    """
    r, data, loss_fn, opt, scaler = ctx.recipe, ctx.data, ctx.loss_fn, ctx.opt, ctx.scaler
    model.train()
    base = r.train.seed * 100003 + epoch                 # per-epoch seeds: resume reproduces the epoch exactly
    g = torch.Generator().manual_seed(base)              # same permutation on every rank
    g_aug = torch.Generator().manual_seed(base * 31 + rank())
    torch.manual_seed(base + 7919 * rank())              # dropout and friends
    perm = torch.randperm(len(data.train), generator=g)
    if r.train.batch_size < world():
        raise ConfigError(f"train.batch_size={r.train.batch_size} is the global batch; it must be at least the "
                          f"number of processes ({world()})")
    batches = _batches(perm, r)
    size = scheduled_size(r, epoch)
    task = ctx.task
    patch = tuple(r.data.patch) if r.data.patch else None
    g_patch = torch.Generator().manual_seed(base * 37 + rank())  # where patches lie: apart from augmentation's
    total, seen, t0 = 0.0, 0, time.perf_counter()
    for step, global_idx in enumerate(batches):
        idx = shard(global_idx)
        if patch is not None:  # data.patch: one random patch per sample, then augmented as whole images are
            cut = task.patches(data.train, idx, patch, r.train.foreground_oversample, g_patch)
            x, y = task.make_batch(cut, torch.arange(len(idx)), ctx.rt, ctx.norm, r.augment, g_aug)
        else:
            x, y = task.make_batch(data.train, idx, ctx.rt, ctx.norm, r.augment, g_aug)
        if size is not None:
            x, y = task.shrink_batch(x, y, size)
        with ctx.rt.autocast():
            out = model(x)
        loss = loss_fn(out, y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        step_loss = loss.item()
        total += step_loss * len(idx)
        seen += len(idx)
        if bar is not None:
            bar.advance(len(global_idx), step_loss=step_loss, loss=total / max(seen, 1))
    bad = nonfinite_tensors(unwrap(model))
    if bad:
        raise TrainingDiverged(f"training diverged: {len(bad)} weight/statistics tensors became NaN or infinite "
                               f"during epoch {epoch + 1} (checked after its step {len(batches)}; first: {bad[0]})")
    sums = all_sum(torch.tensor([total, float(seen)], dtype=torch.float64))
    return float(sums[0] / sums[1].clamp(min=1)), int(sums[1]), time.perf_counter() - t0
