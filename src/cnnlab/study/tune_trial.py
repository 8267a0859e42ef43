"""One trial of `cnnlab tune` as it trains, in whatever process runs it: the Optuna study it belongs to, and the
pruner that stops it after an epoch whose validation score is hopeless.

A trial is a study run (cnnlab.study.worker) named `trialNNNN` in TUNE_DIR/runs; the tune folder holds tune.json
(what was searched, how) and Optuna's sqlite storage, optuna.db. The pruning hook (cnnlab.engine.watch's
STOP_HOOKS) is process-wide and does nothing for runs outside a tune folder: it is installed in the tune process
(sequential trials), in each worker process (`--workers`) and in each Ray task (`--ray`), and reports each epoch's
validation score, the number that picks best.pt, to the trial in the storage. When the pruner says stop, the run
writes pruned.json and ends as early stopping ends a run (best.pt tested on validation, summary.json); the tune
process then records the trial as pruned.
"""
from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from cnnlab.engine.run_files import read_config
from cnnlab.engine.rundir import write_text_atomic
from cnnlab.engine.watch import STOP_HOOKS
from cnnlab.study import parallel
from cnnlab.study.tune_space import import_optuna
from cnnlab.study.worker import run_one

TUNE_FILE = "tune.json"
STORAGE_FILE = "optuna.db"
PRUNED_FILE = "pruned.json"
TRIAL_NAME = re.compile(r"^trial(\d{4,})(?:-\d{8}-\d{6}(?:-\d+)?)?$")


def trial_name(number: int) -> str:
    """The run name of trial `number` (its folder: TUNE_DIR/runs/trialNNNN-<timestamp>)."""
    return f"trial{number:04d}"


def storage_url(tune_dir: Path) -> str:
    """Optuna's sqlite storage of a tune folder, by the folder's path now (a moved folder still opens)."""
    return f"sqlite:///{(Path(tune_dir).resolve() / STORAGE_FILE)}"


def read_meta(tune_dir: Path) -> dict:
    return json.loads((Path(tune_dir) / TUNE_FILE).read_text())


_STORAGES: dict[str, object] = {}  # url -> storage, one per process: opening one checks its schema (0.25 s)


def storage(tune_dir: Path):
    """The RDB storage, waiting up to a minute for a lock (several workers report to one sqlite file)."""
    optuna, url = import_optuna(), storage_url(tune_dir)
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return _STORAGES[url]


def make_pruner(settings: dict):
    """The pruner of tune.json's settings: median (stop a trial below the median of earlier trials at the same
    epoch), halving (successive halving: keep the top third at each rung) or none."""
    optuna = import_optuna()
    first = settings["warmup_epochs"] + 1  # steps are epoch numbers from 1; Optuna may prune at step == its warmup
    if settings["pruner"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings["startup_trials"], n_warmup_steps=first)
    if settings["pruner"] == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    return optuna.pruners.NopPruner()


def make_sampler(settings: dict, n_before: int):
    """TPE (random for the first startup_trials) or random, seeded by tune.seed plus the trials made before this
    session: a resumed search does not draw the first session's random trials again."""
    optuna = import_optuna()
    seed = settings["seed"] + n_before
    if settings["sampler"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings["startup_trials"])


def open_study(tune_dir: Path, n_before: int = 0):
    """The tune folder's Optuna study, with its pruner and sampler (created by cnnlab.study.tune)."""
    optuna = import_optuna()
    meta = read_meta(tune_dir)
    return optuna.load_study(study_name=meta["study_name"], storage=storage(tune_dir),
                             pruner=make_pruner(meta["settings"]), sampler=make_sampler(meta["settings"], n_before))


def _report(run_dir: Path, row: dict, score: float) -> str | None:
    """STOP_HOOKS entry: the epoch's score to the trial of this run dir; a reason when the pruner stops it."""
    tune_dir, match = run_dir.parent.parent, TRIAL_NAME.fullmatch(run_dir.name)
    if match is None or run_dir.parent.name != "runs" or not (tune_dir / TUNE_FILE).is_file():
        return None  # not a trial of a tune folder
    optuna = import_optuna()
    study = open_study(tune_dir)
    rdb = storage(tune_dir)
    study_id = rdb.get_study_id_from_name(read_meta(tune_dir)["study_name"])
    trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, int(match.group(1)))
    trial = optuna.trial.Trial(study, trial_id)
    epoch = int(row["epoch"])
    if epoch not in rdb.get_trial(trial_id).intermediate_values:  # a resumed trial repeats none
        trial.report(score, step=epoch)
    last = epoch >= read_config(run_dir)["train"]["epochs"]
    if last or not trial.should_prune():  # a trial that ran its epochs has finished, whatever the pruner says
        return None
    pruner = read_meta(tune_dir)["settings"]["pruner"]
    write_text_atomic(run_dir / PRUNED_FILE, json.dumps({"epoch": epoch, "score": score, "pruner": pruner}))
    return f"pruned by the {pruner} pruner (validation score {score:.4f} at epoch {epoch})"


@contextlib.contextmanager
def pruning() -> Iterator[None]:
    """The pruning hook installed for the block (once, however often entered)."""
    if _report in STOP_HOOKS:
        yield
        return
    STOP_HOOKS.append(_report)
    try:
        yield
    finally:
        STOP_HOOKS.remove(_report)


def tune_child(study_dir: str, name: str, threads: int, gpu: str | None, conn) -> None:
    """A `--workers` process of a tune: the study worker's, with the pruning hook."""
    with pruning():
        parallel.worker_process(study_dir, name, threads, gpu, conn)


def tune_ray_task(study_dir: str, name: str, threads: int) -> tuple[str, str]:
    """A `--ray` task of a tune: the study's run, with the pruning hook."""
    with pruning():
        return run_one(study_dir, name, threads)
