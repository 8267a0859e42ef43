"""Figures every run writes: loss curves (train and validation in one figure) and task-specific samples."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from cnnlab.data.types import ColorData, SegData
from cnnlab.figures.io import save_figure
from cnnlab.figures.palette import class_colors, display_image, overlay
from cnnlab.figures.text import literal
from cnnlab.metrics.boundary import dice_per_image
from cnnlab.metrics.confusion import ConfusionMatrix
from cnnlab.metrics.names import CURVE_METRICS, label


def loss_curves(history: list[dict], path: Path, title: str = "") -> Path:
    """Training and validation loss per epoch in one figure (plus the validation metric on a second axis)."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss", color="tab:blue")
    ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation loss", color="tab:orange")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.2, 1.4 ... on a short run
    ax.set_ylabel("loss")
    metric = next((m for m in CURVE_METRICS if history and history[0].get(f"val_{m}") is not None), None)
    if metric:
        key, name = f"val_{metric}", f"validation {label(metric)}"
        ax2 = ax.twinx()
        ax2.plot(epochs, [h[key] if h[key] is not None else np.nan for h in history], "^--", color="tab:green",
                 label=name)
        ax2.set_ylabel(name)
        ax2.set_ylim(0, 1)
    # one legend for both axes, below them: inside, the metric's axis drew its curve over the loss legend
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    ax.set_title(literal(title) if title else "loss curves")
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, path, dpi=110, tight=False)


def per_image_dice(pred: torch.Tensor, target: torch.Tensor, n: int, ignore: int | None) -> torch.Tensor:
    """Strict Dice per image: mean over the classes present in that image's ground truth (NaN: no valid pixel)."""
    out = []
    for p, t in zip(pred, target):
        cm = ConfusionMatrix(n, ignore)
        cm.update(p, t)
        d = cm.dice()[cm.present()]
        out.append(float(d.mean()) if d.numel() else float("nan"))
    return torch.tensor(out)


def overlay_scores(pred: torch.Tensor, target: torch.Tensor, n: int, ignore: int | None
                   ) -> tuple[torch.Tensor, str]:
    """Per-image Dice the report states, and its name for the figure titles.

    Binary tasks: the foreground class's Dice per image (the report's 'per-image Dice'; background would flatter
    every image, e.g. 0.37 where the foreground scored 0.16). Multi-class: the strict mean over the classes present
    in that image's ground truth, background included, as the headline; the title says so.
    """
    if n == 2:
        valid = None if ignore is None else target != ignore
        return dice_per_image(pred == 1, target == 1, valid).float(), "foreground Dice"
    return per_image_dice(pred, target, n, ignore), "mean Dice, classes in this image"


def pick_worst_and_best(scores: torch.Tensor, k: int) -> tuple[list[int], list[int]]:
    """The k lowest and k highest scored images (worst first, best last); unscored (NaN) images are neither."""
    scored = torch.nonzero(~torch.isnan(scores)).flatten()
    order = scored[torch.argsort(scores[scored], stable=True)].tolist()
    worst = order[:k]
    best = [i for i in order[::-1][:k] if i not in worst]
    return worst, best


def seg_overlays(split: SegData, pred: torch.Tensor, scores: torch.Tensor, path: Path, k: int = 3,
                 score_name: str = "Dice") -> Path:
    """Worst and best k images by the stated per-image score: input, ground truth overlay, prediction overlay."""
    worst, best = pick_worst_and_best(scores, k)
    picks = worst + best[::-1]
    if not picks:  # no image has a valid pixel: nothing honest to rank
        picks = list(range(min(k, len(split))))
    n = len(split.class_names)
    fig = Figure(figsize=(9, 2.6 * len(picks)))
    axes = fig.subplots(len(picks), 3, squeeze=False)
    for row, i in enumerate(picks):
        img = split.images[i]
        axes[row, 0].imshow(display_image(img))
        axes[row, 1].imshow(overlay(img, split.masks[i], n, ignore_index=split.ignore_index))
        axes[row, 2].imshow(overlay(img, _scored_only(pred[i], split.masks[i], split.ignore_index), n,
                                    ignore_index=split.ignore_index))
        rank = "worst" if i in worst else "best" if i in best else "unscored"
        axes[row, 0].set_title(f"{literal(split.names[i])} ({rank})")
        axes[row, 1].set_title("ground truth")
        axes[row, 2].set_title(f"prediction\n{score_name}: {scores[i]:.2f}", fontsize=9)  # two lines: never clipped
        for a in axes[row]:
            a.axis("off")
    cols = class_colors(n) / 255
    handles = [Patch(facecolor="white", edgecolor="black", label=f"{literal(split.class_names[0])} (untinted)")]
    handles += [Patch(color=cols[c], label=literal(name)) for c, name in enumerate(split.class_names) if c > 0]
    if split.ignore_index is not None and any(bool((split.masks[i] == split.ignore_index).any()) for i in picks):
        handles.append(Patch(color=(0.25, 0.25, 0.25), label="darkened: not scored (ignored, e.g. outside the "
                                                              "field of view)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, path, dpi=90, tight=False)


def _scored_only(pred: torch.Tensor, truth: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """The prediction with the ground truth's ignored pixels marked ignored too: what the model says there is not
    scored, so the panel must not paint it as if it were (DRIVE's outside-the-retina ring looked like vessel)."""
    if ignore_index is None:
        return pred
    return torch.where(truth == ignore_index, torch.full_like(pred, ignore_index), pred)


def to_rgb(split: ColorData, out: torch.Tensor, i: int, truth: bool) -> np.ndarray:
    """H x W x 3 uint8 colour image from a prediction (or the ground truth) of sample i."""
    if split.space == "rgb":
        rgb = split.targets[i].float() / 255 if truth else out.clamp(0, 1)
        return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    from skimage.color import lab2rgb

    light = split.images[i, 0].float().numpy() * 100 / 255
    ab = (split.targets[i].float() - 128).numpy() if truth else out.numpy() * 128
    lab = np.concatenate([light[None], ab], 0).transpose(1, 2, 0)
    return (lab2rgb(lab) * 255).round().astype(np.uint8)


def color_samples(split: ColorData, out: torch.Tensor, idx: torch.Tensor, path: Path) -> Path:
    """Grey input, predicted colour and true colour for a few validation images."""
    fig = Figure(figsize=(9, 2.6 * len(idx)))
    axes = fig.subplots(len(idx), 3, squeeze=False)
    for row, i in enumerate(idx.tolist()):
        axes[row, 0].imshow(split.images[i, 0].numpy(), cmap="gray", vmin=0, vmax=255)
        axes[row, 1].imshow(to_rgb(split, out[row], i, truth=False))
        axes[row, 2].imshow(to_rgb(split, out[row], i, truth=True))
        for a, title in zip(axes[row], (f"grey input {literal(split.names[i])}", "prediction", "truth")):
            a.set_title(title)
            a.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90, tight=False)
