"""One run of a study, as any executor runs it: in the study process (sequential), in a worker process
(`--workers N`) or in a Ray task (`--ray`).

Everything a run needs is read from the study folder (plan.json, the finished stages' run dirs), so a worker needs
nothing from the process that scheduled it but the folder's path and the run's name; that is also why the folder
must be on a path every Ray node sees. Skip, resume or start is decided here from what the folder holds, so a
retry after a dead worker continues from the run's last.pt (cnnlab.engine.run.resume, exact). The study's MLflow
parent run, when it has one, is read from the folder too (STUDY_DIR/tracking.json, cnnlab.study.mlflow_parent).
"""
from __future__ import annotations

import contextlib
import copy
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import Interrupted, resume, train
from cnnlab.engine.run_files import BEST, LAST, has_summary
from cnnlab.engine.tracking import nested_under, read_tracking
from cnnlab.errors import CnnlabError
from cnnlab.logs import get_logger
from cnnlab.study.plan import STAGE_REF, PlannedRun, StudyPlan, find_run_dir, read_plan

log = get_logger(__name__)
DONE, FAILED, DIED, INTERRUPTED = "done", "failed", "died", "interrupted"  # a worker's outcome for one run


class StudyInterrupted(CnnlabError):
    """Ctrl-C (or SIGTERM) stopped the study; finished runs are kept and `cnnlab study --resume` continues it."""


def stage_needs(plan: StudyPlan, run: PlannedRun) -> list[str]:
    """The stages this run takes an output of that come before it in the plan (the sequential order: a reference to
    a later stage, or to itself, finds it unfinished and fails, in every executor alike)."""
    before = {r.group for r in plan.runs[:plan.runs.index(run)] if r.kind == "stage"}
    return [s for s in dict.fromkeys(STAGE_REF.findall(" ".join(run.overrides))) if s in before]


def stage_missing_error(stage: str) -> CnnlabError:
    """The failure of a run whose stage did not finish (one wording for every executor)."""
    return CnnlabError(f"needs stage '{stage}', which did not finish", "see that stage's failure")


def execute_one(run: PlannedRun, study_dir: Path, stage_best: dict[str, Path], threads: int = 0) -> Path:
    """Skip, resume or start one run; raises CnnlabError when it fails.

    threads: train.threads for a run started now whose recipe leaves it at 0 (several runs share the cores); a
    resumed run keeps the recipe saved in its checkpoint.
    """
    existing = find_run_dir(study_dir / "runs", run.name)
    if existing is not None and has_summary(existing):
        log.info(f"{run.name}: finished earlier ({existing.name}); skipped")
        return existing
    tags = {f"cnnlab.{run.kind}": run.group, "cnnlab.seed": run.seed,
            "cnnlab.grid": ", ".join(f"{k}={v}" for k, v in run.grid.items()) or "-"}
    with nested_under(read_tracking(study_dir).get("mlflow", {}).get("run_id"), tags):  # the study's parent run
        if existing is not None and (existing / LAST).is_file():
            return resume(existing)
        return _start(run, study_dir, stage_best, threads)


def _start(run: PlannedRun, study_dir: Path, stage_best: dict[str, Path], threads: int) -> Path:
    """A new run dir for `run`, its stage references resolved."""
    missing = [ref for ref in STAGE_REF.findall(" ".join(run.overrides)) if ref not in stage_best]
    if missing:
        raise stage_missing_error(missing[0])
    sets = [STAGE_REF.sub(lambda m: str(stage_best[m.group(1)]), s) for s in run.overrides]
    raw = {**copy.deepcopy(run.raw), "name": run.name, "out": str(study_dir / "runs")}
    recipe = recipe_from_dict(raw, sets)
    if threads and not recipe.train.threads:
        recipe = recipe_from_dict(copy.deepcopy(raw), [*sets, f"train.threads={threads}"])
    return train(recipe)


def finished_stages(study_dir: Path, plan: StudyPlan, run: PlannedRun) -> dict[str, Path]:
    """Stage name -> best.pt of each stage before `run` that has finished (summary.json in its run dir)."""
    out = {}
    for r in plan.runs[:plan.runs.index(run)]:
        d = find_run_dir(study_dir / "runs", r.name) if r.kind == "stage" else None
        if d is not None and has_summary(d):
            out[r.group] = d / BEST
    return out


def log_path(study_dir: Path, name: str) -> Path:
    """Where a worker writes one run's console output (all its attempts, appended)."""
    return Path(study_dir) / "logs" / f"{name}.log"


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors included) to `path` for the block, then restore
    them: several runs printing epoch lines to one terminal at once are unreadable, and a Ray worker process is
    reused for the next task."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    old = sys.stdout, sys.stderr
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
        try:
            yield
        finally:
            log.flush()
            sys.stdout, sys.stderr = old
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_one(study_dir: str, name: str, threads: int = 0) -> tuple[str, str]:
    """In a worker: one planned run of the study at `study_dir`, output to STUDY_DIR/logs/NAME.log.

    Returns (DONE, run dir) or (FAILED | INTERRUPTED, one line); never raises for a run's own failure, so that the
    scheduler sees failures as outcomes and a dead worker as the absence of one.
    """
    folder = Path(study_dir)
    if not (folder / "plan.json").is_file():
        return FAILED, (f"worker {socket.gethostname()} cannot see the study folder {folder} (no plan.json there) — "
                        "put the study folder on a path every node mounts: cnnlab study STUDY.yaml --ray ADDRESS "
                        "--out SHARED_FOLDER")
    with output_to(log_path(folder, name)):
        print(f"== {name}: started {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}, "
              f"process {os.getpid()}", flush=True)
        try:
            plan = read_plan(folder)
            run = next(r for r in plan.runs if r.name == name)
            run_dir = execute_one(run, folder, finished_stages(folder, plan, run), threads)
            return DONE, str(run_dir)
        except Interrupted as e:
            print(e.line())
            return INTERRUPTED, e.line()
        except KeyboardInterrupt:
            print("interrupted before training began")
            return INTERRUPTED, "interrupted before training began"
        except CnnlabError as e:
            print(e.line())
            return FAILED, e.line()
        except Exception as e:  # noqa: BLE001 — a bug or an out-of-memory in one run must not end the others
            traceback.print_exc()
            first = (str(e).strip().splitlines() or [""])[0]
            return FAILED, f"{type(e).__name__}: {first} (traceback in {log_path(folder, name)})"
