"""Recipes: frozen dataclasses loaded from YAML, with dotted --set overrides and clear errors."""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives and which splits to use."""

    format: str = "endovis"          # a key of cnnlab.data.formats.FORMATS
    root: str = "data/endovis_synth"  # relative paths resolve against the current directory
    train: str = "train"
    val: str = "validation"
    test: str = "test"               # a missing test split is a note, not an error
    size: list[int] | None = None    # [H, W] resize on load; None keeps the stored size
    patch: list[int] | None = None   # [H, W]: train on random patches of this size cut from the images (at their
    #                                  own size when data.size is unset); validate, test and predict whole images
    #                                  with Gaussian-weighted sliding windows of it (cnnlab.engine.windows)
    label_fraction: float = 1.0      # seeded subset of the training split (label-scarce studies)
    val_fraction: float = 0.0        # carve validation out of train when the format has no val split
    options: dict = field(default_factory=dict)  # format-specific reader options
    cache: bool = True               # keep decoded splits on disk (cnnlab.data.cache); false reads and writes none
    cache_dir: str | None = None     # where; None = $CNNLAB_CACHE_DIR, else ~/.cache/cnnlab/decoded


@dataclass(frozen=True)
class ModelConfig:
    """Which network, its parameters, and where its initial weights come from."""

    name: str = "unet"
    params: dict = field(default_factory=dict)  # keyword arguments of the model builder
    init: str | None = None          # a checkpoint to transfer compatible weights from
    freeze_encoder_epochs: int = 0   # keep transferred encoder frozen for this many epochs


@dataclass(frozen=True)
class LossConfig:
    """Training loss; see cnnlab.losses.core.LOSSES."""

    name: str = "dice"
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: str = "adam"               # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9            # sgd only
    schedule: str = "none"           # none | cosine | plateau | step
    warmup_epochs: int = 0
    step_size: int = 10              # step schedule: epochs between decays
    gamma: float = 0.1               # step / plateau decay factor


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings; the fast path (channels_last, bf16/AMP) is on by default."""

    epochs: int = 30
    batch_size: int = 8
    eval_batch_size: int = 16
    patience: int = 10               # early stopping on the validation metric; 0 disables
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    precision: str = "auto"          # auto (bf16 on CPU, fp16 AMP on CUDA) | bf16 | fp16 | fp32
    channels_last: bool = True
    compile: bool = False
    sync_batchnorm: bool = False     # DDP only: BatchNorm statistics over the global batch
    threads: int = 0                 # CPU threads; 0 = torch's default, fewer when other processes keep cores
                                     # busy (two 2-thread jobs on 2 cores ran 2-40x slower)
    progress: bool = True            # progress bars (plain lines where stdout is not a terminal), epoch lines
    max_steps_per_epoch: int = 0     # 0 = whole split; >0 caps steps (smoke tests)
    select: str = "auto"             # the validation score that picks best.pt and early stopping: auto = the
    #                                  task's (segmentation: strict mean Dice), miou = strict mean IoU over the
    #                                  classes in the ground truth (multi-class sets: every class weighs the same)
    foreground_oversample: float = 0.0  # data.patch: share of patches centred on a pixel of a class drawn
    #                                  uniformly among the non-background classes of the image (nnU-Net: 1/3)
    window_overlap: float = 0.5      # data.patch: overlap of the sliding windows that score whole images
    tta: bool | str = False          # test, evaluate, predict: the best model averaged over its trained flips
    #                                  (cnnlab.engine.flips); validation during training stays one pass; auto =
    #                                  the flips only where they raise the final validation score
    log_to: list[str] = field(default_factory=list)  # trackers: tensorboard, mlflow, wandb (optional extras)
    mlflow_uri: str = ""             # "" = $MLFLOW_TRACKING_URI, else a local sqlite:///<out>/mlflow.db
    mlflow_experiment: str = ""      # "" = the recipe file's name (load_recipe fills it in), else the run's name;
    #                                  not the run's name, so `--set name=x` makes no new experiment each time
    size_schedule: list[list[float]] = field(default_factory=list)  # resolution schedule, small first: [[scale,
    #                                  epochs], ...] trains the first epochs at scale x data.size (sides rounded to
    #                                  multiples of 16); later epochs, validation and test at data.size


@dataclass(frozen=True)
class AugmentConfig:
    """Paired augmentation applied to whole batches on the training device."""

    hflip: bool = False
    vflip: bool = False
    rot90: bool = False              # only for square inputs
    rotate: float = 0.0              # max degrees of random rotation
    crop_scale: float = 1.0          # random crop of this fraction of the side, resized back
    elastic: float = 0.0             # elastic deformation: sd in pixels of random shifts at 3x3 control points,
    #                                  interpolated bicubically (the U-Net paper on ISBI 2012: 10)
    brightness: float = 0.0          # colour jitter strengths (image only)
    contrast: float = 0.0
    saturation: float = 0.0


@dataclass(frozen=True)
class Recipe:
    """One experiment: everything needed to reproduce a run."""

    name: str = "run"
    task: str = "segmentation"       # segmentation | classification | colorization
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    out: str = "runs"


TASKS = ("segmentation", "classification", "colorization")
# Closed lists the engine implements (engine/fit.py); checked here so a typo fails before any data is read.
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "cosine", "plateau", "step")
SELECTS = ("auto", "miou")  # train.select: the task's headline, or strict mean IoU over classes (tasks: selects)
TRACKERS = ("tensorboard", "mlflow", "wandb")  # train.log_to; each an optional extra (engine/recipe_check.py)
# A run's name becomes a folder name under `out` and appears in printed `cnnlab train --resume DIR` hints:
# no path separators (a '/' made a missing folder, '../x' escaped `out`), nothing a shell would split or expand.
# '=' stays allowed: study run names carry grid points ('base__label_fraction=0.1__seed0').
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")
NAME_MAX = 200  # the folder adds '-YYYYmmdd-HHMMSS[-N]'; file systems stop at 255 bytes


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Coerce YAML scalars to the field's type, or fail naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for tp_one in inner[:-1]:  # bool | str: true/false first, then a word (train.tta: auto)
            try:
                return _check_type(value, tp_one, key)
            except ConfigError:
                pass
        return _check_type(value, inner[-1], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_check_type(v, args[0], key) for v in value] if args else list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build a (nested) dataclass from a mapping, refusing unknown keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config section '{prefix or 'recipe'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown config key '{where}'", did_you_mean(str(key), names))
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, raw[f.name], key)
        else:
            kwargs[f.name] = _check_type(raw[f.name], tp, key)
    return cls(**kwargs)


def _check_name(name: str) -> None:
    """The run name must be one plain folder name (see NAME_PATTERN)."""
    if len(name) > NAME_MAX or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"config key 'name' must be a plain folder name (letters, digits, '_', '-', '.', '=', "
                          f"starting with a letter or digit, at most {NAME_MAX} characters), got {name!r}",
                          "e.g. --set name=my-run; use 'out' for where run folders go")


def _check_choice(value: str, valid: tuple[str, ...], key: str) -> None:
    """A closed-list value, refused with the closest valid one and the list."""
    if value not in valid:
        raise ConfigError(f"unknown {key} {value!r}", did_you_mean(value, valid))


def _validate(r: Recipe, check_name: bool = True) -> None:
    """Range checks that types alone cannot express."""
    if check_name:
        _check_name(r.name)
    _check_choice(r.optim.name, OPTIMIZERS, "optim.name")
    _check_choice(r.optim.schedule, SCHEDULES, "optim.schedule")
    _check_choice(r.train.select, SELECTS, "train.select")  # which task offers which: engine/recipe_check.py
    for tracker in r.train.log_to:
        _check_choice(tracker, TRACKERS, "train.log_to entry")
    checks = [
        (r.task in TASKS, "task", f"must be one of {', '.join(TASKS)}"),
        (math.isfinite(r.optim.lr) and r.optim.lr > 0, "optim.lr", "must be a finite number > 0"),
        (r.train.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", "must be >= 0 (0 = the whole split)"),
        (r.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0"),
        (r.train.batch_size >= 1, "train.batch_size", "must be >= 1"),
        (r.train.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1"),
        (r.train.epochs >= 1, "train.epochs", "must be >= 1"),
        (r.train.patience >= 0, "train.patience", "must be >= 0"),
        (r.train.threads >= 0, "train.threads", "must be >= 0 (0 = torch's default)"),
        (0 < r.data.label_fraction <= 1, "data.label_fraction", "must be in (0, 1]"),
        (0 <= r.data.val_fraction < 1, "data.val_fraction", "must be in [0, 1)"),
        (0 < r.augment.crop_scale <= 1, "augment.crop_scale", "must be in (0, 1]"),
        (r.augment.elastic >= 0, "augment.elastic", "must be >= 0 (pixels)"),
        (r.train.precision in ("auto", "bf16", "fp16", "fp32"), "train.precision",
         "must be auto, bf16, fp16 or fp32"),
        (r.train.device in ("auto", "cpu", "cuda") or r.train.device.startswith("cuda:"),
         "train.device", "must be auto, cpu or cuda"),
        (r.data.size is None or (len(r.data.size) == 2 and min(r.data.size) > 0), "data.size",
         "must be [H, W] with positive sides"),
        (r.data.patch is None or (len(r.data.patch) == 2 and min(r.data.patch) >= 16), "data.patch",
         "must be [H, W] with sides of at least 16"),
        (0 <= r.train.foreground_oversample <= 1, "train.foreground_oversample", "must be in [0, 1]"),
        (0 <= r.train.window_overlap < 1, "train.window_overlap", "must be in [0, 1)"),
        (r.train.tta in (True, False, "auto"), "train.tta", "must be true, false or auto"),
        (not r.train.tta or r.augment.hflip or r.augment.vflip, "train.tta",
         "averages over the flips the run trains with: it needs augment.hflip or augment.vflip"),
        (_size_schedule_ok(r), "train.size_schedule", "must be [[scale, epochs], ...] with 0 < scale < 1, whole "
         "epochs >= 1 adding up to fewer than train.epochs (the last epochs train at data.size), and data.size set"),
    ]
    for ok, key, msg in checks:
        if not ok:
            value = _get(asdict(r), key)
            raise ConfigError(f"config key '{key}' {msg}, got {value!r}")


def _size_schedule_ok(r: Recipe) -> bool:
    """Each stage a scale in (0, 1) for a whole number of epochs; at least the last epoch at full size."""
    stages = r.train.size_schedule
    if not stages:
        return True
    ok = r.data.size is not None and all(len(s) == 2 and 0 < s[0] < 1 and s[1] >= 1 and float(s[1]).is_integer()
                                         for s in stages)
    return ok and sum(int(s[1]) for s in stages) < r.train.epochs


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def asdict(r: Recipe) -> dict:
    """Plain nested dict (for YAML output and summary.json)."""
    return dataclasses.asdict(r)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=0.01' -> (['train', 'lr'], 0.01); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not key=value", "e.g. --set train.epochs=5")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a raw recipe mapping; params/options dicts accept new keys."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = node[part]
        node[path[-1]] = value
    return raw


def recipe_from_dict(raw: dict, overrides: list[str] | None = None, check_name: bool = True) -> Recipe:
    """Validated Recipe from a mapping plus overrides.

    check_name=False is for a recipe read back from an existing run (resume, predict, evaluate): its name already
    made its folder, and runs named before names were checked must stay readable.
    """
    raw = apply_overrides(dict(raw or {}), overrides or [])
    r = _build(Recipe, raw, "")
    _validate(r, check_name)
    return r


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML; 'base: other.yaml' inherits from another recipe beside it. train.mlflow_experiment
    defaults to the file's name (its stem), before the overrides."""
    raw = dict(read_yaml(path))
    if isinstance(raw.get("train", {}), dict) and not (raw.get("train") or {}).get("mlflow_experiment"):
        raw["train"] = {**(raw.get("train") or {}), "mlflow_experiment": Path(path).stem}
    return recipe_from_dict(raw, overrides)


def read_yaml(path: str | Path) -> dict:
    """Read YAML (resolving 'base:' chains), with one-line errors naming the file.

    The chain is followed iteratively and every file is remembered, so a cycle (a.yaml -> b.yaml -> a.yaml)
    is one error naming its files instead of a RecursionError.
    """
    p = Path(path)
    chain: list[tuple[Path, dict]] = []   # child first, root last; each mapping without its 'base'
    seen: list[Path] = []
    while True:
        raw = _read_one(p, chain[-1][0] if chain else None)
        seen.append(p.resolve())
        base = raw.pop("base", None)
        chain.append((p, raw))
        if base is None:
            break
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{p}: config key 'base' must be a recipe file name, got {base!r}",
                              "e.g. base: a_baseline.yaml (resolved beside this file)")
        p = p.parent / base
        if p.resolve() in seen:
            first = seen[0].parent
            names = [os.path.relpath(f, first) for f in [*seen, p.resolve()]]
            raise ConfigError(f"circular 'base:' chain: {' -> '.join(names)}",
                              f"remove the 'base:' of {names[-2]} or point it at another file")
    merged = chain[-1][1]
    for _, own in reversed(chain[:-1]):
        merged = _merge_child(merged, own)
    return merged


def _read_one(p: Path, child: Path | None) -> dict:
    """One YAML mapping from disk (child: the file whose 'base:' named this one, for the message)."""
    if not p.is_file():
        where = f" (the 'base:' of {child})" if child is not None else ""
        raise ConfigError(f"recipe file not found: {p}{where}", "check the path")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}", "fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a recipe must be a YAML mapping")
    return raw


def _merge_child(parent: dict, raw: dict) -> dict:
    """A child recipe over its (resolved) parent; a child naming another model drops the parent's model.params."""
    own_model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    parent_model = parent.get("model") if isinstance(parent.get("model"), dict) else {}
    merged = deep_merge(parent, raw)
    if own_model.get("name", parent_model.get("name")) != parent_model.get("name"):
        # another model: the parent's model.params belong to the parent's model, not to this one
        merged["model"]["params"] = dict(own_model.get("params") or {})
    return merged


def deep_merge(a: dict, b: dict) -> dict:
    """b over a, recursively for mappings."""
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_recipe(r: Recipe) -> str:
    """The resolved recipe as YAML (every default written out)."""
    return yaml.safe_dump(asdict(r), sort_keys=False)
