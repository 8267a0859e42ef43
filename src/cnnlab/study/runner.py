"""Run a study's plan: stages first, then every run seed by seed, resumably; failures recorded, the rest go on.

The study file format and the rules for names and overrides are in cnnlab.study.plan.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from cnnlab.engine.progress import EVENT_HOOKS, HEADERS
from cnnlab.engine.run import Interrupted
from cnnlab.engine.run_files import BEST, has_summary
from cnnlab.engine.rundir import new_run_dir
from cnnlab.errors import CnnlabError
from cnnlab.logs import get_logger
from cnnlab.study.mlflow_parent import study_parent_run, study_store
from cnnlab.study.parallel import ProcessBackend, Progress, schedule
from cnnlab.study.plan import StudyPlan, find_run_dir, load_study, plan_to_dict, read_failures, read_plan
from cnnlab.study.ray_runner import import_ray, ray_backend, ray_session
from cnnlab.study.table import print_study_table, write_study_table
from cnnlab.study.worker import StudyInterrupted, execute_one

log = get_logger(__name__)


def _execute(study_dir: Path, plan: StudyPlan, workers: int | None = None, ray: str | None = None,
             retries: int = 2) -> Path:
    """Every planned run; failures are recorded and the study goes on. Ends with the table.

    One run after another in this process by default; `workers` > 1 or `ray` (an address, '' for a Ray started
    here) hands the runs to cnnlab.study.parallel's scheduler instead (under Ray, `workers` caps the runs at once;
    None: as many as the resources allow). Where the runs log to MLflow, the study is their parent run.
    """
    with study_parent_run(study_dir, plan):
        if ray is not None or (workers or 1) > 1:
            _execute_parallel(study_dir, plan, workers, ray, retries)
        else:
            _execute_sequential(study_dir, plan)
        print_study_table(write_study_table(study_dir))
    log.info(f"study folder: {study_dir}")
    return study_dir


@contextlib.contextmanager
def _live_view(plan: StudyPlan, progress: Progress, position: list[int]) -> Iterator[None]:
    """The study's line above the running run's bars (run i of N, its epoch, the study's ETA), fed by the run's
    events (cnnlab.engine.progress's hooks: the run's bars are the one live display)."""
    def header() -> str:
        return (f"study {plan.name}: run {position[0] + 1}/{len(plan.runs)} "
                f"{progress.line(time.time(), len(plan.runs) - position[0] - 1)}")

    def on_event(row: dict) -> None:
        for name in progress.running:
            progress.on_event(name, row)

    HEADERS.append(header)
    EVENT_HOOKS.append(on_event)
    try:
        yield
    finally:
        HEADERS.remove(header)
        EVENT_HOOKS.remove(on_event)


def _execute_sequential(study_dir: Path, plan: StudyPlan) -> None:
    """One run after another in this process: a plain line as each starts and ends ([done, failed, running; ETA]),
    on a terminal the same line live above the run's progress bars."""
    stage_best: dict[str, Path] = {}
    failures = read_failures(study_dir)
    progress, position = Progress(len(plan.runs), 1), [0]
    with _live_view(plan, progress, position):
        for i, run in enumerate(plan.runs):
            position[0], pending = i, len(plan.runs) - i - 1
            kept = find_run_dir(study_dir / "runs", run.name)
            fresh = kept is None or not has_summary(kept)
            if fresh:
                progress.running[run.name] = time.time()
                progress.event(f"started {run.name} (run {i + 1}/{len(plan.runs)})", pending)
            try:
                run_dir = execute_one(run, study_dir, stage_best)
                failures.pop(run.name, None)
                if run.kind == "stage":
                    stage_best[run.group] = run_dir / BEST
                _ended(progress, run.name, None, pending)
            except Interrupted:
                raise StudyInterrupted(f"study interrupted during {run.name}",
                                       f"resume with: cnnlab study --resume {study_dir}") from None
            except CnnlabError as e:
                failures[run.name] = e.line()
                _ended(progress, run.name, e.line(), pending)
            (study_dir / "failures.json").write_text(json.dumps(failures, indent=1))


def _ended(progress: Progress, name: str, error: str | None, pending: int) -> None:
    """Count a run's outcome (a run kept from earlier counts as done and took no time now) and say it."""
    started = progress.running.pop(name, None)
    if error is not None:
        progress.failed += 1
        progress.event(f"{name} FAILED: {error} (the study goes on)", pending)
        return
    progress.done += 1
    if started is not None:
        progress.durations.append(time.time() - started)
        progress.event(f"{name} done", pending)


def _check_executor(workers: int | None, retries: int, ray: str | None) -> None:
    """Before the study folder exists."""
    if ray is not None:
        import_ray()
    if workers is not None and workers < 1:
        raise CnnlabError(f"--workers must be 1 or more, got {workers}", "e.g. cnnlab study STUDY.yaml --workers 2")
    if retries < 0:
        raise CnnlabError(f"--retries must be 0 or more, got {retries}", "e.g. cnnlab study STUDY.yaml --retries 2")


def _execute_parallel(study_dir: Path, plan: StudyPlan, workers: int | None, ray: str | None, retries: int) -> None:
    """The runs through worker processes or Ray tasks (same runs, same folder layout, same table)."""
    if ray is None:
        schedule(study_dir, plan, ProcessBackend(study_dir, workers, retries))
    else:
        schedule(study_dir, plan, ray_backend(study_dir, plan, ray, workers, retries))


def run_study(path: str | Path, sets: list[str] | None = None, out: str | Path | None = None,
              workers: int | None = None, ray: str | None = None, retries: int = 2) -> Path:
    """Start a new study folder (never overwriting one) under `out` (default: the study's own) and run everything
    in it; returns the folder. workers/ray/retries: see _execute."""
    _check_executor(workers, retries, ray)
    plan = load_study(path, sets)
    study_store(Path(out if out is not None else plan.out) / plan.name, plan)  # one MLflow store, before the folder
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
