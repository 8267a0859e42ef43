"""The end of a run: test the best checkpoint, write summary.json and the figures (rank 0)."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch

from cnnlab.data.types import Split
from cnnlab.engine.context import RunContext
from cnnlab.engine.distributed import is_main, world
from cnnlab.engine.figures import write_run_figures
from cnnlab.engine.fit import TrainState
from cnnlab.engine.flips import flip_names
from cnnlab.engine.run_files import read_resumes, write_summary_file
from cnnlab.engine.rundir import environment, git_hash
from cnnlab.engine.steps import Scorer, evaluate, iter_logits
from cnnlab.logs import get_logger
from cnnlab.metrics.names import metric_conventions
from cnnlab.metrics.per_class import vanished_warnings, without_class_iou
from cnnlab.models.classifiers import count_parameters

log = get_logger(__name__)
TTA_NOTE = ("test-time augmentation (train.tta): the test and validation scores here average the model over each "
            "image and its flips ({flips}); the validation scores of metrics.csv, which picked the best epoch, are "
            "one pass")
AUTO_MIN_GAIN = 0.001  # train.tta auto keeps the flips where they beat one pass on validation by more than this:
#                        four passes for less is not worth it, and 4 validation images cannot resolve it (two
#                        ISBI runs whose flips won validation by 0.0001 lost 0.0004 and 0.0017 at the test)
SAME_SPLIT_NOTE = ("train.tta auto chose {chose} on the validation split, the split these scores are from (no test "
                   "split): the choice was made on the scored images")


def choose_flips(scorer: Scorer, val: Split, select: str = "auto", on_batch: Callable[[int], None] | None = None
                 ) -> tuple[Scorer, dict, dict]:
    """train.tta auto: scorer (with the flips to try) or the same in one pass, whichever scores validation higher by
    the score that picked the best epoch (select: train.select), with the choice for summary.json and the chosen
    scorer's validation metrics.

    The flips gained on every DRIVE run, lost on every ISBI run and ranged from -0.0135 to +0.017 on the course
    frames (docs/results.md), so no fixed rule fits all sets. A gain of AUTO_MIN_GAIN or less keeps one pass, a
    quarter of the cost."""
    task = scorer.task
    one = dataclasses.replace(scorer, flips=())
    val_one, val_flips = evaluate(one, val, on_batch)[0], evaluate(scorer, val, on_batch)[0]
    score_one, score_flips = task.selection_score(val_one, select), task.selection_score(val_flips, select)
    keep = score_flips > score_one + AUTO_MIN_GAIN
    choice = {"rule": f"train.tta auto: the flips where they raise the validation score that picks best.pt by more "
                      f"than {AUTO_MIN_GAIN}",
              "score": "iou_mean" if select == "miou" else task.headline,
              "one_pass": score_one, "flips": score_flips, "flips_tried": flip_names(scorer.flips),
              "chose": "flips" if keep else "one pass"}
    log.info(choice_words(choice))
    return (scorer, choice, val_flips) if keep else (one, choice, val_one)


def choice_words(c: dict) -> str:
    """train.tta auto's choice in one line (terminal, summary.json notes)."""
    return (f"train.tta auto: validation {c['score']} {c['one_pass']:.4f} in one pass, {c['flips']:.4f} averaged "
            f"over the flips ({', '.join(c['flips_tried'])}): the final scores "
            f"{'average the flips' if c['chose'] == 'flips' else 'are one pass'}")


def write_summary(ctx: RunContext, state: TrainState, on_batch: Callable[[int], None] | None = None) -> dict:
    """Evaluate ctx.core (the best weights) on test (else validation); every rank evaluates its shard, rank 0
    writes summary.json and the figures.

    on_batch: told each evaluated batch's size, of the tested split and then of validation (a progress bar);
    train.tta auto first scores validation in one pass and with the flips (choose_flips). Without a test split
    validation is tested and summary.json says so (`test_split: false`): the report then shows one column, not
    the same numbers twice."""
    r, data, core, task, scorer = ctx.recipe, ctx.data, ctx.core, ctx.task, ctx.scorer(final=True)
    choice = chosen_val = None
    if r.train.tta == "auto" and scorer.flips:
        scorer, choice, chosen_val = choose_flips(scorer, data.val, r.train.select, on_batch)
    has_test = data.test is not None
    split_name = r.data.test if has_test else r.data.val
    split = data.test if has_test else data.val
    keep = task.keeper(split)  # the task's prediction, kept from the test's own batches: one pass over the split
    t0 = time.perf_counter()
    window = scorer.window  # patch-trained runs: whole images by sliding windows
    final, cm = evaluate(scorer, split, on_batch, on_logits=keep if world() == 1 else None)
    eval_s = time.perf_counter() - t0
    val = final if not has_test else chosen_val if chosen_val is not None else evaluate(scorer, data.val, on_batch)[0]
    final, val = without_class_iou(final), without_class_iou(val)  # per-class IoU: in per_class below
    summary = {
        "name": r.name, "task": r.task, "evaluated_on": split_name, "test_split": has_test, "n_images": len(split),
        "metrics": final, "validation": val, "best_epoch": state.best_epoch, "epochs_run": state.epoch,
        "train_seconds": round(state.train_seconds, 2),
        "train_images_per_s": state.train_images / max(state.train_seconds, 1e-9),
        "eval_images_per_s": len(split) / max(eval_s, 1e-9),
        "device": str(ctx.rt.device), "precision": ctx.rt.precision, "channels_last": ctx.rt.channels_last,
        "git": git_hash(), "env": environment(), "class_names": data.class_names, "notes": data.notes,
        "metric_conventions": metric_conventions(final),
        "resumes": read_resumes(ctx.run_dir),  # each resume: time, from_epoch, epochs, overrides (history.yaml)
        "sliding_window": window.describe() if window is not None else None,  # how whole images were scored
        "test_time_flips": flip_names(scorer.flips),  # train.tta: the final scores averaged over these flips
        "tta_choice": choice,  # train.tta auto: validation one pass against flips, and which the scores use
    }
    if scorer.flips:
        summary["notes"] = [*summary["notes"], TTA_NOTE.format(flips=", ".join(summary["test_time_flips"]))]
    if choice is not None:
        summary["notes"] = [*summary["notes"], choice_words(choice)]
        summary["notes"] += [] if has_test else [SAME_SPLIT_NOTE.format(chose=choice["chose"])]
    trainable, total = count_parameters(core)
    summary["parameters"] = {"trainable": trainable, "total": total}
    summary.update(task.fit_entries(val, lambda: evaluate(scorer, data.train)[0]))
    if not is_main():
        return summary
    if world() > 1:  # each process evaluated its shard: rank 0 predicts the kept samples itself
        for logits in iter_logits(scorer, split, torch.arange(keep.n)):
            keep.keep(logits)  # patch-trained: through the same windows as the test
    pred = keep.prediction()
    summary.update(task.test_entries(split, cm, pred))
    summary["warnings"] = vanished_warnings(summary, split_name, ctx.run_dir)  # a class never predicted: one line each
    for line in summary["warnings"]:
        log.info(line)
    write_summary_file(ctx.run_dir, summary)
    write_run_figures(ctx.run_dir, r, task, split, state.history, pred, cm)
    return summary
