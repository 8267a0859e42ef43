"""`cnnlab train` (a recipe, or --resume a run) and `cnnlab demo` (the course recipe on synthetic data)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from cnnlab.errors import CnnlabError

# Commands import torch-heavy modules inside their functions: importing torch takes seconds, and
# `cnnlab --help` (or a typo) should answer at once.


def _cmd_train(a: argparse.Namespace) -> int:
    from cnnlab.config import load_recipe  # light (YAML and dataclasses): the first line needs no torch

    overrides = list(a.set) + ([f"model.params.weights={a.weights}"] if a.weights else [])
    no_cache = ["data.cache=false"] if a.no_cache else []  # decode every file; the decoded cache is not read
    recipe = load_recipe(a.recipe, overrides + no_cache) if a.recipe and not a.resume else None
    _first_line(recipe, a.resume)

    from cnnlab.api.calls import resume_run, train_recipe  # the functions cnnlab.train and cnnlab.resume call

    if a.resume:
        resume_run(Path(a.resume), list(a.set) + no_cache, echo=True)
    elif recipe is not None:
        train_recipe(recipe, echo=True)  # checks names and memory before any data is read or run dir created
    else:
        raise CnnlabError("cnnlab train needs a RECIPE or --resume RUN_DIR")
    return 0


def _first_line(recipe, resume: str | None) -> None:
    """What the command is doing, printed before torch is imported (seconds) and the data read (minutes)."""
    from cnnlab.logs import begin_run_log, get_logger  # light (logging and rich): the line goes to train.log

    begin_run_log()
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 speaks
        return
    log = get_logger("cnnlab.cli.train")
    if resume:
        log.info(f"resuming {resume}: reading its checkpoint and its data")
    elif recipe is not None and recipe.train.progress:
        d = recipe.data
        size = f", resized to {d.size[0]}x{d.size[1]}" if d.size else ""
        splits = ", ".join(s for s in (d.train, d.val, d.test) if s)
        log.info(f"training {recipe.name} ({recipe.task}, {recipe.model.name}): reading {d.root} "
                 f"(format {d.format}, splits {splits}{size})")


def _cmd_demo(a: argparse.Namespace) -> int:
    from cnnlab.cli.demo import run_demo, run_demo_study

    if a.study:
        run_demo_study(Path(a.data), Path(a.out))
    else:
        run_demo(Path(a.data), Path(a.out), epochs=a.epochs)
    return 0


def register(sub) -> None:
    """Add `cnnlab train` and `cnnlab demo`."""
    t = sub.add_parser("train", help="train a recipe, or resume a run")
    t.add_argument("recipe", nargs="?", help="recipe YAML")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=5")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last.pt")
    t.add_argument("--no-cache", action="store_true", help="decode the data files again instead of reading the "
                   "decoded cache, and write none (same as --set data.cache=false)")
    t.add_argument("--weights", metavar="PATH|imagenet", help="pre-trained weights for transfer models "
                   "(a local .pth/.safetensors file, or 'imagenet' to download where internet exists)")
    t.set_defaults(func=_cmd_train)
    m = sub.add_parser("demo", help="synthesize the EndoVis course data (if missing) and train the course recipe")
    m.add_argument("--data", default="data/endovis_synth")
    m.add_argument("--out", default="runs")
    m.add_argument("--epochs", type=int, default=None)
    m.add_argument("--study", action="store_true", help="run the course study (a, b, c, colorization-pretrained "
                   "e at 10%% and 100%% labels, 2 seeds) at demo size instead")
    m.set_defaults(func=_cmd_demo)
