"""cnnlab's commands as Python functions: train, resume, new_recipe (`cnnlab new`), run_study (`cnnlab study`).
The CLI commands call these same functions (cli/train.py, cli/data.py, cli/study.py), so a run trained from a
notebook and one from a shell cannot differ: same checks, same run dir, same report.

Overrides: a recipe key is a dotted name as in `--set` (`train.epochs`); as a Python keyword write the dots as
double underscores (`train__epochs=2`) or pass a dict (`**{"train.epochs": 2}`). Values are Python values (not
YAML text); `sets` takes `--set` strings as the CLI does.

Why new_recipe and run_study, not new and study: cnnlab.new and cnnlab.study are the subpackages behind those
commands; a function of the same name on the package would shadow them (`import cnnlab.new.recipe as nr` fails
once the attribute is a function).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cnnlab.api.run import Run
from cnnlab.config import Recipe, apply_overrides, asdict, load_recipe, read_yaml, recipe_from_dict
from cnnlab.engine import run as engine_run  # called through the module: tests stand in for engine_run.train
from cnnlab.engine.distributed import is_main, shutdown
from cnnlab.engine.recipe_check import check_recipe
from cnnlab.engine.run_files import has_config, has_summary
from cnnlab.engine.tracker_check import check_tracking_store
from cnnlab.engine.tracking import log_report
from cnnlab.errors import ConfigError
from cnnlab.logs import append_printed_to_run_log, append_to_run_log, begin_run_log
from cnnlab.new.own import OwnData
from cnnlab.new.recipe import NewRecipe, make_recipe
from cnnlab.report.build import write_run_report, write_study_report
from cnnlab.report.tables import print_run_table
from cnnlab.study.mlflow_parent import log_study_report
from cnnlab.study.runner import resume_study
from cnnlab.study.runner import run_study as run_study_plan

RecipeLike = str | Path | Recipe | dict


def dotted(key: str) -> str:
    """`train__epochs` -> `train.epochs` (a dotted key passes unchanged)."""
    return key.replace("__", ".")


def _set(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = dotted(key).split(".")
    for part in parts[:-1]:
        if not isinstance(node.setdefault(part, {}), dict):
            raise ConfigError(f"override '{dotted(key)}': '{part}' is not a section")
        node = node[part]
    node[parts[-1]] = value


def resolve_recipe(recipe: RecipeLike, sets: Iterable[str] = (), **settings: Any) -> Recipe:
    """A checked Recipe from a recipe file, a Recipe, or a raw mapping (as in YAML), with `--set` strings and
    keyword overrides applied in that order."""
    if isinstance(recipe, (str, Path)) and not sets and not settings:
        return load_recipe(recipe)
    if isinstance(recipe, (str, Path)):
        raw = read_yaml(recipe)
    elif isinstance(recipe, Recipe):
        raw = asdict(recipe)
    elif isinstance(recipe, dict):
        raw = copy.deepcopy(recipe)
    else:
        raise ConfigError(f"cannot train a {type(recipe).__name__}",
                          "give a recipe file path, a cnnlab Recipe, or a dict shaped like a recipe YAML")
    raw = apply_overrides(raw, list(sets))
    for key, value in settings.items():
        _set(raw, key, value)
    return recipe_from_dict(raw)


def train(recipe: RecipeLike, sets: Iterable[str] = (), progress: bool | None = None, report: bool = True,
          **settings: Any) -> Run:
    """Train a recipe (a YAML path, a Recipe or a dict) and return the finished Run: the same run dir as
    `cnnlab train` writes, report.md/html included (report=False leaves the report out).

    progress: None follows the recipe's train.progress; False turns the bars and epoch lines off (notes and warnings
    still show; train.log in the run dir has every line); True shows them (rich renders them in Jupyter too).
    Example: `cnnlab.train("recipes/endovis/a_baseline.yaml", train__epochs=2, data__root="data/endovis")`.
    """
    begin_run_log()
    if progress is not None:
        settings = {**settings, "train.progress": bool(progress)}
    r = resolve_recipe(recipe, sets, **settings)
    return Run(train_recipe(r, echo=r.train.progress, report=report))


def train_recipe(r: Recipe, echo: bool, report: bool = True) -> Path:
    """The one way a recipe is trained, by `cnnlab train` and cnnlab.train: check it (names, memory) before any
    data is read, train, then the run's table (echo) and report; returns the run dir."""
    check_recipe(r)
    check_tracking_store(r)  # an MLflow server that does not answer, a read-only store: before any run dir
    return _finish(engine_run.train(r), echo, report)


def resume(run_dir: str | Path, sets: Iterable[str] = (), progress: bool | None = None, report: bool = True,
           **settings: Any) -> Run:
    """Continue an interrupted run from its last.pt (`cnnlab train --resume`); only train.epochs, train.patience,
    train.progress, data.cache, data.cache_dir, train.log_to and train.mlflow_uri may change."""
    begin_run_log()
    overrides = list(sets) + [f"{dotted(k)}={v}" for k, v in settings.items()]
    if progress is not None:
        overrides.append(f"train.progress={str(bool(progress)).lower()}")
    # None: the run's own train.progress, as for a new run
    echo = progress if progress is not None else (not has_config(run_dir) or Run(run_dir).recipe.train.progress)
    return Run(resume_run(Path(run_dir), overrides, echo=echo, report=report))


def _tables_to_log(run_dir: Path) -> None:
    """The final tables into the run's train.log too (plain text, wide enough for whole class names): it holds
    every line of the run, these are printed after its log closed."""
    if not has_summary(run_dir):
        return
    append_printed_to_run_log(run_dir, lambda console: print_run_table(run_dir, console))


def resume_run(run_dir: Path, overrides: list[str], echo: bool, report: bool = True) -> Path:
    """The one way a run is resumed, by `cnnlab train --resume` and cnnlab.resume; returns the run dir."""
    return _finish(engine_run.resume(run_dir, overrides), echo, report)


def _finish(run_dir: Path, echo: bool, report: bool) -> Path:
    """After training (rank 0): the metrics table (echo), report.md/html (and to MLflow where tracked)."""
    if is_main():
        if echo:
            print_run_table(run_dir)
        _tables_to_log(run_dir)
        if report:
            path = write_run_report(run_dir)
            if echo:
                print(f"report: {path}")
            append_to_run_log(run_dir, f"report: {path}")  # train.log holds every line the run printed
            log_report(run_dir)
    shutdown()
    return run_dir


def free_recipe_path(folder: Path, stem: str = "recipe") -> Path:
    """folder/recipe.yaml, or recipe-2.yaml, -3 ... where taken: new never overwrites a recipe."""
    path, i = folder / f"{stem}.yaml", 2
    while path.exists():
        path, i = folder / f"{stem}-{i}.yaml", i + 1
    return path


def new_recipe(images: str | Path, masks: str | Path | None = None, out: str | Path | None = None, *,
        task: str = "segmentation", minutes: float = 15.0, encoder: str = "auto", name: str | None = None,
        fov: str | Path | None = None, own: OwnData | None = None, progress: bool = True) -> Recipe:
    """`cnnlab new`: write a commented recipe for your image and mask folders (classification: a folder of class
    folders, masks None), sized for `minutes` of training on this machine, and return it loaded.

    out: the recipe file (never overwritten; default ./recipe.yaml, else recipe-2.yaml ...). own: void values,
    class names, hand-named splits and the scene (cnnlab.new.own.OwnData). progress: print what was written and
    chosen (the lines `cnnlab new` prints)."""
    path = Path(out) if out is not None else free_recipe_path(Path.cwd())
    made = make_recipe(task, images, masks, path, fov=fov, name=name, encoder=encoder, minutes=minutes,
                       own=own or OwnData())
    if progress:
        print("\n".join(new_lines(made)))
    return load_recipe(made.path)


def new_lines(made: NewRecipe) -> list[str]:
    """What `cnnlab new` says: the recipe written, the model, the size and the time estimate."""
    est = made.estimate
    lines = [f"wrote {made.path}; train it with: cnnlab train {made.path}", f"model: {made.model.why}"]
    if made.model.decoder_why:
        lines.append(f"decoder: {made.model.decoder_why}")
    lines.append(f"size {made.size.size[0]}x{made.size.size[1]}: {made.size.why()}")
    if made.resolution:
        lines.append(f"resolution: {made.resolution}")
    lines.append(f"estimated training time on this machine: {est.total_line()}; {est.epoch_line()}; early stopping "
                 "may end sooner")
    return lines


def run_study(path: str | Path | None = None, sets: Iterable[str] = (), out: str | Path | None = None,
          workers: int | None = None, ray: str | None = None, retries: int = 2, resume: str | Path | None = None,
          report: bool = True) -> Path:
    """`cnnlab study`: run every variant x grid point x seed of a study YAML (or resume=STUDY_DIR), then its
    table and report; returns the study folder (table.md, table.csv, study.json, report.html).
    workers: runs at once on this machine; ray: "" (Ray here) or a cluster address; retries: see the CLI."""
    if resume is not None:
        if path is not None or list(sets) or out is not None:
            # the plan (study file and --set values) is frozen in the study folder; changing it mid-way would mix
            # runs of two different studies in one table
            raise ConfigError("cnnlab study --resume takes only the study folder",
                              "its plan.json already holds the study file and the --set values; --out is its folder")
        study_dir = resume_study(Path(resume), workers, ray, retries)
    elif path is not None:
        study_dir = run_study_plan(Path(path), list(sets), out, workers, ray, retries)
    else:
        raise ConfigError("cnnlab study needs a STUDY_YAML or --resume STUDY_DIR")
    if report:
        print(f"report: {write_study_report(study_dir)}")
        log_study_report(study_dir)  # to the study's MLflow parent run, when it has one
    return study_dir
