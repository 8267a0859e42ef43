"""Classification figures (confusion matrix, misclassified gallery) and the fit note.

Figures are built with matplotlib's object API (Figure + Agg canvas), never pyplot: no global state,
no display needed, nothing left open after saving.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from cnnlab.errors import CnnlabError
from cnnlab.figures.io import save_figure
from cnnlab.figures.text import literal


def plot_confusion_matrix(cm: torch.Tensor | np.ndarray, class_names: Sequence[str], path: str | Path,
                          title: str = "confusion matrix") -> Path:
    """Colours = share of each true class (row-normalised), numbers = counts; names on both axes."""
    counts = np.asarray(cm, dtype=np.int64)
    k = counts.shape[0]
    if counts.shape != (k, k) or len(class_names) != k:
        raise CnnlabError(f"confusion matrix is {counts.shape} but there are {len(class_names)} class names")
    class_names = [literal(n) for n in class_names]
    rows = counts.sum(1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    side = min(max(4.0, 0.5 * k + 2), 14.0)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.add_subplot()
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    font = 9 if k <= 12 else 7 if k <= 25 else 5
    ticks = np.arange(k) if k <= 50 else np.arange(0, k, max(1, k // 25))
    ax.set_xticks(ticks, [class_names[i] for i in ticks], rotation=90 if k > 10 else 45,
                  ha="right" if k <= 10 else "center",
                  fontsize=font)
    ax.set_yticks(ticks, [class_names[i] for i in ticks], fontsize=font)
    if k <= 25:  # counts stay legible up to about 25 classes
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=font,
                            color="white" if shares[i, j] > 0.5 else "black")
    acc = np.trace(counts) / max(counts.sum(), 1)
    ax.set(xlabel="predicted class", ylabel="true class", title=f"{literal(title)} (accuracy {acc:.3f})")
    return save_figure(fig, path)


def _as_display(img: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """C x H x W uint8 -> an array imshow understands, and a grey colour map for one channel."""
    arr = img.detach().cpu().numpy()
    if arr.shape[0] == 1:
        return arr[0], "gray"
    return np.transpose(arr[:3], (1, 2, 0)), None


def select_misclassified(labels: torch.Tensor, preds: torch.Tensor, probs: torch.Tensor | None = None,
                         max_items: int = 24) -> torch.Tensor:
    """Indices of wrong predictions: the most confident mistakes first when probs are given, else in order."""
    labels, preds = labels.cpu(), preds.cpu()
    wrong = torch.nonzero(preds != labels).flatten()
    if probs is not None and wrong.numel():
        confidence = probs.cpu()[wrong, preds[wrong]]
        wrong = wrong[torch.argsort(confidence, descending=True, stable=True)]
    return wrong[:max_items]


def plot_misclassified(images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, class_names: Sequence[str],
                       path: str | Path, probs: torch.Tensor | None = None, max_items: int = 24) -> Path:
    """Wrongly classified images titled 'true / predicted'; most confident mistakes first when probs are given."""
    wrong = select_misclassified(labels, preds, probs, max_items)
    class_names = [literal(n) for n in class_names]
    n = int(wrong.numel())
    cols = min(8, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(1.6 * cols, 1.9 * rows))
    if n == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        ax.axis("off")
        return save_figure(fig, path)
    for slot, i in enumerate(wrong.tolist()):
        ax = fig.add_subplot(rows, cols, slot + 1)
        arr, cmap = _as_display(images[i])
        ax.imshow(arr, cmap=cmap, vmin=0, vmax=255)
        p = f" ({float(probs[i, preds[i]]):.2f})" if probs is not None else ""
        ax.set_title(f"true: {class_names[int(labels[i])]}\npred: {class_names[int(preds[i])]}{p}", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"misclassified: {int((preds.cpu() != labels.cpu()).sum())} of {len(labels)}", fontsize=9)
    return save_figure(fig, path)


def fit_note(train_acc: float, val_acc: float, gap_tolerance: float = 0.03, overfit_gap: float = 0.10,
             low_accuracy: float = 0.80) -> str:
    """One sentence on over/under-fitting from the train - validation accuracy gap (accuracies in [0, 1])."""
    for name, v in (("train accuracy", train_acc), ("validation accuracy", val_acc)):
        if not 0 <= v <= 1:
            raise CnnlabError(f"fit_note: {name} must be in [0, 1], got {v!r}")
    gap = train_acc - val_acc
    nums = f"train {train_acc:.1%} vs validation {val_acc:.1%}, gap {100 * gap:+.1f} points"
    if gap > overfit_gap:
        return (f"Overfitting: {nums}; the model memorises the training set. Try more data or augmentation, "
                "weight decay or dropout, a smaller model, or early stopping.")
    if gap > gap_tolerance:
        return f"Mild overfitting: {nums}; regularisation or early stopping may help a little."
    if train_acc < low_accuracy:
        return (f"Underfitting: {nums}; even the training accuracy is low. Try a larger model, more epochs, "
                "a better learning rate, or less regularisation.")
    if gap < -gap_tolerance:
        return (f"Validation above training: {nums}; training accuracy is measured under dropout/augmentation, "
                "or the validation split is easier or small.")
    return f"Good fit: {nums}; training and validation agree."
