"""Studies: every variant x grid point x seed of one question, run resumably, summarised in one table.

A study YAML (relative paths resolve against the study file's folder, except `out`):

    name: endovis-course-study      # study folder: OUT/NAME-YYYYmmdd-HHMMSS (never reused)
    base: c_tuned.yaml              # the recipe that list-form variants and stages override
    out: studies                    # where study folders go (relative to the current directory)
    seeds: [0, 1, 2]                # each becomes train.seed (which also seeds data.label_fraction's subset,
                                    # so the variants of one seed see the same labelled images: pairs)
    common: ["train.epochs=20"]     # overrides for every run, stages included
    grid: {data.label_fraction: [0.1, 1.0]}   # optional; crossed with variants and seeds
    stages:                         # optional; run once each, before the variants, in this order
      colorize: {recipe: d_colorize.yaml, set: []}
    variants:                       # the first is the baseline unless `baseline:` names another
      baseline: {recipe: a_baseline.yaml}        # mapping: `recipe` (default: base) plus `set` overrides
      tuned: []                                  # list: overrides of `base`
      pretrained: ["model.init={stage:colorize}"]  # {stage:NAME} -> that stage's best.pt
    baseline: baseline              # optional
    metric: dice_mean               # optional: headline metric of the figures (default: first of the task's)
    evaluate: test                  # test: summary 'metrics' (test split, or validation where there is none)
                                    # validation: summary 'validation'
    description: "..."              # optional text for the report
    resources: {cpus: 1, gpus: 0}   # optional: what each run asks Ray for under `--ray` (--set resources.cpus=2)

Overrides of one run apply in this order (later wins): recipe file, `common`, the command line's --set, the
variant's or stage's own overrides, the grid point, then train.seed, name and out set by the study. --set sits
below the variants so that a study-wide change (e.g. data.root) never erases what distinguishes the variants.

Run names are deterministic (`<variant>__<key>=<value>__seed<s>`, stages `stage__<name>`); their folders are
STUDY_DIR/runs/<run name>-<timestamp>. Runs go seed by seed (all variants and grid points of seed 0 first), so
a study stopped early already holds complete pairs. The plan (every run's recipe mapping and overrides) is frozen
in STUDY_DIR/plan.json when the study starts: `--resume` redoes nothing that finished (summary.json present),
continues runs that have a last.pt and starts the rest, whatever happened to the recipe files since. A run that
fails with a CnnlabError (e.g. TrainingDiverged) is recorded in failures.json and the study goes on.

Command line: `cnnlab study STUDY_YAML [--set KEY=VALUE ...] [--out FOLDER] [--workers N] [--ray [ADDRESS]]`,
`cnnlab study --resume STUDY_DIR [--workers N] [--ray [ADDRESS]]` (several runs at once: cnnlab.study.parallel);
the study ends with table.md, table.csv and study.json (cnnlab.study.table) and report.md/report.html
(cnnlab.report.build), which `cnnlab report STUDY_DIR` rewrites at any time, also mid-study.
"""
from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import asdict as dc_asdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cnnlab.config import read_yaml, recipe_from_dict
from cnnlab.engine.recipe_check import check_recipe
from cnnlab.engine.run_files import LAST, SUMMARY
from cnnlab.errors import CnnlabError, ConfigError, did_you_mean
from cnnlab.tasks import task_for

STUDY_KEYS = ("name", "base", "out", "seeds", "common", "grid", "stages", "variants", "baseline", "metric",
              "evaluate", "description", "resources")
RESOURCES = {"cpus": 1, "gpus": 0}  # one run's request to Ray (--ray); the study file's `resources` overrides it
STAGE_REF = re.compile(r"\{stage:([^{}]*)\}")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a study: its recipe mapping and the overrides that make it this run."""

    name: str
    kind: str                # "stage" | "variant"
    group: str               # the stage's or variant's name
    grid: dict
    seed: int | None
    raw: dict                # recipe mapping, base chain resolved, before overrides
    overrides: list[str]     # may contain {stage:NAME}, resolved when the stage has finished


@dataclass(frozen=True)
class StudyPlan:
    """A parsed study: what to run and how to tabulate it."""

    name: str
    source: str
    out: str
    seeds: list[int]
    grid: dict
    stages: list[str]
    variants: list[str]
    baseline: str
    metric: str | None
    evaluate: str
    sets: list[str]
    description: str
    runs: list[PlannedRun]
    resources: dict = field(default_factory=lambda: dict(RESOURCES))  # absent from plans written before --ray

    def grid_points(self) -> list[dict]:
        """Every combination of grid values ({} once when there is no grid)."""
        keys = list(self.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]


def _overrides(value, where: str) -> list[str]:
    """A list of 'key=value' strings (None means none)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ConfigError(f"study key '{where}' must be a list of 'key=value' overrides, got {value!r}",
                          'e.g. ["train.epochs=20"]')
    return list(value)


def _entry(value, where: str, folder: Path, base: dict | None) -> tuple[dict, list[str]]:
    """A variant or stage: a list of overrides of `base`, or {recipe: FILE, set: [...]}."""
    if value is None or isinstance(value, list):
        sets, recipe = _overrides(value, where), None
    elif isinstance(value, dict):
        unknown = set(value) - {"recipe", "set"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"unknown study key '{where}.{key}'", did_you_mean(key, ["recipe", "set"]))
        sets, recipe = _overrides(value.get("set"), f"{where}.set"), value.get("recipe")
    else:
        raise ConfigError(f"study key '{where}' must be a list of overrides or {{recipe: ..., set: [...]}}")
    if recipe is not None:
        return read_yaml(folder / str(recipe)), sets
    if base is None:
        raise ConfigError(f"study key '{where}' names no recipe and the study has no 'base'",
                          "add 'base: RECIPE.yaml' or give the variant a 'recipe'")
    return copy.deepcopy(base), sets


def grid_label(point: dict) -> str:
    """'label_fraction=0.1' for a grid point (last part of each dotted key; full key when parts clash)."""
    shorts = [k.split(".")[-1] for k in point]
    names = shorts if len(set(shorts)) == len(shorts) else [k for k in point]
    parts = []
    for name, v in zip(names, point.values()):
        text = "x".join(map(str, v)) if isinstance(v, list) else str(v)
        parts.append(f"{name}={re.sub(r'[^A-Za-z0-9._-]+', '-', text)}")
    return "__".join(parts)


def run_name(variant: str, point: dict, seed: int) -> str:
    """The deterministic name of one variant run (recipe name and run-folder prefix)."""
    return "__".join([variant, *([grid_label(point)] if point else []), f"seed{seed}"])


def _names(section, where: str) -> dict:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"study key '{where}' must be a mapping of names")
    for name in section:
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or "__" in name:
            raise ConfigError(f"study key '{where}.{name}': names may hold letters, digits, '_', '.', '-' "
                              "(no '__'), as they name run folders")
    return section


def _check_study_keys(raw: dict, path: Path) -> None:
    for key in raw:
        if key not in STUDY_KEYS:
            raise ConfigError(f"{path}: unknown study key '{key}'", did_you_mean(str(key), STUDY_KEYS))
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                          for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: study key 'seeds' must be a list of distinct integers, got {seeds!r}")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{path}: study key 'grid' must map recipe keys to non-empty lists of values",
                          "e.g. grid: {data.label_fraction: [0.1, 1.0]}")
    if raw.get("evaluate", "test") not in ("test", "validation"):
        raise ConfigError(f"{path}: study key 'evaluate' must be test or validation, got {raw['evaluate']!r}")
    if not raw.get("variants"):
        raise ConfigError(f"{path}: a study needs 'variants'", "e.g. variants: {baseline: [], wider: [...]}")
    if "name" in raw and not SAFE_NAME.fullmatch(str(raw["name"])):
        raise ConfigError(f"{path}: study key 'name' names a folder: letters, digits, '_', '.', '-' only")


def load_study(path: str | Path, sets: list[str] | None = None) -> StudyPlan:
    """Parse and check a study YAML; every run's recipe is validated now, not hours into the study."""
    path = Path(path)
    raw = _read_study_yaml(path)
    base_file = raw.get("base")
    _check_study_keys(raw, path)
    folder = path.resolve().parent
    base = read_yaml(folder / base_file) if base_file else None
    resources = _resources(raw.get("resources"), path, [s for s in sets or [] if s.startswith("resources.")])
    sets = [s for s in sets or [] if not s.startswith("resources.")]
    common = _overrides(raw.get("common"), "common") + _overrides(sets, "--set")
    for o in common:  # every run's out is the study's own folder; a recipe-level out would scatter them
        if o.split("=", 1)[0].strip() in ("out", "name"):
            raise ConfigError(f"study override '{o}': a study places and names its runs itself",
                              "use `cnnlab study --out FOLDER` for where the study folder goes")
    seeds, grid = list(raw.get("seeds", [0])), dict(raw.get("grid") or {})
    stages = _names(raw.get("stages"), "stages")
    variants = _names(raw.get("variants"), "variants")
    runs = []
    for name, spec in stages.items():
        rec, own = _entry(spec, f"stages.{name}", folder, base)
        runs.append(PlannedRun(f"stage__{name}", "stage", name, {}, None, rec, common + own))
    entries = {name: _entry(spec, f"variants.{name}", folder, base) for name, spec in variants.items()}
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    for seed, point, (name, (rec, own)) in itertools.product(seeds, points, entries.items()):
        extra = [f"{k}={json.dumps(v)}" for k, v in point.items()] + [f"train.seed={seed}"]
        runs.append(PlannedRun(run_name(name, point, seed), "variant", name, point, seed, rec, common + own + extra))
    baseline = raw.get("baseline", next(iter(variants)))
    if baseline not in variants:
        raise ConfigError(f"{path}: study key 'baseline' names no variant: '{baseline}'", did_you_mean(baseline,
                                                                                                      variants))
    plan = StudyPlan(str(raw.get("name", path.stem)), str(path.resolve()), str(raw.get("out", "studies")), seeds,
                     grid, list(stages), list(variants), baseline, raw.get("metric"), raw.get("evaluate", "test"),
                     list(sets), str(raw.get("description", "")), runs, resources)
    _validate_runs(plan)
    return plan


def _resources(value, path: Path, sets: list[str]) -> dict:
    """One run's Ray request: the study's `resources` mapping, then `--set resources.KEY=N` (why a study key and
    not a recipe key: it says where a run goes, never what it computes, so it must not reach the run's recipe)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: study key 'resources' must be a mapping", "e.g. resources: {cpus: 1, gpus: 0}")
    out = {**RESOURCES, **value}
    for s in sets:
        key, _, text = s.partition("=")
        out[key.strip()[len("resources."):]] = yaml.safe_load(text) if text.strip() else None
    for key, v in out.items():
        if key not in RESOURCES:
            raise ConfigError(f"{path}: unknown study key 'resources.{key}'", did_you_mean(key, list(RESOURCES)))
        low = 0 if key == "gpus" else 1e-9
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < low:
            raise ConfigError(f"{path}: study key 'resources.{key}' must be a number {'>= 0' if low == 0 else '> 0'}"
                              f", got {v!r}", "e.g. resources: {cpus: 1, gpus: 0}")
    return out


def _read_study_yaml(path: Path) -> dict:
    """The study mapping as written (not read_yaml: a study's `base` is a recipe to override, not a parent)."""
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}", "check the path")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(f"{path}: not valid YAML", "fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study must be a YAML mapping")
    return raw


def _validate_runs(plan: StudyPlan) -> None:
    """Build every run's Recipe once (placeholder paths for stage outputs) so bad keys fail before any training."""
    tasks = {}
    for run in plan.runs:
        for ref in STAGE_REF.findall(" ".join(run.overrides)):
            if ref not in plan.stages:
                raise ConfigError(f"run {run.name}: '{{stage:{ref}}}' names no stage", did_you_mean(ref, plan.stages))
        sets = [STAGE_REF.sub(lambda m: f"stage-{m.group(1)}-best.pt", s) for s in run.overrides]
        try:
            recipe = recipe_from_dict(copy.deepcopy(run.raw), sets)
            check_recipe(recipe)  # registered names and memory: before the study folder exists
        except ConfigError as e:
            raise ConfigError(f"study run {run.name}: {e.message}", e.hint) from None
        tasks[run.group] = recipe.task
    known = list(task_for(tasks[plan.baseline]).study_metrics)  # the task's; () for one compared by every number
    if plan.metric is not None and known and plan.metric not in known:
        raise ConfigError(f"study key 'metric' is '{plan.metric}'", did_you_mean(plan.metric, known))


def plan_to_dict(plan: StudyPlan) -> dict:
    """JSON-ready plan (written to plan.json)."""
    return dc_asdict(plan)


def read_plan(study_dir: str | Path) -> StudyPlan:
    """The frozen plan of an existing study folder."""
    p = Path(study_dir) / "plan.json"
    if not p.is_file():
        raise CnnlabError(f"{study_dir}: no plan.json", "is this a cnnlab study folder?")
    d = json.loads(p.read_text())
    return StudyPlan(**{**d, "runs": [PlannedRun(**r) for r in d["runs"]]})


def find_run_dir(runs_dir: Path, name: str) -> Path | None:
    """The folder of a named run: a finished one first, then one with a last.pt, then the newest."""
    pattern = re.compile(rf"^{re.escape(name)}-\d{{8}}-\d{{6}}(-\d+)?$")
    found = sorted(d for d in runs_dir.glob(f"{name}-*") if d.is_dir() and pattern.fullmatch(d.name)) \
        if runs_dir.is_dir() else []
    for marker in (SUMMARY, LAST):
        done = [d for d in found if (d / marker).is_file()]
        if done:
            return done[-1]
    return found[-1] if found else None


def read_failures(study_dir: Path) -> dict[str, str]:
    """Run name -> the one-line error of its last failed attempt."""
    p = Path(study_dir) / "failures.json"
    return json.loads(p.read_text()) if p.is_file() else {}
