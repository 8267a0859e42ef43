"""The end of a run: test the best checkpoint, write summary.json and the figures (rank 0)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from cnnlab.config import Recipe
from cnnlab.data.loading import RunData
from cnnlab.engine.distributed import is_main
from cnnlab.engine.figures import write_run_figures
from cnnlab.engine.rundir import environment, git_hash, read_resumes
from cnnlab.engine.steps import evaluate, predict_logits
from cnnlab.models.classifiers import count_parameters
from cnnlab.tasks import task_for

METRIC_CONVENTIONS = {
    "dice_mean": "strict: argmax predictions, global counts over the split, mean over classes present in the "
                 "ground truth",
    "dice_mean_foreground": "strict, background (class 0) excluded",
    "dice_background": "strict Dice of class 0 alone",
    "soft_dice_batch_mean": "course convention: soft Dice on probabilities per batch (smoothing 1), averaged over "
                            "batches; moves with batch composition, not comparable across reports",
    "empty_class_rule": "a class in neither prediction nor ground truth has undefined (null) Dice/IoU and is "
                        "excluded from means",
}


def write_summary(r: Recipe, rt, data: RunData, core, loss_fn, state, norm, run_dir: Path,
                  on_batch: Callable[[int], None] | None = None) -> dict:
    """Evaluate the best weights on test (else validation); every rank evaluates its shard, rank 0 writes.

    on_batch: told each evaluated batch's size, of the tested split and then of validation (a progress bar)."""
    split_name = r.data.test if data.test is not None else r.data.val
    split = data.test if data.test is not None else data.val
    t0 = time.perf_counter()
    final, cm = evaluate(core, split, rt, norm, loss_fn, r.train.eval_batch_size, on_batch)
    eval_s = time.perf_counter() - t0
    val, _ = evaluate(core, data.val, rt, norm, loss_fn, r.train.eval_batch_size, on_batch)
    summary = {
        "name": r.name, "task": r.task, "evaluated_on": split_name, "n_images": len(split),
        "metrics": final, "validation": val, "best_epoch": state.best_epoch, "epochs_run": state.epoch,
        "train_seconds": round(state.train_seconds, 2),
        "train_images_per_s": state.train_images / max(state.train_seconds, 1e-9),
        "eval_images_per_s": len(split) / max(eval_s, 1e-9),
        "device": str(rt.device), "precision": rt.precision, "channels_last": rt.channels_last,
        "git": git_hash(), "env": environment(), "class_names": data.class_names, "notes": data.notes,
        "metric_conventions": METRIC_CONVENTIONS,
        "resumes": read_resumes(run_dir),  # each resume: time, from_epoch, epochs, overrides (history.yaml)
    }
    trainable, total = count_parameters(core)
    summary["parameters"] = {"trainable": trainable, "total": total}
    task = task_for(split)
    bs = r.train.eval_batch_size
    summary.update(task.fit_entries(val, lambda: evaluate(core, data.train, rt, norm, loss_fn, bs)[0]))
    if not is_main():
        return summary
    pred = task.prediction(split, lambda idx: predict_logits(core, split, rt, norm, bs, idx))
    summary.update(task.test_entries(split, cm, pred))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    write_run_figures(run_dir, r, split, state.history, pred, cm)
    return summary
