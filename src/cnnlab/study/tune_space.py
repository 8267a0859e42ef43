"""The search space of `cnnlab tune`: recipe keys with ranges and choices, checked like a recipe.

A space file (YAML) maps dotted recipe keys to what a trial may set them to:

    optim.lr: {log: [1.0e-4, 1.0e-2]}         # a float, log-uniform between the bounds
    optim.weight_decay: {range: [0, 1.0e-3]}   # a float, uniform (optional step: {range: [0, 30], step: 5})
    train.batch_size: {int: [4, 16]}           # an integer, uniform (optional step)
    model.name: [fcn_efficientnet_lite0, unet_efficientnet_lite0]   # one of these values
    data.size: [[128, 160], [192, 240]]        # choices may be lists
    tune: {pruner: median, startup_trials: 5, warmup_epochs: 1, seed: 0}   # optional: how to search

The `tune:` settings: sampler tpe | random (seeded by `seed`), pruner median | halving | none, startup_trials
(random trials before TPE models the scores, and finished trials before the median pruner stops any), warmup_epochs
(epochs of every trial that are never pruned), start_from_recipe (default true: trial 0 runs the base recipe's own
values of the searched keys, where the space contains them).

Each key must be a recipe key (the typo gets "did you mean"), each range well ordered (and positive for `log`),
and every corner of the space (each bound and each choice, one key at a time over the base recipe) must make a
valid recipe with registered names: one line before any folder exists, not a failed trial an hour in.
"""
from __future__ import annotations

import copy
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cnnlab.config import recipe_from_dict
from cnnlab.engine.recipe_check import check_recipe
from cnnlab.errors import ConfigError, did_you_mean

KINDS = ("range", "log", "int")       # the mapping forms of a parameter; a list is a choice
PRUNERS = ("median", "halving", "none")
SAMPLERS = ("tpe", "random")
# the optional `tune:` section: how to search (not what to search over)
SETTINGS = {"pruner": "median", "sampler": "tpe", "seed": 0, "startup_trials": 5, "warmup_epochs": 1,
            "start_from_recipe": True}
PLACED = ("name", "out", "data.test")  # set by tune itself: each trial's name and folder, no test split


@dataclass(frozen=True)
class Param:
    """One searched recipe key: a float range (log or not), an integer range, or a list of choices."""

    key: str
    kind: str                       # range | log | int | choice
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple = ()

    def corners(self) -> list:
        """The values that bound what a trial may get: both ends of a range, every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


@dataclass(frozen=True)
class Space:
    """A checked space file: its parameters in file order and the search settings."""

    params: tuple[Param, ...]
    settings: dict = field(default_factory=lambda: dict(SETTINGS))


def import_optuna():
    """Optuna, or one line naming the extra that installs it (checked before a tune folder is made)."""
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError("cnnlab tune needs Optuna, which is not installed", "pip install 'cnnlab[tune]'")
    import optuna  # optional dependency (`pip install 'cnnlab[tune]'`): only cnnlab tune needs it

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # cnnlab says what each trial did, in its own lines
    return optuna


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _yaml_number(v):
    """YAML 1.1 reads 1e-4 (no dot) as a string: such strings are taken as the numbers they spell."""
    if isinstance(v, list):
        return [_yaml_number(x) for x in v]
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _param(key: str, spec, path: Path) -> Param:
    """One entry of the space file, its form and bounds checked."""
    where = f"{path}: {key}"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty list of choices", f"e.g. {key}: [a, b]")
        texts = [json.dumps(c, sort_keys=True) for c in spec]
        if len(set(texts)) != len(texts):
            raise ConfigError(f"{where}: a choice is listed twice ({spec!r})", "list each choice once")
        return Param(key, "choice", choices=tuple(tuple(c) if isinstance(c, list) else c for c in spec))
    if not isinstance(spec, dict) or not spec:
        forms = ", ".join(f"{{{k}: [LOW, HIGH]}}" for k in KINDS)
        raise ConfigError(f"{where}: must be a list of choices or one of {forms}", f"e.g. {key}: {{range: [0, 1]}}")
    kinds = [k for k in spec if k in KINDS]
    for k in spec:
        if k not in (*KINDS, "step"):
            raise ConfigError(f"{where}: unknown form '{k}'", did_you_mean(str(k), [*KINDS, "step"]))
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(KINDS)}", f"e.g. {key}: {{range: [0, 1]}}")
    kind, bounds, step = kinds[0], _yaml_number(spec[kinds[0]]), _yaml_number(spec.get("step"))
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_number(b) for b in bounds)):
        raise ConfigError(f"{where}: {kind} needs [LOW, HIGH] numbers, got {bounds!r}",
                          f"e.g. {key}: {{{kind}: [1, 4]}}")
    low, high = bounds
    if not low < high:
        raise ConfigError(f"{where}: {kind} [{low}, {high}]: LOW must be below HIGH", "swap or widen the bounds")
    if kind == "log" and low <= 0:
        raise ConfigError(f"{where}: log [{low}, {high}]: a log range must be above 0",
                          f"e.g. {key}: {{log: [1.0e-4, 1.0e-2]}}")
    if kind == "int" and not all(isinstance(b, int) for b in bounds):
        raise ConfigError(f"{where}: int [{low}, {high}]: the bounds must be integers",
                          f"e.g. {key}: {{int: [4, 16]}}")
    int_step = isinstance(step, int) or (isinstance(step, float) and step.is_integer())
    if step is not None and (kind == "log" or not _number(step) or step <= 0 or (kind == "int" and not int_step)):
        raise ConfigError(f"{where}: step {step!r}: a positive number for range, a positive integer for int, none "
                          "for log", f"e.g. {key}: {{range: [0, 30], step: 5}}")
    return Param(key, kind, float(low) if kind != "int" else low, float(high) if kind != "int" else high, step)


def _settings(value, path: Path) -> dict:
    if value is None:
        return dict(SETTINGS)
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: tune must be a mapping of search settings", f"e.g. tune: {SETTINGS}")
    for k in value:
        if k not in SETTINGS:
            raise ConfigError(f"{path}: unknown tune setting '{k}'", did_you_mean(str(k), list(SETTINGS)))
    out = {**SETTINGS, **value}
    if out["pruner"] not in PRUNERS:
        raise ConfigError(f"{path}: tune.pruner '{out['pruner']}'", did_you_mean(str(out["pruner"]), PRUNERS))
    if out["sampler"] not in SAMPLERS:
        raise ConfigError(f"{path}: tune.sampler '{out['sampler']}'", did_you_mean(str(out["sampler"]), SAMPLERS))
    if not isinstance(out["start_from_recipe"], bool):
        raise ConfigError(f"{path}: tune.start_from_recipe must be true or false", "e.g. tune: {start_from_recipe: "
                          "false}")
    for k in ("seed", "startup_trials", "warmup_epochs"):
        if not isinstance(out[k], int) or isinstance(out[k], bool) or out[k] < 0:
            raise ConfigError(f"{path}: tune.{k} must be an integer >= 0, got {out[k]!r}", f"e.g. tune: {{{k}: 1}}")
    return out


def load_space(path: str | Path, base: dict, sets: list[str] | None = None) -> Space:
    """Parse and check a space file against the base recipe mapping (with the run's --set overrides)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"space file not found: {path}",
                          "e.g. cnnlab tune RECIPE.yaml --space SPACE.yaml --trials 12")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(f"{path}: not valid YAML", "fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a space file maps recipe keys to ranges or choices",
                          "e.g. optim.lr: {log: [1.0e-4, 1.0e-2]}")
    settings = _settings(raw.pop("tune", None), path)
    if not raw:
        raise ConfigError(f"{path}: no recipe key to search", "e.g. optim.lr: {log: [1.0e-4, 1.0e-2]}")
    params = []
    for key, spec in raw.items():
        key = str(key)
        if key in PLACED:
            raise ConfigError(f"{path}: {key} is set by cnnlab tune itself", "search over other keys")
        params.append(_param(key, spec, path))
    space = Space(tuple(params), settings)
    check_corners(space, base, sets or [], path)
    return space


def overrides(values: dict) -> list[str]:
    """--set strings for a trial's values (JSON, which the recipe loader reads as YAML)."""
    return [f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in values.items()]


def check_corners(space: Space, base: dict, sets: list[str], path: Path) -> None:
    """Each bound and choice, one key at a time over the base recipe, must be a valid recipe: an unknown key, a
    value of the wrong type or out of a recipe range, an unregistered model name all fail here in one line."""
    for p in space.params:
        for value in p.corners():
            v = int(value) if p.kind == "int" else value
            try:
                check_recipe(recipe_from_dict(copy.deepcopy(base), [*sets, *overrides({p.key: v})]))
            except ConfigError as e:
                raise ConfigError(f"{path}: {p.key} = {v!r}: {e.message}", e.hint) from None
