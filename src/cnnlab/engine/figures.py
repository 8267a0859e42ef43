"""The figures of a finished run that need the model's output: the engine predicts, cnnlab.figures draws.

Reports never run a model; whatever a figure needs from the model is computed here, at the end of training.
"""
from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.config import Recipe
from cnnlab.data.types import ClsData, ColorData, SegData
from cnnlab.engine.steps import predict_logits
from cnnlab.figures.classification import plot_confusion_matrix, plot_misclassified
from cnnlab.figures.run import color_samples, loss_curves, overlay_scores, seg_overlays
from cnnlab.metrics.confusion import ConfusionMatrix


def write_run_figures(run_dir: Path, r: Recipe, model, split, history, rt, norm,
                      pred: torch.Tensor | None = None, cm: ConfusionMatrix | None = None) -> list[Path]:
    """All figures of a finished run into run_dir/figures (pred: argmax label maps of a segmentation split)."""
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    paths = [loss_curves(history, fig_dir / "loss_curves.png", r.name)]
    if isinstance(split, SegData) and pred is not None:
        scores, score_name = overlay_scores(pred, split.masks, len(split.class_names), split.ignore_index)
        paths.append(seg_overlays(split, pred, scores, fig_dir / "overlays.png", score_name=score_name))
    if isinstance(split, ClsData):
        paths += classification_figures(model, split, rt, norm, r.train.eval_batch_size, cm, fig_dir)
    if isinstance(split, ColorData):
        idx = torch.arange(min(4, len(split)))
        out = predict_logits(model, split, rt, norm, r.train.eval_batch_size, idx)
        paths.append(color_samples(split, out, idx, fig_dir / "colorization_samples.png"))
    return paths


def classification_figures(model, split: ClsData, rt, norm, batch_size: int, cm: ConfusionMatrix,
                           fig_dir: Path) -> list[Path]:
    """Confusion matrix and a gallery of the most confident mistakes."""
    probs = predict_logits(model, split, rt, norm, batch_size).softmax(1)
    names = split.class_names
    return [plot_confusion_matrix(cm.mat, names, fig_dir / "confusion_matrix.png"),
            plot_misclassified(split.images, split.labels, probs.argmax(1), names, fig_dir / "misclassified.png",
                               probs=probs)]
