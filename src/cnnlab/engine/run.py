"""A whole run: set up, fit with checkpoints every epoch, pick the best, test it, write the run dir."""
from __future__ import annotations

import contextlib
import csv
import json
import shlex
import signal
import threading
from collections.abc import Iterator
from dataclasses import asdict as dc_asdict
from pathlib import Path

import torch

from cnnlab.config import Recipe, asdict, read_yaml, recipe_from_dict
from cnnlab.data.loading import RunData, load_run_data
from cnnlab.engine.checkpoint import atomic_save, load_checkpoint
from cnnlab.engine.distributed import (
    barrier,
    broadcast_str,
    ddp,
    init_from_env,
    is_main,
    local_device,
    prepare,
    trainable_key,
    unwrap,
    world,
)
from cnnlab.engine.fit import (
    TrainingDiverged,
    TrainState,
    _set_encoder_trainable,
    build_optimizer,
    console,
    epoch_images,
    lr_at,
    train_one_epoch,
)
from cnnlab.engine.rundir import (
    check_free_space,
    new_run_dir,
    record_resume,
    run_dir_lock,
    set_aside_derived,
    write_config,
)
from cnnlab.engine.runtime import choose_threads, resolve_runtime, seed_everything
from cnnlab.engine.steps import Normalizer, evaluate
from cnnlab.engine.summary import write_summary
from cnnlab.engine.watch import RunWatch, per_process
from cnnlab.errors import CnnlabError
from cnnlab.losses.core import build_loss
from cnnlab.models import build_model
from cnnlab.models.weights import load_compatible, load_weights_file
from cnnlab.tasks import task_for


class Interrupted(CnnlabError):
    """Ctrl-C or SIGTERM during training; last.pt holds the last finished epoch."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is so that it ends like Ctrl-C: last.pt kept, the resume hint printed."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (kill, a scheduler's time limit, torchrun stopping its workers) ends the run like Ctrl-C.

    Python's default for SIGTERM is to die on the spot without a word; signal handlers can only be set from the
    main thread, so elsewhere (a study in a worker thread) the default stays.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _setup(r: Recipe):
    """Data, model, loss, optimizer and runtime for a recipe."""
    seed_everything(r.train.seed)
    choose_threads(r.train.threads)
    rt = resolve_runtime(local_device() or r.train.device, r.train.precision, r.train.channels_last)
    data = load_run_data(r.data, r.train.seed)
    _check_task(r, data)
    n_out = task_for(r.task).num_outputs(data.class_names)
    in_ch = data.train.images.shape[1]
    size = tuple(data.train.images.shape[-2:])
    model = build_model(r.model.name, in_ch, n_out, size, r.model.params)
    report = None
    if r.model.init:
        report = load_compatible(model, load_weights_file(r.model.init))
    model = model.to(rt.device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format)
    ignore = task_for(data.train).ignore_index(data.train)
    loss_fn = build_loss(r.loss.name, r.loss.params, ignore, data.train)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn = loss_fn.to(rt.device)
    return rt, data, model, loss_fn, report


def _check_task(r: Recipe, data: RunData) -> None:
    """The recipe's task must match what the data format yields."""
    if not task_for(r.task).fits(data.train):
        raise CnnlabError(f"task '{r.task}' does not fit data.format '{r.data.format}' "
                          f"(it yields {type(data.train).__name__})", "change task or data.format")


def _write_metrics_csv(run_dir: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def _checkpoint(model, opt, state, r: Recipe, norm: Normalizer, data: RunData, scaler=None) -> dict:
    ck = {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict(), "state": dc_asdict(state),
          "recipe": asdict(r), "norm": {"mean": list(norm.mean), "std": list(norm.std)},
          "class_names": data.class_names, "in_channels": data.train.images.shape[1],
          "input_size": list(data.train.images.shape[-2:])}
    if scaler is not None and scaler.is_enabled():  # fp16 loss scale: exact resume needs it
        ck["scaler"] = scaler.state_dict()
    ck.update(task_for(r.task).checkpoint_entries(r, data.class_names))
    return ck


def _epoch_line(r: Recipe, epoch: int, row: dict) -> str:
    name = task_for(r.task).headline  # the task's validation metric, if it has one besides the loss
    value = row.get(f"val_{name}") if name else None
    extra = f"  {name} {value:.4f}" if value is not None else ""
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


def train(recipe: Recipe, resume_dir: Path | None = None, overrides: list[str] | None = None) -> Path:
    """Train (or resume) a run; returns its run dir. Every epoch ends with last.pt; improvements with best.pt.

    Under torchrun every process calls this; rank 0 alone writes files (and holds the run dir's lock).
    overrides: the --set of a resume, recorded in the run dir's history.yaml.
    """
    init_from_env()
    r = recipe
    watch = RunWatch(r, console, is_main())  # progress bars, events.jsonl, train.log_to trackers
    with watch.decoding() as bar:
        rt, data, model, loss_fn, transfer = _setup(r)
    watch.data_read(data, bar.seconds)
    opt = build_optimizer(model, r)
    scaler = rt.grad_scaler()  # one for the whole run: its loss scale is state, checkpointed like the weights
    norm = Normalizer.fit(data.train.images)
    if getattr(model, "normalizes_input", False):  # transfer nets apply their weights' own mean/std
        norm = Normalizer.identity(data.train.images.shape[1])
    run_dir = _start(r, transfer) if resume_dir is None else Path(resume_dir)
    state = TrainState()
    with run_dir_lock(run_dir), _sigterm_interrupts(), watch:
        if resume_dir is not None:
            state, norm = _restore(run_dir, r, model, opt, scaler, norm, overrides or [])
        watch.attach(run_dir, state.epoch)
        if is_main():
            check_free_space(run_dir, model)
        for note in data.notes if is_main() else []:
            console.print(f"note: {note}")
        core = prepare(model, r.train.sync_batchnorm)
        try:
            _loop(r, rt, data, core, loss_fn, opt, scaler, state, norm, run_dir, watch)
            barrier()
            core.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
            with watch.test_phase(data) as bar:
                summary = write_summary(r, rt, data, core, loss_fn, state, norm, run_dir, per_process(bar))
            watch.finish(run_dir, summary, state.epoch)
        except KeyboardInterrupt as e:
            what = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
            held = (f"{run_dir / 'last.pt'} holds epoch {state.epoch}" if (run_dir / "last.pt").is_file()
                    else "no epoch had finished, the resume starts it again")
            raise Interrupted(f"{what}; {held}",
                              f"resume with: cnnlab train --resume {shlex.quote(str(run_dir))}") from None
    return run_dir


def _restore(run_dir: Path, r: Recipe, model, opt, scaler, norm: Normalizer,
             overrides: list[str]) -> tuple[TrainState, Normalizer]:
    """Weights, optimizer, loss scale and progress from last.pt; rank 0 records the resume in the run dir.

    A run killed before its first epoch ended has no last.pt: it starts over in place.
    """
    state = TrainState()
    if (run_dir / "last.pt").is_file():
        ck = load_checkpoint(run_dir / "last.pt")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        state = TrainState(**ck["state"])
        norm = Normalizer(tuple(ck["norm"]["mean"]), tuple(ck["norm"]["std"]))
        if is_main():
            console.print(f"resuming {run_dir} at epoch {state.epoch + 1}")
    if is_main():
        record_resume(run_dir, r, state.epoch, overrides)
        moved = set_aside_derived(run_dir, state.best_epoch) if _will_train(r, state) else None
        if moved is not None:
            console.print(f"note: files made from the earlier best.pt (export/, evaluate_*.json) moved to {moved}")
    return state, norm


def _will_train(r: Recipe, state: TrainState) -> bool:
    """Whether another epoch runs (the loop's own condition)."""
    return state.epoch < r.train.epochs and not (r.train.patience and state.bad_epochs >= r.train.patience)


def _wrapped(core: torch.nn.Module, r: Recipe) -> torch.nn.Module:
    """The module the training steps call: DDP over the parameters trainable now, compiled when asked."""
    model = ddp(core)
    return torch.compile(model) if r.train.compile else model


def _diverged_hint(r: Recipe, run_dir: Path) -> str:
    """A command that starts a new run of this recipe at a tenth of the learning rate."""
    return (f"lower the learning rate in a new run: cnnlab train {shlex.quote(str(run_dir / 'config.yaml'))} "
            f"--set optim.lr={r.optim.lr / 10:g}")


def _loop(r, rt, data, core, loss_fn, opt, scaler, state: TrainState, norm, run_dir: Path, watch: RunWatch) -> None:
    """Epochs from state.epoch on, stopping early when validation stops improving.

    Under DDP the wrapper is rebuilt when the set of trainable parameters changes (encoder unfrozen).
    """
    model, key = core, None
    while _will_train(r, state):
        e = state.epoch
        if r.model.freeze_encoder_epochs:  # else leave the model's own freezing policy alone
            _set_encoder_trainable(core, e >= r.model.freeze_encoder_epochs)
        if key is None or (world() > 1 and trainable_key(core) != key):
            model, key = _wrapped(core, r), trainable_key(core)
        lr = lr_at(e, r, state)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        try:
            with watch.train_phase(e, epoch_images(len(data.train), r)) as bar:
                tr_loss, seen, secs = train_one_epoch(model, data, r, rt, norm, loss_fn, opt, e, scaler, bar)
        except TrainingDiverged as err:
            kept = "no checkpoint was written" if not e else f"last.pt keeps epoch {e}" + (
                f", best.pt epoch {state.best_epoch}" if state.best_epoch > 0 else "")
            raise TrainingDiverged(f"{err.message}; {kept}", _diverged_hint(r, run_dir)) from None
        with watch.val_phase(e, len(data.val)) as vbar:
            val, _ = evaluate(core, data.val, rt, norm, loss_fn, r.train.eval_batch_size, per_process(vbar))
        score = task_for(r.task).selection_score(val)
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
        watch.epoch(row, bar.steps, improved)  # events.jsonl and trackers (rank 0)
        if is_main():
            _save_epoch(model, opt, state, r, norm, data, run_dir, improved, scaler)
            if r.train.progress:
                console.print(_epoch_line(r, e, row) + ("  *best" if improved else ""))
        if r.train.patience and state.bad_epochs >= r.train.patience and is_main():
            console.print(f"early stop: no improvement for {state.bad_epochs} epochs (best epoch {state.best_epoch})")


def _save_epoch(model, opt, state, r, norm, data, run_dir: Path, improved: bool, scaler=None) -> None:
    """best.pt on improvement, then last.pt and metrics.csv: each write atomic."""
    ck = _checkpoint(model, opt, state, r, norm, data, scaler)
    if improved:
        atomic_save(ck, run_dir / "best.pt")
    atomic_save(ck, run_dir / "last.pt")
    _write_metrics_csv(run_dir, state.history)


RESUME_OVERRIDES = ("train.epochs", "train.patience", "train.progress", "data.cache", "data.cache_dir")


def resume(run_dir: Path, overrides: list[str] | None = None) -> Path:
    """Continue an interrupted run from its last.pt with the recipe saved there (train longer with train.epochs=N).

    The run dir is locked first: a second resume of the same run dir stops with one line instead of racing.
    """
    for o in overrides or []:
        if o.split("=", 1)[0] not in RESUME_OVERRIDES:
            raise CnnlabError(f"--set {o}: a resumed run keeps its recipe", f"only {', '.join(RESUME_OVERRIDES)} "
                              "may change on resume; start a new run for anything else")
    init_from_env()  # ranks known before locking: only rank 0 locks and prints
    run_dir = Path(run_dir)
    if not (run_dir / "last.pt").is_file() and not (run_dir / "config.yaml").is_file():
        raise CnnlabError(f"{run_dir}: neither last.pt nor config.yaml here", "is this a cnnlab run dir?")
    with run_dir_lock(run_dir):
        for stale in run_dir.glob(".*.tmp"):  # a checkpoint write cut short by a crash
            stale.unlink()
        if not (run_dir / "last.pt").is_file():
            # killed before the first epoch ended: start over in the same run dir with its saved recipe
            r = recipe_from_dict(read_yaml(run_dir / "config.yaml"), overrides, check_name=False)
            return train(r, resume_dir=run_dir, overrides=overrides)
        ck = load_checkpoint(run_dir / "last.pt")
        r = recipe_from_dict(ck["recipe"], overrides, check_name=False)
        if TrainState(**ck["state"]).epoch >= r.train.epochs and is_main():
            console.print(f"{run_dir} already finished its {r.train.epochs} epochs; re-evaluating")
        return train(r, resume_dir=run_dir, overrides=overrides)
