"""The one table of metric names: for each metric key cnnlab writes (summary.json's `metrics`, study.json, and
metrics.csv with a `val_` prefix), the text every report, table and figure shows for it.

Why one table: the run report, the terminal table, the study table, the LaTeX pieces, `cnnlab compare` and the
figures used to spell their own labels, and drifted apart ("mean IoU" in one, "IoU (strict)" in another). They
now look the text up here when they render (never copy it into a constant of their own), so a label changed here
changes everywhere; tests/metrics/test_metric_names.py checks that each of them does.

Two forms of label, because a column head and a row of its own have different room: `label` is short (a column,
an axis, a figure title), `row_label` names the convention in brackets (a report row). LaTeX shows the same
texts, escaped by report/tex.py (they are plain text, so no separate LaTeX spelling can drift). Keys not listed
(e.g. colorization's `psnr_db`) are shown as the key itself, higher taken as better. What differs per task (the
metrics a study compares, the paragraph on how its numbers are computed) is the task's (cnnlab.tasks), written
with these labels.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricName:
    """How one metric is named: short label, row label naming its convention, the convention, its direction."""

    label: str
    row_label: str
    convention: str
    higher_is_better: bool = True


# the order is the order of every metric table (run report, terminal, compare, LaTeX)
METRICS: dict[str, MetricName] = {
    "dice_mean": MetricName(
        "Dice (strict)", "Dice (strict: argmax, whole split, classes in GT)",
        "strict: argmax, global counts over the split, mean over classes in the ground truth"),
    "dice_mean_foreground": MetricName(
        "Dice fg (strict)", "Dice foreground (strict, background excluded)", "strict, background (class 0) excluded"),
    "dice_background": MetricName("Dice bg (strict)", "Dice background (strict)", "strict, class 0 alone"),
    "iou_mean": MetricName("IoU (strict)", "IoU (strict)",
                           "strict: argmax, global counts, mean over classes in the ground truth"),
    "pixel_accuracy": MetricName("pixel acc.", "pixel accuracy", "share of pixels whose argmax class is right"),
    "soft_dice_batch_mean": MetricName(
        "soft Dice/batch (course)", "soft Dice per batch (course convention)",
        "course convention: soft Dice per batch, averaged; not comparable across reports, never the headline"),
    "accuracy": MetricName("accuracy", "accuracy", "share of images whose argmax class is the label"),
    "loss": MetricName("loss", "loss", "the training loss function on the evaluated split", higher_is_better=False),
}

# columns of the per-class tables (summary.json's per_class entries)
PER_CLASS_LABELS = {"dice": "Dice (strict)", "iou": "IoU (strict)", "pixel_share": "share of pixels",
                    "in_ground_truth": "in ground truth"}

# the validation metric drawn beside the loss curves: the first of these a run recorded (metrics.csv `val_KEY`)
CURVE_METRICS = ("dice_mean", "accuracy")

def label(key: str) -> str:
    """The short label of a metric (a column head, an axis); the key itself when it is not in the table."""
    m = METRICS.get(key)
    return m.label if m else key


def row_label(key: str) -> str:
    """The label of a metric's own row in a report, naming its convention; the key itself when unknown."""
    m = METRICS.get(key)
    return m.row_label if m else key


def convention(key: str) -> str:
    """How a metric is computed, in one line ('' when unknown)."""
    m = METRICS.get(key)
    return m.convention if m else ""


EMPTY_CLASS_RULE = ("a class in neither prediction nor ground truth has undefined (null) Dice/IoU and is excluded "
                    "from means")


def metric_conventions(metrics: dict) -> dict:
    """summary.json's `metric_conventions`: how each metric the run reports is computed (and, where it reports
    per-class Dice/IoU means, the empty-class rule), in the words of this table."""
    conv = {k: convention(k) for k in metrics if convention(k)}
    if "dice_mean" in metrics:
        conv["empty_class_rule"] = EMPTY_CLASS_RULE
    return conv


def lower_is_better(key: str) -> bool:
    """True for metrics where less is better (the loss); unknown keys count as higher-is-better."""
    m = METRICS.get(key)
    return m is not None and not m.higher_is_better


def labelled(text: str) -> str:
    """A text with {KEY} placeholders (a task's conventions paragraph), each filled with that metric's label."""
    return text.format(**{k: m.label for k, m in METRICS.items()})
