"""`cnnlab evaluate`: re-evaluate a trained run's best model on any split or another data set of its format.

Binary segmentation also gets the foreground's Dice and IoU per image, averaged over the images, beside the strict
global ones (counts pooled over the split): polyp papers report the per-image mean, and the two differ (a small
polyp missed costs a whole image's Dice per image but few pixels globally)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from cnnlab.data.loading import load_run_data, load_split
from cnnlab.engine.progress import Bar
from cnnlab.engine.steps import evaluate, predict_logits
from cnnlab.errors import CnnlabError, DataError
from cnnlab.inference.predict import TrainedRun, bars, load_run
from cnnlab.losses.class_weights import weights_for
from cnnlab.losses.core import build_loss
from cnnlab.metrics.boundary import dice_per_image
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


PER_IMAGE = ("per image: each image's foreground Dice 2|P&T|/(|P|+|T|) and IoU |P&T|/|P or T| (argmax masks at the "
             "trained size), averaged over the images; an image whose ground truth and prediction are both empty "
             "scores 1 and counts (as in the per-image evaluation of polyp papers, e.g. PraNet and Polyp-PVT, whose "
             "smoothed Dice gives such an image 1); an image with empty ground truth but predicted foreground scores "
             "0")
GLOBAL = "global (strict): the pixel counts of all images pooled, then one Dice and one IoU for the split"


def evaluate_run(run_dir: str | Path, data_root: str | Path | None = None, split: str | None = None,
                 out: str | Path | None = None, device: str = "auto", batch_size: int | None = None,
                 progress: bool = True, console: Console | None = None) -> tuple[dict, Path]:
    """Metrics of a run's best model on any split (default: the recipe's test split), or on another data set of
    the same format (data_root replaces data.root); writes evaluate_<split>.json into out (default the run dir).
    progress: a bar (or plain lines) on `console` (default: stdout) while the images are evaluated."""
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
    bs = batch_size or r.train.eval_batch_size
    shown = bars(progress, console)
    with shown.bar(f"evaluating '{split}'", len(data)) as bar:
        metrics, cm = evaluate(run.model, data, run.rt, run.norm, loss_fn, bs, bar.advance)
    pred = None
    if task.dense and len(data.class_names) == 2:  # binary segmentation: per-image scores need the masks
        with shown.bar(f"per-image Dice on '{split}'", len(data)) as bar:
            pred = _label_maps(run, data, bs, bar)
    result = {"run_dir": str(run.run_dir), "checkpoint": "best.pt", "best_epoch": run.best_epoch,
              "data_format": cfg.format, "data_root": str(cfg.root), "split": split, "n_images": len(data),
              "input_size": list(cfg.size),
              "metrics": metrics, "class_names": run.class_names, "device": str(run.rt.device),
              "precision": run.rt.precision, "notes": notes + list(data.notes)}
    result.update(task.test_entries(data, cm, pred))  # per-class scores; binary: per-image and boundary scores
    if pred is not None:
        result["foreground"] = foreground_scores(pred, data.masks, data.ignore_index, result["per_class"],
                                                 data.class_names[1])
    folder = Path(out) if out is not None else Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = _free_path(folder, f"evaluate_{split.replace('/', '_')}")
    path.write_text(json.dumps(result, indent=2))
    return result, path


def _label_maps(run: TrainedRun, data, batch_size: int, bar: Bar) -> torch.Tensor:
    """Argmax label maps (N x H x W uint8) of a split, a batch at a time (never the whole split's logits)."""
    maps = []
    for idx in torch.arange(len(data)).split(batch_size):
        maps.append(predict_logits(run.model, data, run.rt, run.norm, batch_size, idx).argmax(1).to(torch.uint8))
        bar.advance(len(idx))
    return torch.cat(maps)


def foreground_scores(pred: torch.Tensor, masks: torch.Tensor, ignore_index: int | None, per_class: dict,
                      name: str) -> dict:
    """The foreground class's Dice and IoU, global (the strict per-class scores) and as means over images.

    Per image the Dice is the training summary's own (cnnlab.metrics.boundary.dice_per_image, the one behind
    summary.json's per_image_dice_mean); its IoU follows from it exactly, J = D / (2 - D), both-empty included."""
    valid = None if ignore_index is None else masks != ignore_index
    truth = masks == 1
    dice = dice_per_image(pred == 1, truth, valid)
    iou = dice / (2 - dice)
    truth_n = (truth if valid is None else truth & valid).flatten(1).sum(1)
    pred_n = ((pred == 1) if valid is None else (pred == 1) & valid).flatten(1).sum(1)
    return {"class": name, "dice_global": per_class[name]["dice"], "dice_per_image_mean": float(dice.mean()),
            "iou_global": per_class[name]["iou"], "iou_per_image_mean": float(iou.mean()),
            "images": len(dice), "images_empty_truth": int((truth_n == 0).sum()),
            "images_empty_truth_and_prediction": int(((truth_n == 0) & (pred_n == 0)).sum()),
            "conventions": {"global": GLOBAL, "per_image": PER_IMAGE}}
