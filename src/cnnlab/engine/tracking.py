"""Experiment tracking with the real libraries: TensorBoard event files and MLflow runs (`train.log_to`).

Why: people keep their experiments in TensorBoard or MLflow, not in folders of CSV files. Both are optional
extras (`pip install 'cnnlab[tensorboard]'`, `'cnnlab[mlflow]'`), imported inside the functions that use them:
importing either costs seconds, and a run without `train.log_to` must not pay that or need them installed.
engine/recipe_check.py refuses a missing one before any data is read.

What each gets, rank 0 only, under the same names in both (`train/loss`, `val/dice_mean`, `lr`, `final/...`):
- TensorBoard (event files in RUN_DIR/tensorboard/): every metrics.csv column per epoch (losses, every validation
  metric, learning rate, images/s, seconds), each optimiser step's training loss (`train/step_loss`, x = the
  run's step count), the run's figures as images (per-class charts included: drawn before the trackers close),
  the final per-class scores as one text table, and in the HPARAMS view a short list of recipe keys with the
  final metrics and `hp_metric` (engine/tracker_views.py).
- MLflow (a run in the experiment train.mlflow_experiment, by default the recipe file's name, so `--set name=x`
  makes no new experiment): the flattened recipe as params, the same per-epoch and per-step metrics, the final
  metrics and per-class scores (`final/per_class/dice/<class>`), summary.json, metrics.csv, config.yaml,
  events.jsonl, the figures and report.html as artifacts, best.pt as a loadable model folder under model/, and
  source, git, data and study tags (engine/mlflow_extras.py). Tracking URI: train.mlflow_uri, else
  $MLFLOW_TRACKING_URI, else a local sqlite file `<out>/mlflow.db` (artifacts in `<out>/mlartifacts/`), so no
  server is needed.
RUN_DIR/tracking.json remembers the MLflow run, so a resumed run continues it and the report can join it later.

Nesting (a study, cnnlab.study.mlflow_parent): while $CNNLAB_MLFLOW_PARENT_RUN_ID names a run of the same store, a
new MLflow run goes into that run's experiment with the tag mlflow.parentRunId, so the MLflow UI shows it under the
parent. An environment variable, not an argument, because it must reach runs in worker processes and Ray tasks
that only get the study folder and a run name (cnnlab.study.worker sets it from STUDY_DIR/tracking.json, with the
run's variant, seed and grid point in $CNNLAB_MLFLOW_TAGS).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.config import Recipe, asdict
from cnnlab.engine.mlflow_extras import TAGS_ENV, log_model, mark_experiment, run_tags, system_monitor
from cnnlab.engine.recipe_check import TRACKER_EXTRAS, check_trackers
from cnnlab.engine.run_files import CONFIG, EVENTS, FIGURES, METRICS, SUMMARY
from cnnlab.engine.tracker_base import STEP_LOSS_TAG, Tracker, final_scalars, flatten, number, scalar_tag
from cnnlab.engine.tracker_views import hp_metric, hparams, per_class_markdown
from cnnlab.engine.tracking_wandb import WandbTracker
from cnnlab.errors import CnnlabError, ConfigError

TRACKING_FILE = "tracking.json"
TENSORBOARD_DIR = "tensorboard"
ARTIFACTS = (SUMMARY, METRICS, CONFIG, "report.html")
PARENT_ENV = "CNNLAB_MLFLOW_PARENT_RUN_ID"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: its UI nests a run under the run it names
PARAM_MAX = 6000                   # MLflow's longest param value


class TensorBoardTracker(Tracker):
    def __init__(self, r: Recipe, run_dir: Path, first_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # optional extra cnnlab[tensorboard]

        super().__init__(run_dir)
        # no purge_step on resume: an epoch reaches the trackers in the same uncut step as its checkpoint (run.py),
        # so a resume repeats no logged epoch, and a purge at the epoch would drop the per-step losses logged at
        # global steps past it
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
        self.recipe = r

    def epoch(self, epoch: int, row: dict) -> None:
        for k, v in row.items():
            if k != "epoch" and number(v):
                self.writer.add_scalar(scalar_tag(k), v, epoch)
        self.writer.flush()  # someone may be watching with `tensorboard --logdir`

    def steps(self, losses: list[tuple[int, float]]) -> None:
        for step, loss in losses:
            self.writer.add_scalar(STEP_LOSS_TAG, loss, step)
        self.writer.flush()

    def finish(self, run_dir: Path, summary: dict, step: int) -> None:
        from PIL import Image

        for png in sorted((run_dir / FIGURES).glob("*.png")):
            with Image.open(png) as im:
                self.writer.add_image(f"figures/{png.stem}", np.asarray(im.convert("RGB")), step,
                                      dataformats="HWC")
        table = per_class_markdown(summary)  # one text card, not a single-point scalar card per class and metric
        if table:
            self.writer.add_text("final/per_class", table, step)
        headline = {k: v for k, v in final_scalars(summary).items() if "/per_class/" not in k}
        score = hp_metric(summary)
        if score is not None:
            headline["hp_metric"] = score
        # run_name ".": the hparams and their metrics land in this run's own folder, not a new timestamped one
        self.writer.add_hparams(hparams(flatten(asdict(self.recipe))), headline, run_name=".", global_step=step)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()

    def describe(self) -> str:
        return (f"tensorboard: logging to {self.run_dir / TENSORBOARD_DIR} "
                f"(view: tensorboard --logdir {shlex.quote(str(self.run_dir.parent))})")


def mlflow_uri(r: Recipe) -> str:
    """train.mlflow_uri, else $MLFLOW_TRACKING_URI, else the sqlite file <out>/mlflow.db."""
    uri = r.train.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri or f"sqlite:///{Path(r.out).expanduser().resolve() / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of a local sqlite store keeps its artifacts: mlartifacts/ beside the database file.
    MLflow's own default is ./mlruns in whatever folder the command ran from. None (the server decides) for
    other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).expanduser().resolve().parent / "mlartifacts").as_uri()


def _mlflow_key(key: str) -> str:
    """MLflow keys allow letters, digits, '_', '-', '.', ' ', ':' and '/'; anything else (a class name's '+',
    say) becomes '_'."""
    return re.sub(r"[^\w\-. :/]", "_", key)


def _quiet_mlflow() -> None:
    """MLflow and alembic log each table they create at INFO on stderr; cnnlab's output stays the run's own."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def read_tracking(folder: Path) -> dict:
    """A run's (or a study's) tracking.json: which MLflow run it logs to."""
    p = Path(folder) / TRACKING_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def write_tracking(folder: Path, entry: dict) -> None:
    """Remember the MLflow run of a run dir or study folder in its tracking.json (other entries kept)."""
    (Path(folder) / TRACKING_FILE).write_text(json.dumps({**read_tracking(folder), "mlflow": entry}, indent=1))


def mlflow_client(uri: str):
    """An MlflowClient of the store at `uri`; a missing extra is one line."""
    check_trackers(["mlflow"])
    from mlflow import MlflowClient  # optional extra cnnlab[mlflow]

    _quiet_mlflow()
    return MlflowClient(tracking_uri=uri)


def experiment_id(client, name: str, uri: str) -> str:
    """The experiment called `name`, created (artifacts beside a local sqlite store) when new, tagged to open on
    its runs table (mlflow_extras.mark_experiment)."""
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(
        name, artifact_location=artifact_root(uri))
    mark_experiment(client, exp_id)
    return exp_id


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    """Params as text, keys made MLflow-safe, values cut to MLflow's limit; at most 100 per batch (MLflow's)."""
    from mlflow.entities import Param  # optional extra cnnlab[mlflow]

    items = [Param(_mlflow_key(k), str(v)[:PARAM_MAX]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def log_metrics(client, run_id: str, values: dict[str, Any], step: int) -> None:
    """The finite numbers among `values` at `step`, keys made MLflow-safe; at most 1000 per batch (MLflow's)."""
    from mlflow.entities import Metric  # optional extra cnnlab[mlflow]

    ms = int(time.time() * 1000)
    metrics = [Metric(_mlflow_key(k), float(v), ms, step) for k, v in values.items() if number(v)]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


@contextlib.contextmanager
def nested_under(parent_run_id: str | None, tags: dict[str, object] | None = None) -> Iterator[None]:
    """MLflow runs started in the block are children of `parent_run_id`, tagged with `tags` (a study run's variant,
    seed and grid point); nothing changes for None."""
    if parent_run_id is None:
        yield
        return
    values = {PARENT_ENV: parent_run_id, TAGS_ENV: json.dumps({k: str(v) for k, v in (tags or {}).items()})}
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _parent(client, uri: str) -> tuple[str, str, str] | None:
    """(run id, experiment id, experiment name) of the parent named by $CNNLAB_MLFLOW_PARENT_RUN_ID, or None."""
    run_id = os.environ.get(PARENT_ENV)
    if not run_id:
        return None
    try:
        parent = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow's error for an unknown run id differs between stores
        raise CnnlabError(f"{PARENT_ENV}={run_id}: no such MLflow run at {uri}",
                          f"unset {PARENT_ENV}, or set train.mlflow_uri to the store that holds that run") from None
    exp_id = parent.info.experiment_id
    return run_id, exp_id, client.get_experiment(exp_id).name


class MlflowTracker(Tracker):
    def __init__(self, r: Recipe, run_dir: Path, first_epoch: int) -> None:
        super().__init__(run_dir)
        uri = mlflow_uri(r)
        self.uri, self.experiment = uri, r.train.mlflow_experiment or r.name
        self.client = mlflow_client(uri)
        saved = read_tracking(run_dir).get("mlflow", {})
        if saved.get("tracking_uri") == uri and saved.get("run_id"):  # a resume continues its MLflow run
            self.run_id, self.experiment = saved["run_id"], saved.get("experiment", self.experiment)
            self.client.update_run(self.run_id, status="RUNNING")
            self.monitor = system_monitor(self.run_id, uri, resumed=True)
            return
        tags = {"cnnlab.run_dir": str(run_dir.resolve()), "cnnlab.task": r.task, **run_tags(r)}
        parent = _parent(self.client, uri)
        if parent is not None:  # a run of a study: in the study's experiment, under its parent run
            tags[PARENT_TAG], exp_id, self.experiment = parent
        else:
            exp_id = experiment_id(self.client, self.experiment, uri)
        self.run_id = self.client.create_run(exp_id, run_name=run_dir.name, tags=tags).info.run_id
        log_params(self.client, self.run_id, flatten(asdict(r)))
        write_tracking(run_dir, {"tracking_uri": uri, "run_id": self.run_id, "experiment_id": exp_id,
                                 "experiment": self.experiment, "parent_run_id": tags.get(PARENT_TAG)})
        self.monitor = system_monitor(self.run_id, uri, resumed=False)

    def _log(self, values: dict[str, float], step: int) -> None:
        log_metrics(self.client, self.run_id, values, step)

    def epoch(self, epoch: int, row: dict) -> None:
        self._log({scalar_tag(k): v for k, v in row.items() if k != "epoch"}, epoch)  # TensorBoard's names

    def steps(self, losses: list[tuple[int, float]]) -> None:
        from mlflow.entities import Metric  # optional extra cnnlab[mlflow]

        ms = int(time.time() * 1000)
        metrics = [Metric(STEP_LOSS_TAG, float(v), ms, step) for step, v in losses if number(v)]
        for i in range(0, len(metrics), 1000):  # one batch per epoch: a write per step would slow sqlite runs
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def finish(self, run_dir: Path, summary: dict, step: int) -> None:
        self._log(final_scalars(summary), step)
        log_artifacts(self.client, self.run_id, run_dir)
        log_model(self.client, self.run_id, run_dir)

    def close(self, status: str) -> None:
        if self.monitor is not None:  # its last samples are written before the run ends
            self.monitor.finish()
        state = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        # events.jsonl is complete only now (its "end" line); a stopped run also keeps the epochs it finished
        for name in (EVENTS,) if status == "finished" else (EVENTS, METRICS):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, state)

    def describe(self) -> str:
        view = f" (view: mlflow ui --backend-store-uri {shlex.quote(self.uri)})" if self.uri.startswith(
            ("sqlite:", "file:", "/")) else ""
        return f"mlflow: logging to run {self.run_id} in experiment '{self.experiment}' at {self.uri}{view}"


def log_artifacts(client, run_id: str, run_dir: Path) -> None:
    """The run's files and figures that exist now, as artifacts of its MLflow run."""
    for name in ARTIFACTS:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    if (run_dir / FIGURES).is_dir():
        client.log_artifacts(run_id, str(run_dir / FIGURES), "figures")


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker, "wandb": WandbTracker}


def open_trackers(r: Recipe, run_dir: Path, first_epoch: int) -> list[Tracker]:
    """The trackers train.log_to asks for; first_epoch: epochs already done (a resume)."""
    try:
        check_trackers(r.train.log_to)  # a resume skips the recipe check: refuse a missing extra here too
    except ConfigError as e:  # trackers may change on resume: say how to go on without the missing one
        keep = [n for n in r.train.log_to if importlib.util.find_spec(TRACKER_EXTRAS[n][0]) is not None]
        command = f"cnnlab train --resume {shlex.quote(str(run_dir))} --set 'train.log_to={json.dumps(keep)}'"
        raise ConfigError(e.message, f"{e.hint.split(', or ')[0]}, or resume without it: {command}") from None
    return [TRACKERS[name](r, run_dir, first_epoch) for name in dict.fromkeys(r.train.log_to)]


def log_report(run_dir: Path) -> None:
    """After `cnnlab train` wrote report.html: add it (and report.md) to the run's MLflow run, if it has one."""
    saved = read_tracking(Path(run_dir)).get("mlflow")
    if not saved:
        return
    client = mlflow_client(saved["tracking_uri"])
    for name in ("report.html", "report.md"):
        if (Path(run_dir) / name).is_file():
            client.log_artifact(saved["run_id"], str(Path(run_dir) / name))
