"""`cnnlab new`'s training-time estimate: a few real steps of the written recipe's model, timed on this machine.

A constant (seconds per megapixel) was wrong by 4x on a user's machine and its numbers did not add up; the
estimate is now measured with the settings training will use (device, precision, channels_last, threads) and
stated as arithmetic the reader can check: epochs x (steps x step time + validation) = total.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.config import Recipe, load_recipe
from cnnlab.data.augment import augment_batch, is_identity
from cnnlab.engine.fit import build_optimizer
from cnnlab.engine.runtime import choose_threads, resolve_runtime
from cnnlab.losses.core import build_loss
from cnnlab.models import build_model
from cnnlab.tasks import task_for

TIMED_STEPS = 3      # at most, after one warm-up step (the first step allocates memory and picks kernels) ...
ENOUGH_TIMED_S = 1.0  # ... and fewer once this much was timed: a slow step is timed once, `new` stays quick


@dataclass(frozen=True)
class StepTimes:
    """Measured seconds of one training step (a batch) and of one image's forward pass in evaluation."""

    train_step_s: float
    eval_image_s: float
    batch: int
    threads: int
    where: str        # e.g. "cpu, bf16, 2 threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    """Wall seconds of fn() with the device's queued work finished."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def measure_steps(r: Recipe, in_channels: int, num_classes: int, batch: int) -> StepTimes:
    """One warm-up, then 1 to TIMED_STEPS augment+forward+backward+optimizer steps on random input (median), and
    one forward pass in evaluation mode; targets per pixel (segmentation) or per image (classification).

    Built from the loaded recipe exactly as training builds it; the global RNG and thread count are restored.
    """
    size = tuple(r.data.size)
    before = torch.get_num_threads()
    try:
        threads = choose_threads(r.train.threads)
        rt = resolve_runtime(r.train.device, r.train.precision, r.train.channels_last)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(r.model.name, in_channels, num_classes, size, r.model.params)
            fmt = torch.channels_last if rt.channels_last else torch.preserve_format
            model = model.to(rt.device, memory_format=fmt)
            # class weights (a weighted loss) cost the same whatever they are: ones stand in for the training masks
            loss_fn = build_loss(r.loss.name, r.loss.params, weights=torch.ones(num_classes))
            opt = build_optimizer(model, r)
            x = rt.to_input(torch.rand(batch, in_channels, *size))
            target = (batch, *size) if task_for(r.task).dense else (batch,)  # a label per pixel or per image
            y = torch.randint(0, num_classes, target, device=rt.device)
            g = torch.Generator().manual_seed(0)

            def train_step() -> None:
                # The recipe's augmentation runs on every training batch too: for a small CNN it is a real
                # share of the step (masks are left out: a classifier has none, a mask warp costs little).
                xa = x if is_identity(r.augment) else augment_batch(x, None, r.augment, g)[0]
                with rt.autocast():
                    out = model(xa)
                loss = loss_fn(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            model.train()
            _timed(train_step, rt.device)  # warm-up, not counted
            steps: list[float] = []
            while len(steps) < TIMED_STEPS and sum(steps) < ENOUGH_TIMED_S:
                steps.append(_timed(train_step, rt.device))
            model.eval()
            with torch.no_grad(), rt.autocast():
                evaluation = _timed(lambda: model(x), rt.device)
    finally:
        torch.set_num_threads(before)
    where = f"{rt.device.type}, {rt.precision}" + (f", {threads} thread(s)" if rt.device.type == "cpu" else "")
    return StepTimes(statistics.median(steps), evaluation / batch, batch, threads, where)


@dataclass(frozen=True)
class Estimate:
    """Per-epoch and total seconds from measured step times; every number shown is derived from the ones before."""

    times: StepTimes
    steps: int            # training steps per epoch
    n_val: int            # validation images per epoch
    epochs: int
    windows: int = 1      # forward passes per validation image: the sliding windows of a patch-trained run (each
    #                       has the pixels of the timed size), 1 where whole images are resized to it

    @property
    def train_s(self) -> float:
        return self.steps * self.times.train_step_s

    @property
    def val_s(self) -> float:
        return self.n_val * self.windows * self.times.eval_image_s

    @property
    def epoch_s(self) -> float:
        """Rounded as shown, so that epochs x shown per-epoch = shown total."""
        return _round(self.train_s + self.val_s)

    @property
    def total_s(self) -> float:
        return self.epochs * self.epoch_s

    def epoch_line(self) -> str:
        """How one epoch's seconds are made up."""
        t = self.times
        return (f"~{self.epoch_s:g} s per epoch = {self.steps} step(s) x {_round(t.train_step_s):g} s (measured: "
                f"batch of {t.batch}, {t.where}) + validation {self.n_val} image(s) x "
                + (f"{self.windows} sliding windows x " if self.windows > 1 else "")
                + f"{_round(t.eval_image_s):g} s")

    def total_line(self) -> str:
        """The whole run's seconds, in minutes or hours too when long."""
        return f"{self.epochs} epochs x {self.epoch_s:g} s = {self.total_s:g} s{_human(self.total_s)}"


def _round(s: float) -> float:
    """3 significant digits (0.0123, 1.23, 123): enough for an estimate, short to read and to multiply."""
    if s <= 0:
        return 0.0
    return round(s, max(0, 2 - math.floor(math.log10(s))))


def _human(s: float) -> str:
    if s < 120:
        return ""
    return f" (about {s / 60:.0f} minutes)" if s < 5400 else f" (about {s / 3600:.1f} hours)"


def steps_per_epoch(n_train: int, batch: int) -> int:
    """As the training loop batches: full batches only (the last partial one is dropped); a split smaller than a
    batch is one batch of all its images."""
    return n_train // min(batch, n_train) if n_train > 0 else 0


def validate_written(path: Path, in_channels: int, num_classes: int) -> Recipe:
    """A recipe `new` wrote must load, and its model and loss must build (before any step is timed with it)."""
    r = load_recipe(path)
    build_model(r.model.name, in_channels, num_classes, tuple(r.data.patch or r.data.size), r.model.params)
    build_loss(r.loss.name, r.loss.params, weights=torch.ones(num_classes))  # weights: from the masks in training
    return r
