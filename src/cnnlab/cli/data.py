"""`cnnlab data synth|check` (data sets in real on-disk formats) and `cnnlab new` (a recipe for your folders)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from cnnlab.errors import DataError
from cnnlab.new.hints import check_command, parse_void


def _cmd_synth(a: argparse.Namespace) -> int:
    from cnnlab.data.synthetic import SYNTHETIC
    from cnnlab.errors import lookup

    out = lookup(SYNTHETIC, a.format, "synthetic data set")(Path(a.out), seed=a.seed)
    print(f"wrote synthetic {a.format} data to {out}")
    return 0


def _cmd_check(a: argparse.Namespace) -> int:
    from cnnlab.data.formats import FORMATS
    from cnnlab.errors import DataError, lookup

    if a.format == "folders":
        if not (a.images and a.masks):
            raise DataError("data check folders needs --images DIR and --masks DIR")
        extra = {"void": parse_void(a.void)} if a.void else {}
        return run_check_folders(a.images, a.masks, a.fov, **extra)  # problems: listed, one error line, exit 2
    if not a.root:
        raise DataError(f"data check {a.format} needs the data set's ROOT folder")
    root = Path(a.root)
    if not root.exists():
        raise DataError(f"data root not found: {root}")
    print(lookup(FORMATS, a.format, "data format").check(root))
    return 0


def folders_report(images: str | Path, masks: str | Path, fov: str | Path | None = None,
                   **options) -> tuple[str, list[str]]:
    """The report and the problems it lists, so that the command can fail when there are any. Given splits beside
    the two folders (train + trainannot beside val + valannot, images/train beside images/test, ...) are read as
    those splits (cnnlab.data.formats.folders)."""
    from cnnlab.data.formats.folders import given_options, survey_report

    given = given_options(Path(images), Path(masks), Path(fov) if fov is not None else None)
    if given is not None and "split" not in options:
        return survey_report(given[0], **given[1], **options)
    paths = [Path(p).expanduser().resolve() for p in (images, masks, fov) if p is not None]
    root = Path(os.path.commonpath(paths))
    opts = {"images": os.path.relpath(paths[0], root), "masks": os.path.relpath(paths[1], root), **options}
    if fov is not None:
        opts["fov"] = os.path.relpath(paths[2], root)
    opts.setdefault("split", "random")  # two folders given: they are the whole data set, not split folders
    return survey_report(root, **opts)


def run_check_folders(images: str | Path, masks: str | Path, fov: str | Path | None = None, **options) -> int:
    """Print the report; problems make one final error line and exit 2 (a check that lists problems must fail)."""
    text, problems = folders_report(images, masks, fov, **options)
    print(text, flush=True)
    if problems:
        raise DataError(f"{len(problems)} problem(s) in these folders (listed above); training would stop at them",
                        f"replace or remove the files named above, then run again: {check_command(images, masks, fov)}")
    return 0


def _cmd_new(a: argparse.Namespace) -> int:
    from cnnlab.api.calls import new_recipe  # the function cnnlab.new_recipe is: the same lines and recipe
    from cnnlab.new.own import OwnData

    own = OwnData(tuple(tuple(v) if isinstance(v, list) else v for v in parse_void(a.void)) if a.void else (),
                  tuple(n.strip() for n in a.classes.split(",") if n.strip()) if a.classes else None,
                  (a.val_images, a.val_masks), (a.test_images, a.test_masks), a.scene)
    new_recipe(a.images, a.masks, a.out, task=a.task, fov=a.fov, name=a.name, encoder=a.encoder, minutes=a.minutes,
               own=own)
    return 0


def register(sub) -> None:
    """Add `cnnlab data synth|check` and `cnnlab new`."""
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
    c.add_argument("--void", metavar="V[,V...]", help="folders format: mask values ignored in loss and metrics "
                   "(grey levels or palette indices, or colours R:G:B); the check shows their share")
    c.set_defaults(func=_cmd_check)
    n = sub.add_parser("new", help="write a ready recipe from your image/mask folders (or class folders)")
    n.add_argument("--task", default="segmentation", help="segmentation (image + mask folders) or classification "
                   "(--images: class folders, or split folders holding class folders)")
    n.add_argument("--images", required=True, metavar="DIR", help="folder of images")
    n.add_argument("--masks", metavar="DIR", help="folder of masks, named like their images (segmentation)")
    n.add_argument("--fov", metavar="DIR", help="optional field-of-view masks: pixels outside are ignored")
    n.add_argument("--out", required=True, metavar="RECIPE", help="recipe YAML to write (never overwritten)")
    n.add_argument("--name", help="run name (default: the recipe's file name)")
    n.add_argument("--encoder", choices=["auto", "imagenet", "none"], default="auto",
                   help="auto (default): the ImageNet-pretrained EfficientNet-Lite0 U-Net where its weights are "
                        "installed and the images are large enough; imagenet: always; none: the U-Net from scratch")
    n.add_argument("--minutes", type=float, default=15.0, metavar="M",
                   help="training time to size the recipe for (default 15): the input size and epochs are chosen "
                        "from training steps timed on this machine")
    n.add_argument("--void", metavar="V[,V...]", help="mask values ignored in loss and metrics like 255: grey levels "
                   "or palette indices (--void 11), colours as R:G:B (--void 0:0:0)")
    n.add_argument("--classes", metavar="NAME,...", help="class names in mask-value order (void values left out); "
                   "without it names come from a class_dict.csv, labelmap.txt, classes.txt, labels.txt or "
                   "_classes.csv beside the masks, else class_0, class_1, ...")
    for split in ("val", "test"):
        for role in ("images", "masks"):
            n.add_argument(f"--{split}-{role}", metavar="DIR", help=f"the given {split} split's {role} folder "
                           "(found by itself beside train + trainannot, images/train, ... ; name it when not)")
    n.add_argument("--scene", choices=["auto", "upright", "any"], default="auto",
                   help="augmentation: upright = photographs with an up (horizontal flips, small rotations, scale); "
                        "any = no up (microscopy, aerial: vertical flips and quarter turns too); auto (default) "
                        "measures it from the masks")
    n.set_defaults(func=_cmd_new)
