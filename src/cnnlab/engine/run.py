"""A whole run: set up, fit with checkpoints every epoch, pick the best, test it, write the run dir."""
from __future__ import annotations

import shlex
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import torch

from cnnlab.config import Recipe
from cnnlab.data.loading import RunData, load_run_data
from cnnlab.engine.checkpoint import checkpoint_of, read_checkpoint, save_checkpoints, saved_epoch
from cnnlab.engine.context import RunContext
from cnnlab.engine.distributed import (
    barrier,
    broadcast_str,
    ddp,
    init_from_env,
    is_main,
    local_device,
    prepare,
    trainable_key,
    world,
)
from cnnlab.engine.fit import (
    TrainingDiverged,
    TrainState,
    build_optimizer,
    epoch_images,
    lr_at,
    scheduled_size,
    set_encoder_requires_grad,
    train_one_epoch,
)
from cnnlab.engine.run_files import (
    BEST,
    CONFIG,
    LAST,
    has_config,
    read_recipe,
    record_resume,
    write_config,
    write_metrics,
    write_transfer,
)
from cnnlab.engine.rundir import (
    check_free_space,
    new_run_dir,
    run_dir_lock,
    set_aside_derived,
)
from cnnlab.engine.runtime import choose_threads, resolve_runtime, seed_everything
from cnnlab.engine.steps import Normalizer, evaluate
from cnnlab.engine.summary import write_summary
from cnnlab.engine.watch import RunWatch, per_process
from cnnlab.errors import CnnlabError
from cnnlab.interrupts import Terminated, handled, last_signal, protected, was_forced
from cnnlab.logs import console, get_logger, quiet, run_log
from cnnlab.losses.core import build_loss
from cnnlab.metrics.per_class import worst_class
from cnnlab.models import build_model
from cnnlab.models.weights import load_compatible, load_weights_file
from cnnlab.tasks import Task, task_for

log = get_logger(__name__)


class Interrupted(CnnlabError):
    """Ctrl-C or SIGTERM during training; last.pt holds the last finished epoch."""


def _setup(r: Recipe, task: Task):
    """Data, model, loss, optimizer and runtime for a recipe."""
    seed_everything(r.train.seed)
    choose_threads(r.train.threads)
    rt = resolve_runtime(local_device() or r.train.device, r.train.precision, r.train.channels_last)
    data = load_run_data(r.data, r.train.seed, r.out)
    _check_task(r, task, data)
    n_out = task.num_outputs(data.class_names)
    in_ch = data.train.images.shape[1]
    size = tuple(r.data.patch or data.train.images.shape[-2:])  # the model sees patches where data.patch is set
    model = build_model(r.model.name, in_ch, n_out, size, r.model.params)
    report = None
    if r.model.init:
        report = load_compatible(model, load_weights_file(r.model.init))
    model = model.to(rt.device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format)
    ignore = task.ignore_index(data.train)
    loss_fn = build_loss(r.loss.name, r.loss.params, ignore, data.train)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn = loss_fn.to(rt.device)
    return rt, data, model, loss_fn, report


def _check_task(r: Recipe, task: Task, data: RunData) -> None:
    """The recipe's task must match what the data format yields."""
    if not task.fits(data.train):
        raise CnnlabError(f"task '{r.task}' does not fit data.format '{r.data.format}' "
                          f"(it yields {type(data.train).__name__})", "change task or data.format")


def _epoch_line(ctx: RunContext, epoch: int, row: dict) -> str:
    # the validation metric that selects best.pt: the task's (its headline), or mean IoU (train.select: miou)
    r = ctx.recipe
    name = "iou_mean" if r.train.select == "miou" else ctx.task.headline
    value = row.get(f"val_{name}") if name else None
    extra = f"  {name} {value:.4f}" if value is not None else ""
    worst = worst_class(row) if sum(k.startswith("val_iou/") for k in row) > 2 else None  # multi-class
    extra += f"  worst {worst[0]} IoU {worst[1]:.2f}" if worst else ""
    size = scheduled_size(r, epoch)  # the resolution schedule's smaller training size, said where it applies
    at = f" at {size[0]}x{size[1]}" if size else ""
    return (f"epoch {epoch + 1:>3}/{r.train.epochs}  train loss {row['train_loss']:.4f}  "
            f"val loss {row['val_loss']:.4f}{extra}  {row['images_per_s']:.1f} img/s{at}")


def _start(r: Recipe, transfer: dict | None) -> Path:
    """Rank 0 creates the run dir and writes the config (and transfer.json); every rank learns its path."""
    run_dir = ""
    if is_main():
        run_dir = str(new_run_dir(r.out, r.name))
        write_config(Path(run_dir), r)
        if transfer is not None:
            write_transfer(Path(run_dir), transfer)
    return Path(broadcast_str(run_dir))


def _transfer_line(r: Recipe, transfer: dict) -> str:
    return (f"transferred {len(transfer['loaded'])} tensors from {r.model.init}; "
            f"{len(transfer['not_in_source']) + len(transfer['shape_mismatch'])} left as initialised "
            "(see transfer.json)")


def _context(r: Recipe, resume_dir: Path | None) -> tuple[RunContext, dict | None]:
    """Data, model, loss, optimizer, loss scaler and normaliser of a recipe, and the run dir (new unless resumed);
    with the transfer report of model.init (None without one)."""
    task = task_for(r.task)  # the one lookup of a run's task: everything below takes it from the context
    watch = RunWatch(r, console, is_main())  # progress bars, events.jsonl, train.log_to trackers
    with watch.decoding() as bar:
        rt, data, model, loss_fn, transfer = _setup(r, task)
    watch.data_read(data, bar.seconds)
    opt = build_optimizer(model, r)
    scaler = rt.grad_scaler()  # one for the whole run: its loss scale is state, checkpointed like the weights
    norm = Normalizer.fit(data.train.images, getattr(data.train, "sizes", None))  # own pixels, not padding
    if getattr(model, "normalizes_input", False):  # transfer nets apply their weights' own mean/std
        norm = Normalizer.identity(data.train.images.shape[1])
    run_dir = _start(r, transfer) if resume_dir is None else Path(resume_dir)
    return RunContext(r, task, rt, data, model, loss_fn, opt, scaler, norm, run_dir, watch), transfer


def train(recipe: Recipe, resume_dir: Path | None = None, overrides: list[str] | None = None) -> Path:
    """Train (or resume) a run; returns its run dir. Every epoch ends with last.pt; improvements with best.pt.

    Under torchrun every process calls this; rank 0 alone writes files (and holds the run dir's lock) and logs
    (to the console and the run dir's train.log). overrides: the --set of a resume, recorded in history.yaml.
    """
    init_from_env()
    with handled():  # from here on Ctrl-C and SIGTERM end the run with one line; writes are never cut
        try:
            return _train(recipe, resume_dir, overrides)
        except KeyboardInterrupt as e:  # before the run dir was locked: reading the data, building the model
            if resume_dir is not None:
                raise _interrupted(isinstance(e, Terminated), Path(resume_dir)) from None
            raise Interrupted(f"{_stopped_by(isinstance(e, Terminated))} before training began (reading the data "
                              "or building the model); nothing was trained") from None


def _train(recipe: Recipe, resume_dir: Path | None, overrides: list[str] | None) -> Path:
    ctx, transfer = _context(recipe, resume_dir)
    reached = {"training": False}
    try:
        return _train_in(ctx, transfer, resume_dir, overrides, reached)
    except CnnlabError:
        # a new run refused before its first epoch began (a tracker that cannot open, no room for checkpoints)
        # leaves no run dir behind: this call made the folder moments ago and it holds nothing of the user's
        if resume_dir is None and is_main() and not reached["training"]:
            shutil.rmtree(ctx.run_dir, ignore_errors=True)
        raise


def _train_in(ctx: RunContext, transfer: dict | None, resume_dir: Path | None, overrides: list[str] | None,
              reached: dict[str, bool]) -> Path:
    recipe, run_dir, state = ctx.recipe, ctx.run_dir, TrainState()
    with run_dir_lock(run_dir), ctx.watch, run_log(run_dir, enabled=is_main()):
        try:
            if transfer is not None and resume_dir is None and is_main():
                log.info(_transfer_line(recipe, transfer))
            if resume_dir is not None:
                state, norm = _restore(ctx, overrides or [])
                ctx = replace(ctx, norm=norm)
            ctx.watch.attach(run_dir, state.epoch)
            if is_main():
                check_free_space(run_dir, ctx.core)
            for note in ctx.data.notes if is_main() else []:
                log.info(f"note: {note}")
            ctx = replace(ctx, core=prepare(ctx.core, recipe.train.sync_batchnorm))
            reached["training"] = True
            _loop(ctx, state)
            barrier()
            ctx.core.load_state_dict(read_checkpoint(run_dir / BEST).weights)
            with ctx.watch.test_phase(ctx.data) as bar:
                summary = write_summary(ctx, state, per_process(bar))
            ctx.watch.finish(run_dir, summary, state.epoch)
        except KeyboardInterrupt as e:
            raise _interrupted(isinstance(e, Terminated), run_dir) from None
        except Exception as e:
            if last_signal() is None or isinstance(e, CnnlabError):
                raise
            # a second signal cut a library call short (torch.save's zip writer raises its own error then)
            raise _interrupted(last_signal() == signal.SIGTERM, run_dir) from None
    return run_dir


def _stopped_by(terminated: bool) -> str:
    return "terminated (SIGTERM)" if terminated else "interrupted"


def _interrupted(terminated: bool, run_dir: Path) -> Interrupted:
    """Ctrl-C (or SIGTERM, terminated) as one line saying what last.pt holds (read back from the file, not from
    the loop's state), with the resume command."""
    what = _stopped_by(terminated)
    if was_forced():
        what += " at once by a second signal"
    epoch = saved_epoch(run_dir / LAST)
    held = (f"{run_dir / 'last.pt'} holds epoch {epoch}" if epoch is not None
            else "no epoch had finished, the resume starts it again")
    return Interrupted(f"{what}; {held}", f"resume with: cnnlab train --resume {shlex.quote(str(run_dir))}")


def _restore(ctx: RunContext, overrides: list[str]) -> tuple[TrainState, Normalizer]:
    """Weights, optimizer, loss scale and progress from last.pt into ctx (the normaliser saved there is returned);
    rank 0 records the resume in the run dir.

    A run killed before its first epoch ended has no last.pt: it starts over in place.
    """
    run_dir, state, norm = ctx.run_dir, TrainState(), ctx.norm
    if (run_dir / LAST).is_file():
        ck = read_checkpoint(run_dir / LAST)
        ctx.core.load_state_dict(ck.weights)
        ctx.opt.load_state_dict(ck.optimizer)
        if ctx.scaler is not None and ck.scaler:
            ctx.scaler.load_state_dict(ck.scaler)
        state, norm = ck.train_state, ck.norm
        if is_main():
            log.info(f"resuming {run_dir} at epoch {state.epoch + 1}")
    if is_main():
        with protected():
            record_resume(run_dir, ctx.recipe, state.epoch, overrides)
            moved = set_aside_derived(run_dir, state.best_epoch) if _will_train(ctx.recipe, state) else None
        if moved is not None:
            log.info(f"note: files made from the earlier best.pt (export/, evaluate_*.json) moved to {moved}")
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
    return (f"lower the learning rate in a new run: cnnlab train {shlex.quote(str(run_dir / CONFIG))} "
            f"--set optim.lr={r.optim.lr / 10:g}")


def _loop(ctx: RunContext, state: TrainState) -> None:
    """Epochs from state.epoch on, stopping early when validation stops improving.

    Under DDP the wrapper is rebuilt when the set of trainable parameters changes (encoder unfrozen).
    """
    r, core = ctx.recipe, ctx.core
    model, key = core, None
    while _will_train(r, state):
        e = state.epoch
        if r.model.freeze_encoder_epochs:  # else leave the model's own freezing policy alone
            set_encoder_requires_grad(core, e >= r.model.freeze_encoder_epochs)
        if key is None or (world() > 1 and trainable_key(core) != key):
            model, key = _wrapped(core, r), trainable_key(core)
        lr = lr_at(e, r, state)
        for group in ctx.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        tr_loss, seen, secs, steps = _train_epoch(ctx, model, state)
        with ctx.watch.val_phase(e, len(ctx.data.val)) as vbar:
            val, _ = evaluate(ctx.scorer(), ctx.data.val, per_process(vbar))
        row = {"epoch": e + 1, "lr": lr, "train_loss": tr_loss, **{f"val_{k}": v for k, v in val.items()},
               "seconds": round(secs, 3), "images_per_s": seen / max(secs, 1e-9)}
        score = ctx.task.selection_score(val, r.train.select)
        with protected():  # the epoch's state, events, trackers, checkpoints and metrics.csv: one uncut step
            improved = _record(r, state, row, score, seen, secs)
            ctx.watch.epoch(row, steps, improved)  # events.jsonl and trackers (rank 0)
            if is_main():
                _save_epoch(ctx, state, improved)
                log.info(_epoch_line(ctx, e, row) + ("  *best" if improved else ""), extra=quiet(r.train.progress))
        if r.train.patience and state.bad_epochs >= r.train.patience and is_main():
            log.info(f"early stop: no improvement for {state.bad_epochs} epochs (best epoch {state.best_epoch})")
        stop = ctx.watch.stop_reason(ctx.run_dir, row, score)  # told every epoch, the last one too
        if stop and _will_train(r, state):
            log.info(f"stopped after epoch {e + 1}: {stop}")
            break


def _train_epoch(ctx: RunContext, model: torch.nn.Module, state: TrainState) -> tuple[float, int, float, int]:
    """train_one_epoch under the epoch's progress bar: mean loss, images, seconds and the bar's steps. A diverged
    epoch's error says which checkpoints are still good and how to start again."""
    e = state.epoch
    try:
        with ctx.watch.train_phase(e, epoch_images(len(ctx.data.train), ctx.recipe)) as bar:
            tr_loss, seen, secs = train_one_epoch(ctx, model, e, bar)
    except TrainingDiverged as err:
        held, best = saved_epoch(ctx.run_dir / LAST), saved_epoch(ctx.run_dir / BEST)
        kept = "no checkpoint was written" if held is None else f"last.pt keeps epoch {held}" + (
            f", best.pt epoch {best}" if best is not None else "")
        raise TrainingDiverged(f"{err.message}; {kept}", _diverged_hint(ctx.recipe, ctx.run_dir)) from None
    return tr_loss, seen, secs, bar.steps


def _record(r: Recipe, state: TrainState, row: dict, score: float, seen: int, secs: float) -> bool:
    """An epoch's row and time into the state, the best score and plateau decay updated; True if it improved."""
    improved = score > state.best
    state.train_seconds += secs
    state.train_images += seen
    state.history.append(row)
    if improved:
        state.best, state.best_epoch, state.bad_epochs = score, row["epoch"], 0
    else:
        state.bad_epochs += 1
        if r.optim.schedule == "plateau" and state.bad_epochs % max(r.train.patience // 2, 1) == 0:
            state.lr_factor *= r.optim.gamma
    state.epoch = row["epoch"]
    return improved


def _save_epoch(ctx: RunContext, state: TrainState, improved: bool) -> None:
    """best.pt on improvement, then last.pt (each write atomic), then metrics.csv."""
    save_checkpoints(ctx.run_dir, checkpoint_of(ctx, state), improved)
    write_metrics(ctx.run_dir, state.history)


# what may change on resume: how long to train, and what is not part of the experiment (progress, the decoded
# cache, the trackers: a store that moved or an extra missing on the resuming machine must not strand the run)
RESUME_OVERRIDES = ("train.epochs", "train.patience", "train.progress", "data.cache", "data.cache_dir",
                    "train.log_to", "train.mlflow_uri")


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
    if not (run_dir / LAST).is_file() and not has_config(run_dir):
        raise CnnlabError(f"{run_dir}: neither last.pt nor config.yaml here", "is this a cnnlab run dir?")
    with run_dir_lock(run_dir):
        for stale in run_dir.glob(".*.tmp"):  # a checkpoint write cut short by a crash
            stale.unlink()
        if not (run_dir / LAST).is_file():
            # killed before the first epoch ended: start over in the same run dir with its saved recipe
            return train(read_recipe(run_dir, overrides), resume_dir=run_dir, overrides=overrides)
        ck = read_checkpoint(run_dir / LAST)
        r = ck.recipe(overrides)
        if ck.train_state.epoch >= r.train.epochs and is_main():
            log.info(f"{run_dir} already finished its {r.train.epochs} epochs; re-evaluating")
        return train(r, resume_dir=run_dir, overrides=overrides)
