"""Checks of a recipe that need more than the config layer: registered names and the machine's memory.

config.py is the bottom layer (types, ranges and its own closed lists: tasks, optimizers, schedules); it must not
import the model, loss and data-format registries above it. This module does, and `cnnlab train` and
`cnnlab study` call check_recipe right after loading a recipe, before any data is read or any folder created:
a typo or an impossible size then costs one line, not a data load, a traceback and an empty run dir.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Iterable

from cnnlab.config import Recipe
from cnnlab.data.formats import FORMATS
from cnnlab.errors import ConfigError, did_you_mean
from cnnlab.losses.core import LOSSES
from cnnlab.models import MODELS, check_model_params
from cnnlab.tasks import task_for

# Floor on the memory one training sample takes per pixel: 24 float32 values (= 96 bytes), i.e. a 3-channel input,
# its normalised and augmented copies, and a first layer's outputs and their gradients. The U-Nets here keep
# hundreds of values per pixel for the backward pass, so this is a deliberate underestimate: a recipe refused by
# it cannot fit, and one that passes may still need several times more.
BYTES_PER_PIXEL = 96
GIB = 2**30


def check_recipe(r: Recipe) -> None:
    """Every check below; raises ConfigError with one line and a hint."""
    check_names(r)
    check_patch(r)
    check_trackers(r.train.log_to)
    check_memory(r)


# train.log_to name -> (the module it imports, the cnnlab extra that installs it)
TRACKER_EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"),
                  "wandb": ("wandb", "wandb")}


def check_trackers(names: Iterable[str]) -> None:
    """Each experiment tracker in train.log_to must be importable: a missing extra costs one line before any data
    is read or folder created, not a traceback after the first epoch. find_spec looks without importing (mlflow
    alone takes seconds to import)."""
    for name in names:
        module, extra = TRACKER_EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"train.log_to: {name} needs the '{module}' package, which is not installed",
                              f"pip install 'cnnlab[{extra}]', or remove {name} from train.log_to")


def _check_one(value: str, registry: Iterable[str], key: str) -> None:
    valid = list(registry)
    if value not in valid:
        raise ConfigError(f"unknown {key} {value!r}", did_you_mean(value, valid))


def check_names(r: Recipe) -> None:
    """data.format, model.name (and its model.params keys), loss.name and train.select (the task's offer) against
    their registries."""
    _check_one(r.data.format, FORMATS, "data.format")
    _check_one(r.model.name, MODELS, "model.name")
    _check_one(r.loss.name, LOSSES, "loss.name")
    task = task_for(r.task)
    fits = task.losses
    if r.loss.name not in fits:  # else an IndexError at the first step (soft Dice of one label per image)
        raise ConfigError(f"loss.name {r.loss.name!r} does not fit a {r.task} run; valid: {', '.join(fits)}",
                          f"set loss.name: {fits[0]} in the recipe, or add --set loss.name={fits[0]} to the command")
    _check_one(r.train.select, task.selects, f"train.select for a {r.task} run")
    check_model_params(r.model.name, r.model.params)


def check_patch(r: Recipe) -> None:
    """data.patch only where the task's outputs are per pixel (patches of a classified image have no label);
    train.tta only where they are class scores."""
    if r.data.patch is not None and not task_for(r.task).dense:
        raise ConfigError(f"config key 'data.patch' cuts patches for per-pixel tasks (segmentation), not a {r.task} "
                          "run", "remove data.patch; set data.size for the input size")
    if r.train.tta and not task_for(r.task).class_scores:
        raise ConfigError(f"config key 'train.tta' averages class scores over flips; a {r.task} run has none",
                          "remove train.tta")


def machine_memory_bytes() -> int | None:
    """Total physical memory (os.sysconf, else /proc/meminfo), or None where neither says."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if total > 0:
            return int(total)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_floor_bytes(r: Recipe) -> int | None:
    """The least memory a training step at data.size needs: one batch at BYTES_PER_PIXEL plus one RGB uint8 image.

    None when data.size is unset: the stored size is only known once the data are read.
    """
    if not r.data.size:
        return None
    h, w = r.data.size
    return r.train.batch_size * h * w * BYTES_PER_PIXEL + 3 * h * w


def check_memory(r: Recipe, total: int | None = None) -> None:
    """Refuse a data.size whose memory floor exceeds the machine's total memory (total: for tests)."""
    need = memory_floor_bytes(r)
    total = machine_memory_bytes() if total is None else total
    if need is None or total is None or need <= total:
        return
    h, w = r.data.size
    raise ConfigError(f"data.size [{h}, {w}] with train.batch_size {r.train.batch_size} needs at least "
                      f"{need / GIB:.2f} GiB of memory (a batch at {BYTES_PER_PIXEL} bytes per pixel, a floor), "
                      f"but this machine has {total / GIB:.2f} GiB",
                      "lower data.size (e.g. --set data.size=[512,512]) or train.batch_size")
