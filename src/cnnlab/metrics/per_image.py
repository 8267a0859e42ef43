"""Per-image scores of multi-class segmentation: each image's own mean Dice and IoU over the classes present in its
ground truth, averaged over the images.

Why beside the strict (pooled) means: the strict mean counts pixels over the whole split, so large images and
large classes weigh most, and a class that is missed in a few images but right in many scores well. The
per-image mean asks how good a typical image is: a street frame whose cars were all missed scores low even if the
split's car pixels are mostly found. Binary runs report the foreground's own per-image Dice (metrics.boundary).
"""
from __future__ import annotations

import math

import torch

from cnnlab.metrics.confusion import ConfusionMatrix

CONVENTION = ("per image: argmax masks; each image's Dice 2TP/(2TP+FP+FN) and IoU TP/(TP+FP+FN) of every class "
              "present in that image's ground truth (ignored pixels left out), averaged over those classes, then "
              "over the images; an image with no valid pixel is not scored")


def per_image_scores(pred: torch.Tensor, target: torch.Tensor, n: int, ignore: int | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Dice, IoU) per image: means over the classes present in that image's ground truth (NaN: no valid pixel)."""
    dice, iou = [], []
    for p, t in zip(pred, target):
        cm = ConfusionMatrix(n, ignore)
        cm.update(p, t)
        present = cm.present()
        d, i = cm.dice()[present], cm.iou()[present]
        dice.append(float(d.mean()) if d.numel() else math.nan)
        iou.append(float(i.mean()) if i.numel() else math.nan)
    return torch.tensor(dice, dtype=torch.float64), torch.tensor(iou, dtype=torch.float64)


def per_image_summary(pred: torch.Tensor, target: torch.Tensor, class_names: list[str], ignore: int | None) -> dict:
    """summary.json's and evaluate's `per_image` entry for multi-class runs."""
    dice, iou = per_image_scores(pred, target, len(class_names), ignore)
    scored = ~torch.isnan(dice)
    n = int(scored.sum())
    return {"dice_mean_per_image": float(dice[scored].mean()) if n else None,
            "iou_mean_per_image": float(iou[scored].mean()) if n else None,
            "images": n, "convention": CONVENTION}


def per_image_line(entry: dict) -> str:
    """One line for the terminal and the report."""
    def num(v):
        return "n/a" if v is None else f"{v:.4f}"
    return (f"per-image mean Dice over the classes present in each image {num(entry.get('dice_mean_per_image'))}, "
            f"IoU {num(entry.get('iou_mean_per_image'))} (mean over {entry.get('images', 0)} images)")
