"""Run a study's plan: stages first, then every run seed by seed, resumably; failures recorded, the rest go on.

The study file format and the rules for names and overrides are in cnnlab.study.plan.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from cnnlab.config import recipe_from_dict
from cnnlab.engine.fit import console
from cnnlab.engine.run import Interrupted, resume, train
from cnnlab.engine.rundir import new_run_dir
from cnnlab.errors import CnnlabError
from cnnlab.study.plan import (
    STAGE_REF,
    PlannedRun,
    StudyPlan,
    find_run_dir,
    load_study,
    plan_to_dict,
    read_failures,
    read_plan,
)
from cnnlab.study.table import print_study_table, write_study_table


def _execute_one(run: PlannedRun, study_dir: Path, stage_best: dict[str, Path]) -> Path:
    """Skip, resume or start one run; raises CnnlabError when it fails."""
    existing = find_run_dir(study_dir / "runs", run.name)
    if existing is not None and (existing / "summary.json").is_file():
        console.print(f"{run.name}: finished earlier ({existing.name}); skipped")
        return existing
    if existing is not None and (existing / "last.pt").is_file():
        return resume(existing)
    missing = [ref for ref in STAGE_REF.findall(" ".join(run.overrides)) if ref not in stage_best]
    if missing:
        raise CnnlabError(f"needs stage '{missing[0]}', which did not finish", "see that stage's failure")
    sets = [STAGE_REF.sub(lambda m: str(stage_best[m.group(1)]), s) for s in run.overrides]
    raw = {**copy.deepcopy(run.raw), "name": run.name, "out": str(study_dir / "runs")}
    return train(recipe_from_dict(raw, sets))


def _execute(study_dir: Path, plan: StudyPlan) -> Path:
    """Every planned run in order; failures are recorded and the study goes on. Ends with table and report."""
    stage_best: dict[str, Path] = {}
    failures = read_failures(study_dir)
    for i, run in enumerate(plan.runs):
        console.rule(f"study {plan.name}: run {i + 1}/{len(plan.runs)}  {run.name}")
        try:
            run_dir = _execute_one(run, study_dir, stage_best)
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


def run_study(path: str | Path, sets: list[str] | None = None, out: str | Path | None = None) -> Path:
    """Start a new study folder (never overwriting one) under `out` (default: the study's own) and run everything
    in it; returns the folder."""
    plan = load_study(path, sets)
    study_dir = new_run_dir(out if out is not None else plan.out, plan.name)
    shutil.copyfile(path, study_dir / "study.yaml")
    (study_dir / "plan.json").write_text(json.dumps(plan_to_dict(plan), indent=1))
    return _execute(study_dir, plan)


def resume_study(study_dir: str | Path) -> Path:
    """Continue a study from its plan.json: finished runs are kept, interrupted ones resumed, the rest started."""
    study_dir = Path(study_dir)
    return _execute(study_dir, read_plan(study_dir))
