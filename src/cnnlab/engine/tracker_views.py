"""What a run shows in TensorBoard's HParams and text views, chosen for reading, not dumped (engine/tracking.py).

HParams: a short list of the recipe keys that tell runs apart (HPARAM_KEYS, the model's and loss's own params, and
the augmentations a recipe turns on), not all ~55 flattened keys; booleans as text ('true'), since TensorBoard
shows a Python bool as 1.0000. hp_metric: the run's headline score (strict mean Dice, else accuracy, else the
loss), the column TensorBoard's HParams table sorts by default. The final per-class scores: one markdown table in
the text view instead of one single-point scalar card per class and metric (16 cards for 8 classes).
"""
from __future__ import annotations

import json
import math
from typing import Any

HPARAM_KEYS = ("name", "task", "data.format", "data.size", "data.patch", "data.label_fraction", "model.name",
               "model.init", "model.freeze_encoder_epochs", "loss.name", "optim.name", "optim.lr",
               "optim.weight_decay", "optim.schedule", "optim.warmup_epochs", "train.epochs", "train.batch_size",
               "train.seed", "train.precision", "train.select")
HPARAM_PREFIXES = ("model.params.", "loss.params.", "augment.")
HEADLINE = ("dice_mean", "accuracy", "loss")  # hp_metric: the first of these the run reports


def _text(v: Any) -> Any:
    """A value TensorBoard shows as written: numbers stay numbers; booleans, lists, mappings become text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return v
    return json.dumps(v)


def hparams(flat: dict[str, Any]) -> dict[str, Any]:
    """The HParams view's keys from a flattened recipe: HPARAM_KEYS, then the model's and loss's own params and
    the augmentations that are on (an off augmentation is noise in a table of runs). Unset keys (None) are left
    out."""
    out = {k: _text(flat[k]) for k in HPARAM_KEYS if flat.get(k) is not None}
    for k, v in flat.items():
        if k.startswith(HPARAM_PREFIXES) and v is not None and v not in ("{}", "[]"):
            if k.startswith("augment.") and not v:
                continue
            out[k] = _text(v)
    return out


def hp_metric(summary: dict) -> float | None:
    """The headline score of a finished run, or None."""
    m = summary.get("metrics", {})
    return next((float(m[k]) for k in HEADLINE if isinstance(m.get(k), (int, float)) and math.isfinite(m[k])), None)


def per_class_markdown(summary: dict) -> str | None:
    """summary.json's per-class scores as one markdown table (TensorBoard's text view renders it), or None."""
    for block in ("per_class", "per_class_accuracy"):
        rows = summary.get(block) or {}
        if not rows:
            continue
        cols = list(dict.fromkeys(k for p in rows.values() for k in p))
        cell = lambda v: "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
        lines = [f"| class | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
        esc = lambda t: str(t).replace("|", "\\|")  # a '|' in a class name would split its row
        lines += [f"| {esc(name)} | {' | '.join(cell(p.get(c)) for c in cols)} |" for name, p in rows.items()]
        split = summary.get("evaluated_on", "?")
        return f"Per-class scores on the {split} split (strict, global counts over the split):\n\n" + "\n".join(lines)
    return None
