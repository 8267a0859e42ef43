"""The cnnlab command line: thin subcommands over importable functions; user errors print one line, exit 2."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .errors import CnnlabError

# Modules that add their own subcommands through register(subparsers).
PLUGIN_MODULES: list[str] = ["cli_arithmetic", "cli_folders", "cli_infer", "cli_study"]


def _cmd_train(a: argparse.Namespace) -> int:
    from .config import load_recipe
    from .engine.distributed import is_main, shutdown
    from .engine.run import resume, train
    from .recipe_check import check_recipe

    overrides = list(a.set) + ([f"model.params.weights={a.weights}"] if a.weights else [])
    if a.resume:
        run_dir = resume(Path(a.resume), a.set)
    elif a.recipe:
        recipe = load_recipe(a.recipe, overrides)
        check_recipe(recipe)  # names and memory before any data is read or run dir created
        run_dir = train(recipe)
    else:
        raise CnnlabError("cnnlab train needs a RECIPE or --resume RUN_DIR")
    if is_main():
        from .report.tables import print_run_table

        print_run_table(run_dir)
        _write_report(run_dir)
    shutdown()
    return 0


def _write_report(run_dir: Path) -> None:
    """report.md/html beside the run's files (the study/report module may be absent in a trimmed install)."""
    try:
        from .report.build import write_run_report
    except ImportError:
        return
    print(f"report: {write_run_report(run_dir)}")


def _cmd_synth(a: argparse.Namespace) -> int:
    from .data.synthetic import SYNTHETIC
    from .errors import lookup

    out = lookup(SYNTHETIC, a.format, "synthetic data set")(Path(a.out), seed=a.seed)
    print(f"wrote synthetic {a.format} data to {out}")
    return 0


def _cmd_check(a: argparse.Namespace) -> int:
    from .data.formats import FORMATS
    from .errors import DataError, lookup

    if a.format == "folders":
        from .cli_folders import run_check_folders

        if not (a.images and a.masks):
            raise DataError("data check folders needs --images DIR and --masks DIR")
        return run_check_folders(a.images, a.masks, a.fov)  # problems found: listed, one error line, exit 2
    if not a.root:
        raise DataError(f"data check {a.format} needs the data set's ROOT folder")
    root = Path(a.root)
    if not root.exists():
        raise DataError(f"data root not found: {root}")
    print(lookup(FORMATS, a.format, "data format").check(root))
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo, run_demo_study

    if a.study:
        run_demo_study(Path(a.data), Path(a.out))
    else:
        run_demo(Path(a.data), Path(a.out), epochs=a.epochs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnlab", description="Train, compare and explain CNNs on small image sets.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a recipe, or resume a run")
    t.add_argument("recipe", nargs="?", help="recipe YAML")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=5")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last.pt")
    t.add_argument("--weights", metavar="PATH|imagenet", help="pre-trained weights for transfer models "
                   "(a local .pth/.safetensors file, or 'imagenet' to download where internet exists)")
    t.set_defaults(func=_cmd_train)
    d = sub.add_parser("data", help="synthesize or check data sets").add_subparsers(dest="data_cmd", required=True)
    s = d.add_parser("synth", help="write a synthetic data set in a real on-disk format")
    s.add_argument("format")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_synth)
    c = d.add_parser("check", help="validate a data set layout and summarise it")
    c.add_argument("format")
    c.add_argument("root", nargs="?", help="data set root (not for 'folders')")
    c.add_argument("--images", metavar="DIR", help="folders format: the image folder")
    c.add_argument("--masks", metavar="DIR", help="folders format: the mask folder")
    c.add_argument("--fov", metavar="DIR", help="folders format: optional field-of-view masks")
    c.set_defaults(func=_cmd_check)
    m = sub.add_parser("demo", help="synthesize the EndoVis course data (if missing) and train the course recipe")
    m.add_argument("--data", default="data/endovis_synth")
    m.add_argument("--out", default="runs")
    m.add_argument("--epochs", type=int, default=None)
    m.add_argument("--study", action="store_true", help="run the course study (a, b, c, colorization-pretrained "
                   "e at 10%% and 100%% labels, 2 seeds) at demo size instead")
    m.set_defaults(func=_cmd_demo)
    for name in PLUGIN_MODULES:
        importlib.import_module(f"cnnlab.{name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CnnlabError as e:
        print(f"cnnlab: error: {e.line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
