"""The figures of a finished run: loss curves for every run, then the task's own (cnnlab.tasks), which draw what
the engine predicted at the end of training through cnnlab.figures.

Reports never run a model; whatever a figure needs from the model is computed by the engine, here at the end of
training (engine/summary.py).
"""
from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.config import Recipe
from cnnlab.figures.run import loss_curves
from cnnlab.metrics.confusion import ConfusionMatrix
from cnnlab.tasks import task_for


def write_run_figures(run_dir: Path, r: Recipe, split, history: list[dict], pred: torch.Tensor | None = None,
                      cm: ConfusionMatrix | None = None) -> list[Path]:
    """All figures of a finished run into run_dir/figures (pred: the task's prediction on the tested split)."""
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    paths = [loss_curves(history, fig_dir / "loss_curves.png", r.name)]
    return paths + task_for(split).figures(fig_dir, split, pred, cm)
