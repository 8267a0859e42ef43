"""CLI for your own folders: `cnnlab new` (a recipe from image/mask folders) and the `data check folders` body."""
from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from .errors import DataError


def check_folders(images: str | Path, masks: str | Path, fov: str | Path | None = None, **options) -> str:
    """`cnnlab data check folders --images DIR --masks DIR [--fov DIR]`: the report for two (or three) folders."""
    return folders_report(images, masks, fov, **options)[0]


def folders_report(images: str | Path, masks: str | Path, fov: str | Path | None = None,
                   **options) -> tuple[str, list[str]]:
    """The report and the problems it lists, so that the command can fail when there are any."""
    from .data.formats._folders_check import survey_report

    paths = [Path(p).expanduser().resolve() for p in (images, masks, fov) if p is not None]
    root = Path(os.path.commonpath(paths))
    opts = {"images": os.path.relpath(paths[0], root), "masks": os.path.relpath(paths[1], root), **options}
    if fov is not None:
        opts["fov"] = os.path.relpath(paths[2], root)
    opts.setdefault("split", "random")  # two folders given: they are the whole data set, not split folders
    return survey_report(root, **opts)


def check_command(images: str | Path, masks: str | Path, fov: str | Path | None = None) -> str:
    """The `cnnlab data check folders` command line for these folders, quoted for a shell (used in hints)."""
    args = ["cnnlab", "data", "check", "folders", "--images", str(images), "--masks", str(masks)]
    args += ["--fov", str(fov)] if fov is not None else []
    return shlex.join(args)


def run_check_folders(images: str | Path, masks: str | Path, fov: str | Path | None = None) -> int:
    """Print the report; problems make one final error line and exit 2 (a check that lists problems must fail)."""
    text, problems = folders_report(images, masks, fov)
    print(text, flush=True)
    if problems:
        raise DataError(f"{len(problems)} problem(s) in these folders (listed above); training would stop at them",
                        f"replace or remove the files named above, then run again: {check_command(images, masks, fov)}")
    return 0


def _cmd_new(a: argparse.Namespace) -> int:
    from .new_recipe import make_recipe

    made = make_recipe(a.task, a.images, a.masks, a.out, fov=a.fov, name=a.name)
    est = made.estimate
    print(f"wrote {made.path}; train it with: cnnlab train {made.path}")
    print(f"estimated training time on this machine: {est.total_line()}; {est.epoch_line()}; early stopping may "
          "end sooner")
    return 0


def register(sub) -> None:
    """Add `cnnlab new` to the main parser's subcommands."""
    n = sub.add_parser("new", help="write a ready recipe from your image/mask folders")
    n.add_argument("--task", default="segmentation", help="segmentation (image + mask folders)")
    n.add_argument("--images", required=True, metavar="DIR", help="folder of images")
    n.add_argument("--masks", required=True, metavar="DIR", help="folder of masks, named like their images")
    n.add_argument("--fov", metavar="DIR", help="optional field-of-view masks: pixels outside are ignored")
    n.add_argument("--out", required=True, metavar="RECIPE", help="recipe YAML to write (never overwritten)")
    n.add_argument("--name", help="run name (default: the recipe's file name)")
    n.set_defaults(func=_cmd_new)
