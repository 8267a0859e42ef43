"""The end of a run: test the best checkpoint, write summary.json and the figures (rank 0)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from cnnlab.config import Recipe
from cnnlab.data.loading import RunData
from cnnlab.data.types import ClsData, SegData
from cnnlab.engine.distributed import is_main
from cnnlab.engine.figures import write_run_figures
from cnnlab.engine.rundir import environment, git_hash, read_resumes
from cnnlab.engine.steps import evaluate, predict_logits
from cnnlab.figures.classification import fit_note
from cnnlab.metrics.boundary import binary_summary
from cnnlab.models.classifiers import count_parameters

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


def write_summary(r: Recipe, rt, data: RunData, core, loss_fn, state, norm, run_dir: Path) -> dict:
    """Evaluate the best weights on test (else validation); every rank evaluates its shard, rank 0 writes."""
    split_name = r.data.test if data.test is not None else r.data.val
    split = data.test if data.test is not None else data.val
    t0 = time.perf_counter()
    final, cm = evaluate(core, split, rt, norm, loss_fn, r.train.eval_batch_size)
    eval_s = time.perf_counter() - t0
    val, _ = evaluate(core, data.val, rt, norm, loss_fn, r.train.eval_batch_size)
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
    if isinstance(split, ClsData):  # the over/under-fitting note needs the training accuracy
        train_m, _ = evaluate(core, data.train, rt, norm, loss_fn, r.train.eval_batch_size)
        summary["train_accuracy"] = train_m["accuracy"]
        summary["fit_note"] = fit_note(train_m["accuracy"], val["accuracy"])
    if not is_main():
        return summary
    pred = None
    if isinstance(split, SegData):
        summary["per_class"] = cm.summary(data.class_names)["per_class"]
        pred = predict_logits(core, split, rt, norm, r.train.eval_batch_size).argmax(1).to(torch.uint8)
        if len(data.class_names) == 2:
            summary["binary"] = binary_summary(pred, split.masks, split.ignore_index)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    write_run_figures(run_dir, r, core, split, state.history, rt, norm, pred, cm)
    return summary
