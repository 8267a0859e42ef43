"""Run a study's plan: stages first, then every run seed by seed, resumably; failures recorded, the rest go on.

The study file format and the rules for names and overrides are in cnnlab.study.plan.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from cnnlab.engine.fit import console
from cnnlab.engine.run import Interrupted
from cnnlab.engine.rundir import new_run_dir
from cnnlab.errors import CnnlabError
from cnnlab.study.parallel import ProcessBackend, schedule
from cnnlab.study.plan import StudyPlan, load_study, plan_to_dict, read_failures, read_plan
from cnnlab.study.ray_runner import import_ray, ray_backend, ray_session
from cnnlab.study.table import print_study_table, write_study_table
from cnnlab.study.worker import execute_one


def _execute(study_dir: Path, plan: StudyPlan, workers: int | None = None, ray: str | None = None,
             retries: int = 2) -> Path:
    """Every planned run; failures are recorded and the study goes on. Ends with the table.

    One run after another in this process by default; `workers` > 1 or `ray` (an address, '' for a Ray started
    here) hands the runs to cnnlab.study.parallel's scheduler instead (under Ray, `workers` caps the runs at once;
    None: as many as the resources allow).
    """
    if ray is not None or (workers or 1) > 1:
        return _execute_parallel(study_dir, plan, workers, ray, retries)
    stage_best: dict[str, Path] = {}
    failures = read_failures(study_dir)
    for i, run in enumerate(plan.runs):
        console.rule(f"study {plan.name}: run {i + 1}/{len(plan.runs)}  {run.name}")
        try:
            run_dir = execute_one(run, study_dir, stage_best)
            failures.pop(run.name, None)
            if run.kind == "stage":
                stage_best[run.group] = run_dir / "best.pt"
        except Interrupted:
            raise CnnlabError(f"study interrupted during {run.name}",
                              f"resume with: cnnlab study --resume {study_dir}") from None
        except CnnlabError as e:
            failures[run.name] = e.line()
            console.print(f"[red]{run.name} failed:[/red] {e.line()} (the study goes on)")
        (study_dir / "failures.json").write_text(json.dumps(failures, indent=1))
    print_study_table(write_study_table(study_dir))
    console.print(f"study folder: {study_dir}")
    return study_dir


def _check_executor(workers: int | None, retries: int, ray: str | None) -> None:
    """Before the study folder exists."""
    if ray is not None:
        import_ray()
    if workers is not None and workers < 1:
        raise CnnlabError(f"--workers must be 1 or more, got {workers}", "e.g. cnnlab study STUDY.yaml --workers 2")
    if retries < 0:
        raise CnnlabError(f"--retries must be 0 or more, got {retries}", "e.g. cnnlab study STUDY.yaml --retries 2")


def _execute_parallel(study_dir: Path, plan: StudyPlan, workers: int | None, ray: str | None, retries: int) -> Path:
    """The runs through worker processes or Ray tasks (same runs, same folder layout, same table)."""
    if ray is None:
        schedule(study_dir, plan, ProcessBackend(study_dir, workers, retries))
    else:
        schedule(study_dir, plan, ray_backend(study_dir, plan, ray, workers, retries))
    print_study_table(write_study_table(study_dir))
    console.print(f"study folder: {study_dir}")
    return study_dir


def run_study(path: str | Path, sets: list[str] | None = None, out: str | Path | None = None,
              workers: int | None = None, ray: str | None = None, retries: int = 2) -> Path:
    """Start a new study folder (never overwriting one) under `out` (default: the study's own) and run everything
    in it; returns the folder. workers/ray/retries: see _execute."""
    _check_executor(workers, retries, ray)
    plan = load_study(path, sets)
    with ray_session(ray, plan, workers):
        study_dir = new_run_dir(out if out is not None else plan.out, plan.name)
        shutil.copyfile(path, study_dir / "study.yaml")
        (study_dir / "plan.json").write_text(json.dumps(plan_to_dict(plan), indent=1))
        return _execute(study_dir, plan, workers, ray, retries)


def resume_study(study_dir: str | Path, workers: int | None = None, ray: str | None = None,
                 retries: int = 2) -> Path:
    """Continue a study from its plan.json: finished runs are kept, interrupted ones resumed, the rest started."""
    _check_executor(workers, retries, ray)
    study_dir = Path(study_dir)
    plan = read_plan(study_dir)
    with ray_session(ray, plan, workers):
        return _execute(study_dir, plan, workers, ray, retries)
