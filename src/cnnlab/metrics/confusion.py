"""Metrics accumulated over a whole split in a confusion matrix (bincount), with an explicit empty-class rule.

Rule for a class absent from both prediction and ground truth on the split: its Dice and IoU are undefined
(NaN), shown as such, and excluded from every mean. A class absent from the ground truth but predicted gets
Dice 0 in the per-class table. The headline 'strict' mean Dice averages the classes present in the ground truth.
"""
from __future__ import annotations

import math
import re

import torch

BACKGROUND_NAMES = re.compile(r"(?i)^_?(background|bg|backgr|clutter)s?(?:[_\- ].*)?$")  # Background_Tissue too


def zero_is_background(class_names: list[str]) -> bool:
    """Whether class 0 is a background, by its name: binary masks and names files say so; the unnamed value 0 of
    multi-class masks (class_0) is a class like any other (CamVid's 0 is Sky), so no mean excludes it."""
    return bool(class_names) and bool(BACKGROUND_NAMES.match(str(class_names[0])))


class ConfusionMatrix:
    """Rows: ground truth, columns: prediction; pixels (segmentation) or samples (classification)."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add argmax predictions and targets of any matching shape."""
        p, t = pred.reshape(-1).long(), target.reshape(-1).long()
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
        n = self.num_classes
        counts = torch.bincount(t * n + p, minlength=n * n)
        self.mat += counts.reshape(n, n).cpu()

    @property
    def tp(self) -> torch.Tensor:
        return self.mat.diag().double()

    def dice(self) -> torch.Tensor:
        """Per-class Dice 2TP / (2TP + FP + FN); NaN where the class is in neither prediction nor truth."""
        tp = self.tp
        denom = self.mat.sum(0).double() + self.mat.sum(1).double()
        return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(tp, math.nan))

    def iou(self) -> torch.Tensor:
        """Per-class IoU TP / (TP + FP + FN); NaN where undefined."""
        tp = self.tp
        union = self.mat.sum(0).double() + self.mat.sum(1).double() - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def present(self) -> torch.Tensor:
        """Classes with at least one ground-truth pixel/sample."""
        return self.mat.sum(1) > 0

    def accuracy(self) -> float:
        total = self.mat.sum().item()
        return self.mat.diag().sum().item() / total if total else math.nan

    def summary(self, class_names: list[str]) -> dict:
        """Headline and per-class numbers, named by convention. The foreground mean and the background's Dice only
        where class 0 is a background by its name (zero_is_background): where it is a real class (CamVid's Sky),
        a mean without it would silently leave that class out."""
        dice, iou, present = self.dice(), self.iou(), self.present()
        fg = present.clone()
        fg[0] = False
        split = {"dice_mean_foreground": _mean(dice[fg]),      # the same without background (class 0)
                 "dice_background": _num(dice[0])} if zero_is_background(class_names) else {}
        return {
            "dice_mean": _mean(dice[present]),            # strict: argmax, global counts, classes in GT
            **split,
            "iou_mean": _mean(iou[present]),
            "pixel_accuracy": self.accuracy(),
            "per_class": {n: {"dice": _num(d), "iou": _num(i), "in_ground_truth": bool(p)}
                          for n, d, i, p in zip(class_names, dice.tolist(), iou.tolist(), present.tolist())},
        }


def _num(x) -> float | None:
    """JSON-friendly float (None for NaN)."""
    v = float(x)
    return None if math.isnan(v) else v


def _mean(x: torch.Tensor) -> float | None:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else None
