"""The figures of a finished run: loss curves for every run, then the task's own (cnnlab.tasks), which draw what
the engine predicted at the end of training through cnnlab.figures.

Reports never run a model; whatever a figure needs from the model is computed by the engine, here at the end of
training (engine/summary.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from cnnlab.config import Recipe
from cnnlab.engine.run_files import FIGURES, read_summary
from cnnlab.figures.per_class import per_class_dice_bars, per_class_iou_bars
from cnnlab.figures.run import loss_curves
from cnnlab.logs import get_logger
from cnnlab.metrics.confusion import ConfusionMatrix
from cnnlab.tasks import Task

log = get_logger(__name__)


def write_run_figures(run_dir: Path, r: Recipe, task: Task, split, history: list[dict],
                      pred: torch.Tensor | None = None, cm: ConfusionMatrix | None = None) -> list[Path]:
    """All figures of a finished run into run_dir/figures (pred: the run's task's prediction on the tested split).

    A figure that cannot be drawn is a one-line warning, never an error: the run has trained and tested, its
    summary.json is written, and a failed figure must not turn it into a failed run that --resume repeats."""
    fig_dir = run_dir / FIGURES
    fig_dir.mkdir(exist_ok=True)
    paths = _drawn("loss curves", lambda: [loss_curves(history, fig_dir / "loss_curves.png", r.name)])
    paths += _drawn("per-class charts", lambda: _per_class_charts(run_dir, fig_dir))
    return paths + _drawn("task figures", lambda: task.figures(fig_dir, split, pred, cm))


def _per_class_charts(run_dir: Path, fig_dir: Path) -> list[Path]:
    """Per-class Dice (and IoU beside the pixel shares) from the summary.json just written: drawn here, before the
    trackers get the figures (they were drawn by the report, after TensorBoard and MLflow had closed)."""
    s = read_summary(run_dir) or {}
    if not s.get("per_class"):
        return []
    split = s.get("evaluated_on", "?")
    out = [per_class_dice_bars(s["per_class"], fig_dir / "per_class_dice.png", f"strict Dice per class, {split} split")]
    if any("pixel_share" in p for p in s["per_class"].values()):
        out.append(per_class_iou_bars(s["per_class"], fig_dir / "per_class_iou.png",
                                      f"strict IoU per class, {split} split"))
    return out


def _drawn(what: str, draw: Callable[[], list[Path]]) -> list[Path]:
    """draw(), or no figures and one warning line when drawing fails (a name matplotlib cannot lay out, a
    missing font, a full disk)."""
    try:
        return draw()
    except Exception as e:  # noqa: BLE001 (no figure is worth a finished run)
        why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        log.warning(f"warning: the {what} were not drawn ({why}); the run's results and report are complete")
        return []
