"""CLI for your own folders: `cnnlab new` (a recipe from image/mask folders) and the `data check folders` body."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def check_folders(images: str | Path, masks: str | Path, fov: str | Path | None = None, **options) -> str:
    """`cnnlab data check folders --images DIR --masks DIR [--fov DIR]`: the report for two (or three) folders."""
    from .data.formats.folders import check

    paths = [Path(p).expanduser().resolve() for p in (images, masks, fov) if p is not None]
    root = Path(os.path.commonpath(paths))
    opts = {"images": os.path.relpath(paths[0], root), "masks": os.path.relpath(paths[1], root), **options}
    if fov is not None:
        opts["fov"] = os.path.relpath(paths[2], root)
    opts.setdefault("split", "random")  # two folders given: they are the whole data set, not split folders
    return check(root, **opts)


def _cmd_new(a: argparse.Namespace) -> int:
    from .new_recipe import write_recipe

    out = write_recipe(a.task, a.images, a.masks, a.out, fov=a.fov, name=a.name)
    print(f"wrote {out}; train it with: cnnlab train {out}")
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
