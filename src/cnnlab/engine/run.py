"""A whole run: set up, fit with checkpoints every epoch, pick the best, test it, write the run dir."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict as dc_asdict
from pathlib import Path

import torch

from ..config import Recipe, asdict, read_yaml, recipe_from_dict
from ..data.loading import RunData, load_run_data
from ..data.types import ClsData, ColorData, SegData
from ..errors import CnnlabError
from ..losses import build_loss
from ..models import build_model
from ..models.weights import load_compatible, load_weights_file
from .checkpoint import atomic_save, load_checkpoint
from .fit import (TrainState, _set_encoder_trainable, build_optimizer, console, lr_at, train_one_epoch)
from .distributed import barrier, broadcast_str, init_from_env, is_main, local_device, unwrap, wrap
from .rundir import check_free_space, new_run_dir, write_config
from .runtime import choose_threads, resolve_runtime, seed_everything
from .steps import Normalizer, evaluate, selection_metric
from .summary import write_summary


class Interrupted(CnnlabError):
    """Ctrl-C during training; last.pt holds the last finished epoch."""


def _setup(r: Recipe):
    """Data, model, loss, optimizer and runtime for a recipe."""
    seed_everything(r.train.seed)
    choose_threads(r.train.threads)
    rt = resolve_runtime(local_device() or r.train.device, r.train.precision, r.train.channels_last)
    data = load_run_data(r.data, r.train.seed)
    _check_task(r, data)
    n_out = data.train.targets.shape[1] if r.task == "colorization" else len(data.class_names)
    in_ch = data.train.images.shape[1]
    size = tuple(data.train.images.shape[-2:])
    model = build_model(r.model.name, in_ch, n_out, size, r.model.params)
    report = None
    if r.model.init:
        report = load_compatible(model, load_weights_file(r.model.init))
    model = model.to(rt.device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format)
    ignore = data.train.ignore_index if isinstance(data.train, SegData) else None
    loss_fn = build_loss(r.loss.name, r.loss.params, ignore, data.train)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn = loss_fn.to(rt.device)
    return rt, data, model, loss_fn, report


def _check_task(r: Recipe, data: RunData) -> None:
    """The recipe's task must match what the data format yields."""
    kinds = {"segmentation": SegData, "classification": ClsData, "colorization": ColorData}
    if not isinstance(data.train, kinds[r.task]):
        raise CnnlabError(f"task '{r.task}' does not fit data.format '{r.data.format}' "
                          f"(it yields {type(data.train).__name__})", "change task or data.format")


def _write_metrics_csv(run_dir: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def _checkpoint(model, opt, state, r: Recipe, norm: Normalizer, data: RunData) -> dict:
    ck = {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict(), "state": dc_asdict(state),
          "recipe": asdict(r), "norm": {"mean": list(norm.mean), "std": list(norm.std)},
          "class_names": data.class_names, "in_channels": data.train.images.shape[1],
          "input_size": list(data.train.images.shape[-2:])}
    if r.task == "segmentation":  # predicted masks use the data set's pixel values even after the data moved
        from ..infer import resolve_encoding

        ck["mask_encoding"] = resolve_encoding(r, data.class_names, {})[0].describe()
    return ck


def _epoch_line(r: Recipe, epoch: int, row: dict) -> str:
    key = "val_dice_mean" if r.task == "segmentation" else "val_accuracy" if r.task == "classification" else None
    extra = f"  {key[4:]} {row[key]:.4f}" if key and row.get(key) is not None else ""
    return (f"epoch {epoch + 1:>3}/{r.train.epochs}  train loss {row['train_loss']:.4f}  "
            f"val loss {row['val_loss']:.4f}{extra}  {row['images_per_s']:.1f} img/s")


def _start(r: Recipe, transfer: dict | None) -> Path:
    """Rank 0 creates the run dir and writes the config; every rank learns its path."""
    run_dir = ""
    if is_main():
        run_dir = str(new_run_dir(r.out, r.name))
        write_config(Path(run_dir), r)
        if transfer is not None:
            (Path(run_dir) / "transfer.json").write_text(json.dumps(transfer, indent=1))
            console.print(f"transferred {len(transfer['loaded'])} tensors from {r.model.init}; "
                          f"{len(transfer['not_in_source']) + len(transfer['shape_mismatch'])} left as initialised "
                          "(see transfer.json)")
    return Path(broadcast_str(run_dir))


def train(recipe: Recipe, resume_dir: Path | None = None) -> Path:
    """Train (or resume) a run; returns its run dir. Every epoch ends with last.pt; improvements with best.pt.

    Under torchrun every process calls this; rank 0 alone writes files.
    """
    init_from_env()
    r = recipe
    rt, data, model, loss_fn, transfer = _setup(r)
    opt = build_optimizer(model, r)
    state = TrainState()
    norm = Normalizer.fit(data.train.images)
    if getattr(model, "normalizes_input", False):  # transfer nets apply their weights' own mean/std
        norm = Normalizer.identity(data.train.images.shape[1])
    if resume_dir is None:
        run_dir = _start(r, transfer)
    elif not (Path(resume_dir) / "last.pt").is_file():  # killed before its first epoch ended: start over in place
        run_dir = Path(resume_dir)
    else:
        run_dir = Path(resume_dir)
        ck = load_checkpoint(run_dir / "last.pt")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = TrainState(**ck["state"])
        norm = Normalizer(tuple(ck["norm"]["mean"]), tuple(ck["norm"]["std"]))
        if is_main():
            console.print(f"resuming {run_dir} at epoch {state.epoch + 1}")
    if is_main():
        check_free_space(run_dir, model)
    for note in data.notes if is_main() else []:
        console.print(f"note: {note}")
    model = wrap(model, r.train.sync_batchnorm)
    if r.train.compile:
        model = torch.compile(model)
    try:
        _loop(r, rt, data, model, loss_fn, opt, state, norm, run_dir)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {run_dir / 'last.pt'} holds epoch {state.epoch}",
                          f"resume with: cnnlab train --resume {run_dir}") from None
    barrier()
    core = unwrap(model)
    core.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    write_summary(r, rt, data, core, loss_fn, state, norm, run_dir)
    return run_dir


def _loop(r, rt, data, model, loss_fn, opt, state: TrainState, norm, run_dir: Path) -> None:
    """Epochs from state.epoch on, stopping early when validation stops improving."""
    while state.epoch < r.train.epochs and not (r.train.patience and state.bad_epochs >= r.train.patience):
        e = state.epoch
        if r.model.freeze_encoder_epochs:  # else leave the model's own freezing policy alone
            _set_encoder_trainable(unwrap(model), e >= r.model.freeze_encoder_epochs)
        lr = lr_at(e, r, state)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        tr_loss, seen, secs = train_one_epoch(model, data, r, rt, norm, loss_fn, opt, e)
        val, _ = evaluate(unwrap(model), data.val, rt, norm, loss_fn, r.train.eval_batch_size)
        score = selection_metric(r.task, val)
        improved = score > state.best
        state.train_seconds += secs
        state.train_images += seen
        row = {"epoch": e + 1, "lr": lr, "train_loss": tr_loss, **{f"val_{k}": v for k, v in val.items()},
               "seconds": round(secs, 3), "images_per_s": seen / max(secs, 1e-9)}
        state.history.append(row)
        if improved:
            state.best, state.best_epoch, state.bad_epochs = score, e + 1, 0
        else:
            state.bad_epochs += 1
            if r.optim.schedule == "plateau" and state.bad_epochs % max(r.train.patience // 2, 1) == 0:
                state.lr_factor *= r.optim.gamma
        state.epoch = e + 1
        if is_main():
            _save_epoch(model, opt, state, r, norm, data, run_dir, improved)
            if r.train.progress:
                console.print(_epoch_line(r, e, row) + ("  *best" if improved else ""))
        if r.train.patience and state.bad_epochs >= r.train.patience and is_main():
            console.print(f"early stop: no improvement for {state.bad_epochs} epochs (best epoch {state.best_epoch})")


def _save_epoch(model, opt, state, r, norm, data, run_dir: Path, improved: bool) -> None:
    """best.pt on improvement, then last.pt and metrics.csv: each write atomic."""
    ck = _checkpoint(model, opt, state, r, norm, data)
    if improved:
        atomic_save(ck, run_dir / "best.pt")
    atomic_save(ck, run_dir / "last.pt")
    _write_metrics_csv(run_dir, state.history)


RESUME_OVERRIDES = ("train.epochs", "train.patience", "train.progress")


def resume(run_dir: Path, overrides: list[str] | None = None) -> Path:
    """Continue an interrupted run from its last.pt with the recipe saved there (train longer with train.epochs=N)."""
    for o in overrides or []:
        if o.split("=", 1)[0] not in RESUME_OVERRIDES:
            raise CnnlabError(f"--set {o}: a resumed run keeps its recipe", f"only {', '.join(RESUME_OVERRIDES)} "
                              "may change on resume; start a new run for anything else")
    run_dir = Path(run_dir)
    for stale in run_dir.glob(".*.tmp"):  # a checkpoint write cut short by a crash
        stale.unlink()
    if not (run_dir / "last.pt").is_file():
        if not (run_dir / "config.yaml").is_file():
            raise CnnlabError(f"{run_dir}: neither last.pt nor config.yaml here", "is this a cnnlab run dir?")
        # killed before the first epoch ended: start over in the same run dir with its saved recipe
        return train(recipe_from_dict(read_yaml(run_dir / "config.yaml"), overrides), resume_dir=run_dir)
    ck = load_checkpoint(run_dir / "last.pt")
    r = recipe_from_dict(ck["recipe"], overrides)
    if TrainState(**ck["state"]).epoch >= r.train.epochs and is_main():
        console.print(f"{run_dir} already finished its {r.train.epochs} epochs; re-evaluating")
    return train(r, resume_dir=run_dir)
