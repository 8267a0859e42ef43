"""Per-class numbers that keep a vanished class from going unseen (issue 39): each class's IoU in every
validation's metrics, its share of the ground-truth pixels, and one warning line for every class that is in the
ground truth but was never predicted.

Why: with a few large classes (road, sky) carrying the mean, a model that never predicts a small class (poles,
signs, people) still shows a healthy mean Dice or IoU; the class's own IoU, named on the epoch line and warned
about at the end of a run and by `cnnlab evaluate`, says so the first epoch it happens.
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path

from cnnlab.metrics.confusion import ConfusionMatrix

IOU_PREFIX = "iou/"  # metrics key of a class's IoU: iou/<class> (metrics.csv and events: val_iou/<class>)


def class_iou_metrics(cm: ConfusionMatrix, class_names: list[str]) -> dict[str, float | None]:
    """{'iou/<class>': strict IoU} for every class (None where the class is in neither prediction nor truth)."""
    return {f"{IOU_PREFIX}{n}": None if math.isnan(v) else float(v) for n, v in zip(class_names, cm.iou().tolist())}


def without_class_iou(metrics: dict) -> dict:
    """A split's metrics without the per-class IoU keys: summary.json and evaluate keep those in `per_class`, so
    its `metrics` (tables, study, compare) hold the split's headline numbers only."""
    return {k: v for k, v in metrics.items() if not k.startswith(IOU_PREFIX)}


def pixel_shares(cm: ConfusionMatrix) -> list[float]:
    """Each class's share of the counted ground-truth pixels (rows of the confusion matrix)."""
    rows = cm.mat.sum(1).double()
    total = float(rows.sum())
    return (rows / total).tolist() if total else [0.0] * len(rows)


def never_predicted(cm: ConfusionMatrix, class_names: list[str]) -> list[str]:
    """Classes with ground-truth pixels on the split that the model predicted nowhere."""
    missing = cm.present() & (cm.mat.sum(0) == 0)
    return [n for n, m in zip(class_names, missing.tolist()) if m]


def vanished_warning(name: str, share: float, split: str, run_dir: str | Path) -> str:
    """The one line that says a class is in the ground truth but never predicted, with a command that trains the
    run's own recipe again with class weights (a new run dir; the recipe file is the run's config.yaml)."""
    recipe = shlex.quote(str(Path(run_dir) / "config.yaml"))
    return (f"warning: class '{name}' is in the ground truth of '{split}' ({share:.2%} of its pixels) but never "
            f"predicted (IoU 0.00); class weights bring rare classes back: cnnlab train {recipe} --set "
            "loss.name=dice_ce --set loss.params.scheme=enet_log (docs/results.md, rare classes)")


def vanished_warnings(entries: dict, split: str, run_dir: str | Path) -> list[str]:
    """One warning line per class in the ground truth of `split` but never predicted, from a summary's (or an
    evaluation's) `never_predicted` and `per_class` entries; none where they are absent (classification)."""
    per_class = entries.get("per_class") or {}
    return [vanished_warning(n, per_class.get(n, {}).get("pixel_share", 0.0), split, run_dir)
            for n in entries.get("never_predicted") or []]


def worst_class(row: dict, prefix: str = f"val_{IOU_PREFIX}") -> tuple[str, float] | None:
    """The class with the lowest IoU in a metrics row (keys `prefix<class>`), None when the row has none."""
    scores = [(k[len(prefix):], v) for k, v in row.items() if k.startswith(prefix) and v is not None]
    return min(scores, key=lambda kv: kv[1]) if scores else None
