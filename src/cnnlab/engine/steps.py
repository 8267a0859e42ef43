"""The engine's side of a batch: normalise inputs, run the model over a split, sum metrics over processes.

What a batch and a metric mean per task is the task's (cnnlab.tasks); here are the loops, devices and processes.
A Scorer holds what a pass of a model over a split needs (the task among them), so the loops take one object: a run
makes it from its context (RunContext.scorer), inference from the trained run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.config import Recipe
from cnnlab.data.types import ClsData, ColorData, SegData
from cnnlab.engine.distributed import all_sum, shard
from cnnlab.engine.flips import Flips, model_logits
from cnnlab.engine.runtime import Runtime
from cnnlab.engine.windows import Window, window_logits
from cnnlab.losses.core import Loss
from cnnlab.metrics.confusion import ConfusionMatrix
from cnnlab.tasks import Task


@dataclass(frozen=True)
class Normalizer:
    """Per-channel mean/std of the training images (in [0, 1] units), saved with the checkpoint."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @staticmethod
    def fit(images: torch.Tensor, sizes: torch.Tensor | None = None) -> "Normalizer":
        """Over every pixel; with sizes (images of different sizes kept at their own, SegData.sizes) over each
        image's own pixels only, not the padding around the smaller ones."""
        if sizes is not None:
            return Normalizer._fit_own(images, sizes)
        x = images.float().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
        return Normalizer(tuple(mean.tolist()), tuple(std.tolist()))

    @staticmethod
    def _fit_own(images: torch.Tensor, sizes: torch.Tensor) -> "Normalizer":
        total = torch.zeros(3, images.shape[1], dtype=torch.float64)  # pixel count, sum, sum of squares
        for img, (h, w) in zip(images, sizes.tolist()):
            x = img[:, :h, :w].double().div_(255).flatten(1)
            total += torch.stack([torch.full((x.shape[0],), float(x.shape[1]), dtype=torch.float64), x.sum(1),
                                  x.square().sum(1)])
        n, s1, s2 = total
        mean = s1 / n
        std = ((s2 - n * mean.square()) / (n - 1).clamp(min=1)).clamp(min=0).sqrt().clamp(min=1e-3)
        return Normalizer(tuple(mean.float().tolist()), tuple(std.float().tolist()))

    @staticmethod
    def identity(channels: int) -> "Normalizer":
        """Plain [0, 1] inputs, for models that normalise inside (ImageNet transfer)."""
        return Normalizer((0.0,) * channels, (1.0,) * channels)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - m) / s


Split = SegData | ClsData | ColorData


@dataclass(frozen=True)
class Scorer:
    """A model as the engine passes it over a split: its task (what a batch and a metric are), the model, where it
    runs, its input normaliser, the batch size, the loss that scores it (evaluate) and, for patch-trained runs, the
    sliding window whole images are seen through."""

    task: Task
    model: nn.Module
    rt: Runtime
    norm: Normalizer
    batch_size: int
    loss_fn: Loss | None = None
    window: Window | None = None
    flips: Flips = ()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float logits of a batch on the model's device, averaged over self.flips where there are any."""
        return model_logits(self.model, self.rt, x, self.flips)


def iter_logits(s: Scorer, data: Split, idx: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Logits (float32, CPU) for the chosen samples, in order, one batch at a time: a caller that keeps only what
    it derives (label maps) never holds N x K x H x W floats for a whole split. s.window: patch-trained runs, one
    image at a time by sliding windows (padded to the split's tensor where images are smaller)."""
    s.model.eval()
    idx = torch.arange(len(data)) if idx is None else idx
    if s.window is not None:
        for i in idx.tolist():
            with torch.no_grad():
                out = whole_image_logits(s, data, i)[0]
            yield padded_logits(out, data.masks.shape)
        return
    for chunk in idx.split(s.batch_size):
        with torch.no_grad():
            x, _ = s.task.make_batch(data, chunk, s.rt, s.norm)
            out = s.logits(x).cpu()
        yield out


def predict_logits(s: Scorer, data: Split, idx: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (float32, CPU) for the chosen samples, in order (through s.window where it is set)."""
    return torch.cat(list(iter_logits(s, data, idx)))


def run_window(r: Recipe) -> Window | None:
    """The sliding window a run's whole images are scored with: patch-trained runs only (data.patch)."""
    return Window.of_recipe(r.data.patch, r.train.window_overlap, r.train.eval_batch_size)


def whole_image_logits(s: Scorer, data: SegData, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1 x K x h x w logits (CPU) of sample i at its own size by sliding windows (s.window), and its 1 x h x w
    target."""
    h, w = data.own_size(i)
    x, y = s.task.make_batch(data, torch.tensor([i]), s.rt, s.norm)

    def predict(b: torch.Tensor) -> torch.Tensor:
        return s.logits(s.rt.to_input(b))

    return window_logits(predict, x[0, :, :h, :w], s.window)[None], y[:, :h, :w]


def padded_logits(out: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Logits of an image smaller than the split's tensor, padded with 0 to it (kept label maps stack)."""
    h, w = shape[-2:]
    return torch.nn.functional.pad(out, [0, w - out.shape[-1], 0, h - out.shape[-2]])


@torch.no_grad()
def evaluate(s: Scorer, data: Split, on_batch: Callable[[int], None] | None = None,
             on_logits: Callable[[torch.Tensor, torch.Tensor], None] | None = None
             ) -> tuple[dict, ConfusionMatrix | None]:
    """The task's metrics over a whole split (each process its shard, summed over processes), and its confusion
    matrix (None for colorization). on_batch: told each batch's size (a progress bar). on_logits: handed each
    batch's model output and sample indices (evaluate's label maps and native-size scores: one pass of the model).
    s.window: patch-trained runs score each whole image at its own size by sliding windows (engine/windows.py)."""
    s.model.eval()
    tally = s.task.tally(data, s.loss_fn)
    if s.window is not None:
        for i in shard(torch.arange(len(data))).tolist():
            out, y = whole_image_logits(s, data, i)
            tally.add(out.to(y.device), y)
            if on_logits is not None:
                on_logits(padded_logits(out, data.masks.shape), torch.tensor([i]))
            if on_batch is not None:
                on_batch(1)
        return tally.result(all_sum)
    for chunk in shard(torch.arange(len(data))).split(s.batch_size):
        x, y = s.task.make_batch(data, chunk, s.rt, s.norm)
        out = s.logits(x)
        tally.add(out, y)
        if on_logits is not None:
            on_logits(out, chunk)
        if on_batch is not None:
            on_batch(len(chunk))
    return tally.result(all_sum)
