"""What every experiment tracker shares (engine/tracking.py, engine/tracking_wandb.py): the Tracker interface the
run talks to, and the names of what they log, the same in all of them (`train/loss`, `val/dice_mean`, `lr`,
`train/step_loss`, `final/...`)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

STEP_LOSS_TAG = "train/step_loss"  # each optimiser step's training loss, x = the run's step count


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 3}} -> {'train.epochs': 3}; lists and empty mappings become JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple, dict)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def scalar_tag(column: str) -> str:
    """TensorBoard tag of a metrics.csv column: 'train_loss' -> 'train/loss', 'val_dice_mean' -> 'val/dice_mean'
    (TensorBoard groups by the part before '/'); other columns ('lr', 'images_per_s', 'seconds') stay as they are."""
    head, _, rest = column.partition("_")
    return f"{head}/{rest}" if head in ("train", "val") and rest else column


def number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def final_scalars(summary: dict) -> dict[str, float]:
    """The tested split's metrics and per-class scores as flat names: final/dice_mean, final/per_class/dice/<class>
    (segmentation: Dice and IoU), final/per_class/accuracy/<class> (classification)."""
    out = {f"final/{k}": float(v) for k, v in summary.get("metrics", {}).items() if number(v)}
    for block in ("per_class", "per_class_accuracy"):
        for name, scores in (summary.get(block) or {}).items():
            for metric, v in scores.items():
                if number(v) and metric != "images":
                    out[f"final/per_class/{metric}/{name}"] = float(v)
    return out


class Tracker:
    """What the run tells a tracker: each epoch's metrics.csv row, the end, and how it stopped."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def epoch(self, epoch: int, row: dict) -> None:
        raise NotImplementedError

    def steps(self, losses: list[tuple[int, float]]) -> None:
        """The training loss of each optimiser step of an epoch, (global step, loss), told at the epoch's end."""

    def finish(self, run_dir: Path, summary: dict, step: int) -> None:
        raise NotImplementedError

    def close(self, status: str) -> None:
        """status: finished, interrupted or failed."""

    def describe(self) -> str:
        """One line: where the run is logged and the command that shows it."""
        raise NotImplementedError
