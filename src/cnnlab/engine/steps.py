"""What one batch means per task: prepare inputs/targets, run the model, accumulate metrics over a split."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.config import AugmentConfig
from cnnlab.data.augment import augment_batch, is_identity
from cnnlab.data.types import ClsData, ColorData, SegData
from cnnlab.engine.distributed import all_sum, shard
from cnnlab.engine.runtime import Runtime
from cnnlab.losses.core import Loss, soft_dice_per_class
from cnnlab.metrics.confusion import ConfusionMatrix


@dataclass(frozen=True)
class Normalizer:
    """Per-channel mean/std of the training images (in [0, 1] units), saved with the checkpoint."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @staticmethod
    def fit(images: torch.Tensor) -> "Normalizer":
        x = images.float().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
        return Normalizer(tuple(mean.tolist()), tuple(std.tolist()))

    @staticmethod
    def identity(channels: int) -> "Normalizer":
        """Plain [0, 1] inputs, for models that normalise inside (ImageNet transfer)."""
        return Normalizer((0.0,) * channels, (1.0,) * channels)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - m) / s


def targets_of(data: SegData | ClsData | ColorData) -> torch.Tensor:
    """Masks for segmentation, labels for classification, colour channels for colorization."""
    if isinstance(data, ColorData):
        return data.targets
    return data.masks if isinstance(data, SegData) else data.labels


def _color_batch(data: ColorData, idx: torch.Tensor, rt: Runtime, norm: Normalizer, aug: AugmentConfig | None,
                 g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey input and colour target (RGB in [0, 1], or a*b* / 128), warped together by geometric augmentation."""
    x = data.images[idx].to(rt.device).float().div_(255)
    t = data.targets[idx].to(rt.device).float()
    t = t / 255 if data.space == "rgb" else (t - 128) / 128
    if aug is not None:
        geometric = dataclasses.replace(aug, brightness=0.0, contrast=0.0, saturation=0.0)
        if not is_identity(geometric):
            xt, _ = augment_batch(torch.cat([x, t], 1), None, geometric, g)
            x, t = xt[:, :1], xt[:, 1:]
    return rt.to_input(norm(x)), t


def make_batch(data: SegData | ClsData, idx: torch.Tensor, rt: Runtime, norm: Normalizer,
               aug: AugmentConfig | None = None, g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 samples -> normalised float inputs on the device (augmented when aug is given) and targets."""
    if isinstance(data, ColorData):
        return _color_batch(data, idx, rt, norm, aug, g)
    x = data.images[idx].to(rt.device, non_blocking=True).float().div_(255)
    y = targets_of(data)[idx].to(rt.device, non_blocking=True)
    if aug is not None and not is_identity(aug):
        seg = isinstance(data, SegData)
        fill = data.ignore_index if seg and data.ignore_index is not None else 0
        x, m = augment_batch(x, y if seg else None, aug, g, fill)
        y = m if seg else y
    return rt.to_input(norm(x)), y.long()


@torch.no_grad()
def predict_logits(model: nn.Module, data: SegData | ClsData, rt: Runtime, norm: Normalizer,
                   batch_size: int, idx: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (float32, CPU) for the chosen samples, in order."""
    model.eval()
    idx = torch.arange(len(data)) if idx is None else idx
    outs = []
    for chunk in idx.split(batch_size):
        x, _ = make_batch(data, chunk, rt, norm)
        with rt.autocast():
            outs.append(model(x).float().cpu())
    return torch.cat(outs)


@torch.no_grad()
def evaluate(model: nn.Module, data: SegData | ClsData, rt: Runtime, norm: Normalizer, loss_fn: Loss,
             batch_size: int) -> tuple[dict, ConfusionMatrix]:
    """Loss, confusion matrix and (segmentation) the course's per-batch soft Dice over a whole split."""
    model.eval()
    if isinstance(data, ColorData):
        return _evaluate_color(model, data, rt, norm, loss_fn, batch_size), None
    seg = isinstance(data, SegData)
    ignore = data.ignore_index if seg else None
    cm = ConfusionMatrix(len(data.class_names), ignore)
    loss_sum, soft_sum, n_batches = 0.0, 0.0, 0
    for chunk in shard(torch.arange(len(data))).split(batch_size):
        x, y = make_batch(data, chunk, rt, norm)
        with rt.autocast():
            out = model(x)
        out = out.float()
        loss_sum += float(loss_fn(out, y)) * len(chunk)
        cm.update(out.argmax(1), y)
        if seg:  # the course's metric: soft Dice on probabilities, per batch, smoothing 1
            soft_sum += float(soft_dice_per_class(out.softmax(1), y, 1.0, ignore).mean())
        n_batches += 1
    cm.mat = all_sum(cm.mat)  # under DDP: counts from every rank's shard = the single-process matrix
    sums = all_sum(torch.tensor([loss_sum, soft_sum, n_batches], dtype=torch.float64))
    loss_sum, soft_sum, n_batches = sums.tolist()
    metrics = {"loss": loss_sum / max(len(data), 1)}
    if seg:
        s = cm.summary(data.class_names)
        metrics.update({k: v for k, v in s.items() if k != "per_class"})
        metrics["soft_dice_batch_mean"] = soft_sum / max(n_batches, 1)
    else:
        metrics["accuracy"] = cm.accuracy()
    return metrics, cm


@torch.no_grad()
def _evaluate_color(model: nn.Module, data: ColorData, rt: Runtime, norm: Normalizer, loss_fn: Loss,
                    batch_size: int) -> dict:
    """Mean squared error over the split, and PSNR for RGB targets in [0, 1]."""
    total = 0.0
    for chunk in shard(torch.arange(len(data))).split(batch_size):
        x, t = make_batch(data, chunk, rt, norm)
        with rt.autocast():
            out = model(x)
        total += float(loss_fn(out.float(), t)) * len(chunk)
    mse = float(all_sum(torch.tensor([total], dtype=torch.float64))) / max(len(data), 1)
    metrics = {"loss": mse}
    if data.space == "rgb":
        metrics["psnr_db"] = 10 * math.log10(1 / max(mse, 1e-12))
    return metrics


def selection_metric(task: str, metrics: dict) -> float:
    """The validation number that picks the best epoch (higher is better)."""
    if task == "segmentation":
        v = metrics.get("dice_mean")
        return -math.inf if v is None else v
    if task == "classification":
        return metrics["accuracy"]
    return -metrics["loss"]
