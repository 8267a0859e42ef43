"""A study as one MLflow parent run, its runs nested under it (when its runs log to mlflow: train.log_to).

Why: in the MLflow UI a study of 17 runs is otherwise 17 unrelated experiments (a run's experiment is named like
its recipe, and each study run has its own name). Here the study gets one experiment (named like the study) and
one parent run in it: params = what the study varies (variants, their overrides, seeds, grid, stages); metrics =
the study table's mean and std per variant (and grid point) at the end; artifacts = the study's table files and
report. Every run of the study is a child (tag mlflow.parentRunId) in the same experiment.

How the runs learn the parent: STUDY_DIR/tracking.json holds it (as a run dir's tracking.json holds its run), and
cnnlab.study.worker.execute_one, which every executor calls (this process, `--workers` processes, Ray tasks),
sets $CNNLAB_MLFLOW_PARENT_RUN_ID from it around the run (cnnlab.engine.tracking.nested_under). A resumed study
continues its parent run. One store per study: runs that would log to different stores are refused up front.
"""
from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path

from cnnlab.config import Recipe, recipe_from_dict
from cnnlab.engine.tracking import (
    experiment_id,
    log_metrics,
    log_params,
    mlflow_client,
    mlflow_uri,
    read_tracking,
    write_tracking,
)
from cnnlab.errors import ConfigError
from cnnlab.study.plan import STAGE_REF, StudyPlan
from cnnlab.study.worker import StudyInterrupted

STUDY_FILES = ("study.yaml", "plan.json", "failures.json", "study.json", "table.md", "table.csv")
REPORT_FILES = ("report.md", "report.html")


def _recipes(study_dir: Path, plan: StudyPlan) -> list[Recipe]:
    """Every run's recipe as execute_one will build it (stage outputs as placeholders: only train.* is read)."""
    out = []
    for run in plan.runs:
        sets = [STAGE_REF.sub(lambda m: f"stage-{m.group(1)}-best.pt", s) for s in run.overrides]
        raw = {**copy.deepcopy(run.raw), "name": run.name, "out": str(Path(study_dir) / "runs")}
        out.append(recipe_from_dict(raw, sets))
    return out


def study_store(study_dir: Path, plan: StudyPlan) -> str | None:
    """The MLflow tracking URI the study's runs log to; None when none logs to mlflow."""
    uris = sorted({mlflow_uri(r) for r in _recipes(study_dir, plan) if "mlflow" in r.train.log_to})
    if len(uris) > 1:
        raise ConfigError(f"the study's runs would log to {len(uris)} MLflow stores ({', '.join(uris)}); a study is "
                          "one parent run in one store",
                          f"give every run the same store: cnnlab study {plan.source} --set train.mlflow_uri={uris[0]}")
    return uris[0] if uris else None


def study_params(plan: StudyPlan) -> dict[str, str]:
    """What the study varies, as the parent run's params: its variants with their own overrides, seeds, grid,
    stages, baseline, metric and the study-wide --set values."""
    params = {"study.name": plan.name, "study.file": plan.source, "study.runs": len(plan.runs),
              "study.variants": json.dumps(plan.variants), "study.baseline": plan.baseline,
              "study.seeds": json.dumps(plan.seeds), "study.grid": json.dumps(plan.grid),
              "study.stages": json.dumps(plan.stages), "study.metric": plan.metric or "",
              "study.evaluate": plan.evaluate, "study.set": json.dumps(plan.sets)}
    for run in plan.runs:
        key = f"{run.kind}.{run.group}.set"
        if key not in params:  # the first run of a variant: its overrides without the grid point and the seed
            extra = {f"{k}={json.dumps(v)}" for k, v in run.grid.items()} | {f"train.seed={run.seed}"}
            params[key] = json.dumps([o for o in run.overrides if o not in extra])
    return params


def _open(client, uri: str, study_dir: Path, plan: StudyPlan) -> str:
    """The study's parent run: the one tracking.json remembers (a resume), else a new one."""
    saved = read_tracking(study_dir).get("mlflow", {})
    if saved.get("tracking_uri") == uri and saved.get("run_id"):
        client.update_run(saved["run_id"], status="RUNNING")
        return saved["run_id"]
    exp_id = experiment_id(client, plan.name, uri)
    run_id = client.create_run(exp_id, run_name=plan.name, tags={
        "cnnlab.study_dir": str(Path(study_dir).resolve()), "cnnlab.kind": "study"}).info.run_id
    log_params(client, run_id, study_params(plan))
    write_tracking(study_dir, {"tracking_uri": uri, "run_id": run_id, "experiment_id": exp_id,
                               "experiment": plan.name})
    return run_id


def table_metrics(study_dir: Path) -> dict[str, float]:
    """The study table (study.json) as the parent's metrics: '<variant>[/<grid point>]/<metric>_mean' and _std."""
    path = Path(study_dir) / "study.json"
    out: dict[str, float] = {}
    for row in json.loads(path.read_text())["rows"] if path.is_file() else []:
        name = row["variant"] + (f"/{row['label']}" if row.get("label") else "")
        for metric, stat in row["stats"].items():
            for what in ("mean", "std"):
                if isinstance(stat.get(what), (int, float)):
                    out[f"{name}/{metric}_{what}"] = float(stat[what])
    return out


def _log_files(client, run_id: str, study_dir: Path, names: tuple[str, ...]) -> None:
    for name in names:
        if (Path(study_dir) / name).is_file():
            client.log_artifact(run_id, str(Path(study_dir) / name))


@contextlib.contextmanager
def study_parent_run(study_dir: Path, plan: StudyPlan) -> Iterator[str | None]:
    """The block runs the study under its parent run (its id, or None when no run logs to mlflow); at the end the
    table's numbers and files go to the parent, which ends FINISHED, KILLED (Ctrl-C) or FAILED."""
    uri = study_store(study_dir, plan)
    if uri is None:
        yield None
        return
    client = mlflow_client(uri)
    run_id = _open(client, uri, study_dir, plan)
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    except (StudyInterrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        log_metrics(client, run_id, table_metrics(study_dir), 0)
        _log_files(client, run_id, study_dir, STUDY_FILES)
        client.set_terminated(run_id, status)


def log_study_report(study_dir: Path) -> None:
    """After `cnnlab study` wrote the study report: report.md and report.html to the parent run, if it has one."""
    saved = read_tracking(Path(study_dir)).get("mlflow")
    if saved:
        _log_files(mlflow_client(saved["tracking_uri"]), saved["run_id"], Path(study_dir), REPORT_FILES)
