"""The per-class charts of a run, drawn at the end of training (engine/figures.py) so trackers get them, and again
by the reports for runs saved before: strict Dice per class, and each class's strict IoU beside its share of the
ground-truth pixels.

Why IoU and share beside each other: a class at IoU 0 that covers 0.3% of the pixels is the case the mean hides
(issue 39); the share on the same row says at a glance whether the low bars are the rare classes.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from cnnlab.figures.io import save_figure
from cnnlab.figures.palette import class_colors
from cnnlab.figures.text import literal
from cnnlab.metrics.names import PER_CLASS_LABELS

DPI = 100


def per_class_iou_bars(per_class: dict, path: Path, title: str = "strict IoU per class") -> Path:
    """Two panels sharing the class rows: IoU (left, 0-1, classes never predicted marked) and the class's share of
    the ground-truth pixels (right, log scale); per_class: summary.json's entries (iou, pixel_share)."""
    names = list(per_class)
    cols = class_colors(len(names)) / 255
    fig = Figure(figsize=(8.0, max(2.5, 0.38 * len(names) + 1.2)))
    ax, bx = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    for i, name in enumerate(names):
        p = per_class[name]
        iou, share = p.get("iou"), p.get("pixel_share")
        if iou is None:
            ax.text(0.01, i, "n/a" if p.get("in_ground_truth") else "not in GT", va="center", fontsize=8)
        else:
            ax.barh(i, iou, 0.8, color=cols[i], edgecolor="black", linewidth=0.6)
            ax.text(iou + 0.01, i, f"{iou:.2f}", va="center", fontsize=8,
                    color="red" if iou == 0 and p.get("in_ground_truth") else "black")
        if share:
            bx.barh(i, share * 100, 0.8, color=cols[i], edgecolor="black", linewidth=0.6)
            bx.text(share * 100, i, f" {share:.2%}", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), [literal(n) for n in names])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.1), xlabel=PER_CLASS_LABELS["iou"], title=title)
    bx.set_xscale("log")
    bx.set(xlabel=f"{PER_CLASS_LABELS['pixel_share']} (%, log scale)", title="ground-truth pixels")
    for a in (ax, bx):
        a.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)


def per_class_dice_bars(per_class: dict, path: Path, title: str = "strict Dice per class") -> Path:
    """One bar per class in its palette colour; classes absent from the ground truth are marked 'not in GT'."""
    names = list(per_class)
    cols = class_colors(len(names)) / 255
    fig = Figure(figsize=(max(4.5, 0.7 * len(names) + 1.5), 3.8))
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        d = per_class[name].get("dice")
        if d is None:
            ax.text(i, 0.02, "n/a" if per_class[name].get("in_ground_truth") else "not in GT", rotation=90,
                    ha="center", va="bottom", fontsize=8)
            continue
        ax.bar(i, d, 0.8, color=cols[i], edgecolor="black", linewidth=0.6)
        ax.text(i, d + 0.01, f"{d:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), [literal(n) for n in names], rotation=30 if len(names) > 4 else 0,
                  ha="right" if len(names) > 4 else "center")
    ax.set(xlabel="class", ylabel=PER_CLASS_LABELS["dice"], ylim=(0, 1.08), title=title)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, dpi=DPI)
