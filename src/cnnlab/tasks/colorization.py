"""Colorization: colour channels from a grey image. Targets warp with their inputs (geometry only), the metric is
mean squared error (and PSNR for RGB), a prediction is a colour image. predict and export do not handle it."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from cnnlab.config import AugmentConfig
from cnnlab.data.augment import augment_batch, is_identity
from cnnlab.data.types import ColorData
from cnnlab.figures.run import color_samples
from cnnlab.losses.core import Loss
from cnnlab.metrics.confusion import ConfusionMatrix
from cnnlab.tasks.base import Norm, Placement, Reduce, Task, shrink_images

SHOWN = 4  # samples in the end-of-run figure


class MSETally:
    """Mean squared error over the split, and PSNR for RGB targets in [0, 1]."""

    def __init__(self, loss_fn: Loss, size: int, space: str) -> None:
        self.loss_fn, self.size, self.space = loss_fn, size, space
        self.total = 0.0

    def add(self, out: torch.Tensor, target: torch.Tensor) -> None:
        self.total += float(self.loss_fn(out.float(), target)) * len(target)

    def result(self, reduce: Reduce) -> tuple[dict, None]:
        mse = float(reduce(torch.tensor([self.total], dtype=torch.float64))) / max(self.size, 1)
        metrics = {"loss": mse}
        if self.space == "rgb":
            metrics["psnr_db"] = 10 * math.log10(1 / max(mse, 1e-12))
        return metrics, None


def _shown(split: ColorData) -> torch.Tensor:
    return torch.arange(min(SHOWN, len(split)))


class Colorization(Task):
    name = "colorization"
    losses = ("mse",)  # colours are regressed
    data_type = ColorData
    predicts = False
    class_scores = False  # colours: no softmax to average over flips (train.tta)
    conventions = "{loss} = `loss`: mean squared error of the predicted colours."

    def make_batch(self, data: ColorData, idx: torch.Tensor, rt: Placement, norm: Norm,
                   aug: AugmentConfig | None = None, g: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Grey input and colour target (RGB in [0, 1], or a*b* / 128), warped together by geometric augmentation
        (colour jitter would change the answer)."""
        x = data.images[idx].to(rt.device).float().div_(255)
        t = data.targets[idx].to(rt.device).float()
        t = t / 255 if data.space == "rgb" else (t - 128) / 128
        if aug is not None:
            geometric = dataclasses.replace(aug, brightness=0.0, contrast=0.0, saturation=0.0)
            if not is_identity(geometric):
                xt, _ = augment_batch(torch.cat([x, t], 1), None, geometric, g)
                x, t = xt[:, :1], xt[:, 1:]
        return rt.to_input(norm(x)), t

    def shrink_batch(self, x: torch.Tensor, y: torch.Tensor, size: tuple[int, int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The colour target is an image too: both downscaled alike."""
        return shrink_images(x, size), shrink_images(y, size)

    def tally(self, data: ColorData, loss_fn: Loss) -> MSETally:
        return MSETally(loss_fn, len(data), data.space)

    def predicted_samples(self, split: ColorData) -> int:
        """The first few samples: those the end-of-run figure shows (their predicted colours are kept as is)."""
        return len(_shown(split))

    def figures(self, fig_dir: Path, split: ColorData, pred: torch.Tensor | None,
                cm: ConfusionMatrix | None) -> list[Path]:
        """Grey input, predicted colour and true colour of the shown samples."""
        return [color_samples(split, pred, _shown(split), fig_dir / "colorization_samples.png")]
