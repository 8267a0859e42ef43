"""Contender (ii) of time_to_quality.py: the recipe's own model trained the plain PyTorch way.

What a course participant writes for the same recipe: a Dataset that opens each image and mask with PIL, resizes,
flips and colour-jitters them and one-hot encodes the mask per sample (course_baseline.CourseSegDataset); a
DataLoader; fp32 NCHW; torch.optim.AdamW (or Adam) with a LambdaLR warm-up + cosine schedule per epoch; the encoder
frozen by requires_grad for the recipe's first epochs; the course's soft Dice (+ cross-entropy for dice_ce) on
one-hot targets; loss.item() every step. Same recipe values as cnnlab's run: model and initial weights (the same
seeded build as cnnlab.engine.run), loss, optimizer, learning rate, schedule, batch size, epochs, augmentation.

Judged like the engine's runs: after each epoch (not timed) cnnlab.engine.steps.evaluate on the validation split as
cnnlab decodes it, i.e. strict Dice from cnnlab.metrics.confusion.ConfusionMatrix over the same ground truth.

Run as a child of time_to_quality.py (one fresh process per contender); prints one `TTQ {json}` line per epoch.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnlab.config import AugmentConfig, Recipe, load_recipe  # noqa: E402
from cnnlab.data.loading import RunData, load_run_data  # noqa: E402
from cnnlab.engine.runtime import Runtime, choose_threads, seed_everything  # noqa: E402
from cnnlab.engine.steps import Normalizer, Scorer, evaluate  # noqa: E402
from cnnlab.losses.core import build_loss  # noqa: E402
from cnnlab.models import build_model  # noqa: E402
from cnnlab.tasks import task_for  # noqa: E402
from course_baseline import CourseSegDataset, course_dice_loss  # noqa: E402

TAG = "TTQ"
# The augmentation CourseSegDataset applies (recipe endovis/b_augment's): the plain side refuses any other.
PLAIN_AUGMENT = AugmentConfig(hflip=True, vflip=True, brightness=0.2, contrast=0.2, saturation=0.2)


def lr_factor(epoch: int, warmup: int, epochs: int, schedule: str) -> float:
    """LambdaLR factor of an epoch, written the plain way: linear warm-up, then cosine to 0 (or constant).

    The same curve as cnnlab.engine.fit.lr_at (tests/benchmarks/test_benchmarks_ttq.py compares them), so the two sides
    differ in how they train, not in what they train with.
    """
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    if schedule == "none":
        return 1.0
    if schedule != "cosine":
        raise SystemExit(f"plain side: optim.schedule '{schedule}' not written here (none or cosine)")
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(epochs - warmup, 1)))


def seeded_model_and_data(r: Recipe) -> tuple[torch.nn.Module, RunData]:
    """The model with the initial weights cnnlab's run of this recipe starts from: the same seeding, data loading
    and build order as cnnlab.engine.run._setup (compared in tests/benchmarks/test_benchmarks_ttq.py). fp32, NCHW,
    CPU."""
    seed_everything(r.train.seed)
    data = load_run_data(r.data, r.train.seed)
    n_out = task_for(r.task).num_outputs(data.class_names)
    model = build_model(r.model.name, data.train.images.shape[1], n_out, tuple(data.train.images.shape[-2:]),
                        r.model.params)
    return model, data


def plain_loss(name: str, params: dict) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The course's losses on one-hot targets (equal to cnnlab's dice / dice_ce with default params)."""
    if params:
        raise SystemExit(f"plain side: loss.params {params} not written here")
    if name == "dice":
        return course_dice_loss
    if name == "dice_ce":  # cross-entropy with one-hot (probability) targets = with class indices
        return lambda logits, onehot: course_dice_loss(logits, onehot) + F.cross_entropy(logits, onehot)
    raise SystemExit(f"plain side: loss '{name}' not written here (dice or dice_ce)")


@dataclass
class PlainRun:
    """Everything the plain loop trains with, built from a recipe."""

    model: torch.nn.Module
    data: RunData
    loader: DataLoader
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    loss_fn: Callable
    norm: Normalizer


def build(r: Recipe, workers: int = 0) -> PlainRun:
    """Model, per-sample PIL dataset, DataLoader, optimizer and schedule for the recipe."""
    if r.augment != PLAIN_AUGMENT:
        raise SystemExit(f"plain side: augmentation {r.augment} differs from b_augment's, the one written here")
    if r.data.format != "endovis" or r.data.label_fraction != 1.0:
        raise SystemExit("plain side: only the whole training split of the endovis course layout is written here")
    model, data = seeded_model_and_data(r)
    norm = (Normalizer.identity(data.train.images.shape[1]) if getattr(model, "normalizes_input", False)
            else Normalizer.fit(data.train.images))  # as cnnlab.engine.run.train chooses
    size = tuple(data.train.images.shape[-2:])
    train = CourseSegDataset(Path(r.data.root), r.data.train, norm.mean, norm.std, len(data.class_names), size,
                             augment=True)
    loader = DataLoader(train, batch_size=r.train.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)
    o = r.optim
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}.get(o.name)
    if cls is None:
        raise SystemExit(f"plain side: optimizer '{o.name}' not written here (adam or adamw)")
    opt = cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: lr_factor(e, o.warmup_epochs, r.train.epochs, o.schedule))
    return PlainRun(model, data, loader, opt, sched, plain_loss(r.loss.name, dict(r.loss.params)), norm)


def train_epoch(p: PlainRun, epoch: int, freeze_epochs: int, max_steps: int) -> tuple[float, float]:
    """One epoch the plain way; returns (seconds, mean loss). The encoder is frozen by requires_grad."""
    encoder = getattr(p.model, "encoder", None)
    if freeze_epochs and encoder is not None:
        for q in encoder.parameters():
            q.requires_grad_(epoch >= freeze_epochs)
    p.model.train()
    total, steps, t0 = 0.0, 0, time.perf_counter()
    for x, onehot in p.loader:
        loss = p.loss_fn(p.model(x), onehot)
        p.opt.zero_grad()
        loss.backward()
        p.opt.step()
        total += loss.item()
        steps += 1
        if max_steps and steps >= max_steps:
            break
    secs = time.perf_counter() - t0
    p.sched.step()
    return secs, total / max(steps, 1)


def judge(p: PlainRun, r: Recipe) -> float:
    """Strict validation Dice by cnnlab's own evaluate (fp32 NCHW on CPU, the plain side's precision)."""
    task = task_for(r.task)
    loss = build_loss(r.loss.name, r.loss.params, task.ignore_index(p.data.val))
    metrics, _ = evaluate(Scorer(task, p.model, Runtime(torch.device("cpu"), "fp32", False), p.norm,
                                 r.train.eval_batch_size, loss), p.data.val)
    return metrics["dice_mean"]


def run(r: Recipe, cap_s: float, stop_at: float, emit: Callable[[dict], None], workers: int = 0) -> None:
    """Epochs until the recipe's last, until stop_at is reached, or until cap_s of training seconds are spent."""
    choose_threads(r.train.threads)  # as a cnnlab run sets them; glibc's allocator left at its default
    p = build(r, workers)
    emit({"event": "start", "time": time.time()})
    spent = 0.0
    for epoch in range(r.train.epochs):
        lr = p.opt.param_groups[0]["lr"]
        secs, loss = train_epoch(p, epoch, r.model.freeze_encoder_epochs, r.train.max_steps_per_epoch)
        spent += secs
        dice = judge(p, r)
        emit({"event": "epoch", "epoch": epoch + 1, "epoch_s": secs, "train_s": spent, "val_dice": dice,
              "train_loss": loss, "lr": lr, "time": time.time()})
        if dice >= stop_at or spent >= cap_s:
            break


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--cap-s", type=float, required=True)
    p.add_argument("--stop-at", type=float, required=True)
    p.add_argument("--workers", type=int, default=0)
    a = p.parse_args(argv)
    run(load_recipe(Path(a.recipe), a.overrides), a.cap_s, a.stop_at,
        lambda row: print(f"{TAG} {json.dumps(row)}", flush=True), a.workers)


if __name__ == "__main__":
    main()
