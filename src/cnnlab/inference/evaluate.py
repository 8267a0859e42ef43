"""`cnnlab evaluate`: re-evaluate a trained run's best model on any split or another data set of its format."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from cnnlab.data.loading import load_run_data, load_split
from cnnlab.engine.steps import evaluate
from cnnlab.errors import CnnlabError, DataError
from cnnlab.inference.predict import TrainedRun, load_run
from cnnlab.losses.class_weights import weights_for
from cnnlab.losses.core import build_loss
from cnnlab.tasks import task_for


def _loss_for(run: TrainedRun, ignore_index: int | None, notes: list[str]):
    """The run's training loss (class weights recomputed from its training split for weighted_ce)."""
    r = run.recipe
    params = {k: v for k, v in r.loss.params.items() if not (r.loss.name == "weighted_ce" and k == "scheme")}
    weights = run.checkpoint.get("class_weights")
    if r.loss.name == "weighted_ce" and weights is None:
        try:
            weights = weights_for(load_run_data(r.data, r.train.seed).train, r.loss.params.get("scheme", "median"))
        except DataError:
            notes.append("training data not found: the loss is unweighted cross-entropy, not weighted_ce")
            return build_loss("cross_entropy", {}, ignore_index)
    return build_loss(r.loss.name, params, ignore_index, torch.as_tensor(weights) if weights is not None else None)


def _free_path(folder: Path, stem: str) -> Path:
    """folder/stem.json, or stem-2.json, stem-3.json ... when taken: evaluations never overwrite."""
    for i in range(1, 10000):
        p = folder / (f"{stem}.json" if i == 1 else f"{stem}-{i}.json")
        try:
            with open(p, "x"):
                return p
        except FileExistsError:
            continue
    raise CnnlabError(f"no free file name for {stem}.json in {folder}")


def evaluate_run(run_dir: str | Path, data_root: str | Path | None = None, split: str | None = None,
                 out: str | Path | None = None, device: str = "auto",
                 batch_size: int | None = None) -> tuple[dict, Path]:
    """Metrics of a run's best model on any split (default: the recipe's test split), or on another data set of
    the same format (data_root replaces data.root); writes evaluate_<split>.json into out (default the run dir)."""
    run = load_run(run_dir, device)
    r = run.recipe
    split = split or r.data.test
    task_for(r.task).require_inference("evaluate")
    cfg = replace(r.data, root=str(data_root)) if data_root is not None else r.data
    cfg = cfg if cfg.size is not None else replace(cfg, size=list(run.input_size))  # no-op at the trained size
    notes = list(run.notes)
    if data_root is None and r.data.val_fraction > 0 and split == r.data.val:
        data = load_run_data(r.data, r.train.seed).val  # the same seeded carve-out as in training
        notes.append(f"'{split}' is carved from '{r.data.train}' (fraction {r.data.val_fraction}) as in training")
    else:
        data = load_split(cfg, split)
    if list(data.class_names) != run.class_names:
        raise DataError(f"{cfg.root}: classes {data.class_names} differ from the run's {run.class_names}",
                        "evaluate on a data set with the same classes")
    task = task_for(data)
    loss_fn = _loss_for(run, task.ignore_index(data), notes)
    metrics, cm = evaluate(run.model, data, run.rt, run.norm, loss_fn, batch_size or r.train.eval_batch_size)
    result = {"run_dir": str(run.run_dir), "checkpoint": "best.pt", "best_epoch": run.best_epoch,
              "data_format": cfg.format, "data_root": str(cfg.root), "split": split, "n_images": len(data),
              "input_size": list(cfg.size),
              "metrics": metrics, "class_names": run.class_names, "device": str(run.rt.device),
              "precision": run.rt.precision, "notes": notes + list(data.notes)}
    result.update(task.test_entries(data, cm, None))  # per-class scores for segmentation
    folder = Path(out) if out is not None else Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = _free_path(folder, f"evaluate_{split.replace('/', '_')}")
    path.write_text(json.dumps(result, indent=2))
    return result, path

