"""`cnnlab new --task classification`: look at a folder of class folders and write a commented recipe.

Two layouts are read, both the image-folder format's (cnnlab.data.formats.imagefolder):
- split folders holding class folders (the course's Train/0..9/*.png, Test/0..9/*.png): the recipe names them;
- class folders holding images, no splits: the recipe carves a seeded train/val/test split out of that one folder
  (the reader's `resplit` option from its one split '.'), with data.root that folder; folders beside it are
  not read.

Every image is decoded once (a truncated file found now costs one command to fix; found by training, a run).
The training values are recipe (t), the best measured on real MNIST digits (cnnlab.new.cls_rows); the input size
and epochs come from training steps timed on this machine, as for segmentation (cnnlab.new.budget).
"""
from __future__ import annotations

import dataclasses
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cnnlab.config import Recipe
from cnnlab.data.formats import imagefolder as imf
from cnnlab.data.formats.common import open_image
from cnnlab.data.formats.folders import canonical_split
from cnnlab.data.parallel import ordered_map
from cnnlab.errors import DataError
from cnnlab.new.budget import SizeChoice, candidate_sizes, choose_size, epoch_floor, median_size
from cnnlab.new.cls_rows import CLS_MAX_SIDE, CLS_SIDES, ClsPlan, cls_rows, model_choice
from cnnlab.new.estimate import Estimate, measure_steps, steps_per_epoch, validate_written
from cnnlab.new.files import create_text, replace_text
from cnnlab.new.hints import refuse_problems
from cnnlab.new.rows import lines, y

FRACTIONS = {"val": 0.15, "test": 0.15}  # one folder of class folders: the seeded split's shares (rest trains)
VAL_CARVE = 0.1                          # split folders without a validation one: this share of train (as MNIST)


@dataclass(frozen=True)
class ClassSurvey:
    """What the folders hold: where the recipe points, the splits found, the classes, image sizes and channels."""

    root: Path                 # data.root
    splits: dict[str, str]     # canonical name (train, val, test) -> folder name
    resplit: dict | None       # class folders straight under --images: the seeded split written as `resplit`
    classes: list[str]
    counts: dict[str, int]     # images per split (after a resplit: per carved split)
    per_class: Counter         # training images per class (a resplit: all images, before the split)
    sizes: list[tuple[int, int]]
    channels: int              # 1 when every image is grey, else 3 (grey ones repeated, as the reader does)


def _decode(path: Path) -> tuple[int, int, bool] | str:
    """(height, width, grey) of a fully decoded image, or the problem that stops it."""
    try:
        with open_image(path) as img:
            img.load()
            return img.size[1], img.size[0], img.mode in imf.GREY_MODES
    except (OSError, SyntaxError, ValueError, DataError) as e:
        return f"{path}: cannot decode image ({type(e).__name__})"


def _layout(images: Path) -> tuple[Path, dict[str, str], dict | None]:
    """data.root, the split folders by canonical name, and the resplit (class folders without split folders)."""
    if not images.is_dir():
        raise DataError(f"{images}: folder not found", "give --images the folder that holds the class folders")
    subs = imf.subdirs(images)
    if imf.is_flat(images):                                # --images/<class>/<image>: the folder is the one split
        return images, {"train": "train", "val": "val", "test": "test"}, {"from": imf.FLAT}
    found = {canonical_split(s.name): s.name for s in subs if imf.subdirs(s)}
    if "train" not in found:
        raise DataError(f"{images}: no class folders with images, and no split folder named train",
                        f"expected {imf.EXPECTED}, or one folder per class holding the images")
    return images, found, None


def survey(images: str | Path) -> ClassSurvey:
    """Scan and decode every image; any problem refuses the recipe, naming the file."""
    root, splits, resplit = _layout(Path(images).expanduser().resolve())
    classes = imf.all_classes(root) if resplit is None else [c.name for c in imf.subdirs(root / resplit["from"])]
    folders = [resplit["from"]] if resplit else list(splits.values())
    items: dict[str, list[tuple[Path, int]]] = {f: imf.scan_split(root / f, classes)[0] for f in folders}
    paths = [p for f in folders for p, _ in items[f]]
    found = list(ordered_map(_decode, paths))
    refuse_problems([r for r in found if isinstance(r, str)],
                    shlex.join(["cnnlab", "data", "check", "imagefolder", str(root)]))
    counts = {f: len(v) for f, v in items.items()}
    if not counts[folders[0]]:
        raise DataError(f"{root / folders[0]}: no images in its class folders", f"expected {imf.EXPECTED}")
    train = folders[0]
    per_class = Counter(classes[lab] for _, lab in items[train])
    if resplit is not None:
        resplit, counts = _resplit(resplit["from"], counts[train], root)
    return ClassSurvey(root, splits, resplit, classes, counts, per_class, [(h, w) for h, w, _ in found],
                       1 if all(g for _, _, g in found) else 3)


def _resplit(source: str, n: int, root: Path) -> tuple[dict, dict[str, int]]:
    """Whole counts (fractions could round past n): val and test FRACTIONS of n (at least 1 each), the rest trains."""
    n_val, n_test = (max(1, round(FRACTIONS[k] * n)) for k in ("val", "test"))
    if n - n_val - n_test < 2:
        raise DataError(f"{root / source}: {n} images are too few to split into train, validation and test",
                        "add images (a few per class at least), or give split folders")
    counts = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    return {"from": source, "seed": 0, "stratify": True, **counts}, counts


def _plan(s: ClassSurvey) -> ClsPlan:
    """Training and validation images per epoch (a carved validation set comes out of train)."""
    if s.resplit is not None:
        return ClsPlan(s.counts["train"], s.counts["val"], s.channels, len(s.classes), carve=False)
    n = s.counts[s.splits["train"]]
    if "val" in s.splits:
        return ClsPlan(n, s.counts[s.splits["val"]], s.channels, len(s.classes), carve=False)
    n_val = max(1, round(VAL_CARVE * n))  # as data.loading carves val_fraction
    return ClsPlan(n - n_val, n_val, s.channels, len(s.classes), carve=True)


def _data_rows(s: ClassSurvey, plan: ClsPlan, size: list[int], size_why: str) -> list[tuple[str, str]]:
    rows = [("data:", ""), ("  format: imagefolder", "class folders (cnnlab.data.formats.imagefolder)"),
            (f"  root: {y(str(s.root))}", "absolute: the recipe works from any directory")]
    n_of = [(s.per_class.get(c, 0), c) for c in s.classes]
    shares = (", ".join(f"{c} {n}" for n, c in n_of) if len(n_of) <= 12 else
              f"fewest {min(n_of)[0]} ({min(n_of)[1]}), most {max(n_of)[0]} ({max(n_of)[1]})")
    if s.resplit is not None:
        rows += [("  train: train", f"seeded split of the class folders ({sum(s.counts.values())} images): "
                  f"{s.counts['train']} train"), ("  val: val", f"{s.counts['val']}"),
                 ("  test: test", f"{s.counts['test']}")]
    else:
        rows.append((f"  train: {y(s.splits['train'])}", f"{s.counts[s.splits['train']]} images"))
        if plan.carve:
            rows.append((f"  val_fraction: {VAL_CARVE}", f"no validation folder: {plan.n_val} of the training "
                         f"images held out (seeded)"))
        else:
            rows.append((f"  val: {y(s.splits['val'])}", f"{s.counts[s.splits['val']]} images"))
        rows.append((f"  test: {y(s.splits.get('test', 'test'))}", f"{s.counts[s.splits['test']]} images"
                     if "test" in s.splits else "no test folder: final metrics come from validation"))
    rows += [(f"  size: {y(size)}", size_why), ("  options:", ""),
             (f"    channels: {s.channels}", "every image is grey" if s.channels == 1 else
              "colour (grey images, if any, repeated to RGB)")]
    if s.resplit is not None:
        rows.append((f"    resplit: {y(s.resplit)}", "fixed seed, so the split does not move between runs; stratified: "
                     "each split holds every class in its share (within one image)"))
    which = "images per class (before the split)" if s.resplit is not None else "training images per class"
    rows.append(("", f"{len(s.classes)} classes; {which}: {shares}"))
    return rows


def make_classification(images: str | Path, out: Path, name: str, minutes: float
                        ) -> tuple[Estimate, SizeChoice, str]:
    """Write the recipe to out (never overwriting); returns the estimate, the size choice and the model's why."""
    s = survey(images)
    plan = _plan(s)
    model = model_choice(s.channels)
    candidates = candidate_sizes(median_size(s.sizes), 4, sides=CLS_SIDES, max_side=CLS_MAX_SIDE)
    ratios = [w / h for h, w in s.sizes]

    def render(size: list[int], choice: SizeChoice | None) -> str:
        head = [f"# Written by `cnnlab new --task classification` from {images}.",
                f"# Every value is a starting point: edit freely. Train with: cnnlab train {out}",
                f"# Model: {model.why}."]
        head += [f"# Time: {choice.estimate.epoch_line()}; {choice.estimate.total_line()}."] if choice else []
        if max(ratios) / min(ratios) > 1.15:
            head.append("# note: aspect ratios differ; every image is resized to data.size (stretched)")
        body = [(f"name: {y(name)}", ""), ("task: classification", ""), ("", "")]
        body += _data_rows(s, plan, size, choice.why() if choice else "draft, being timed") + [("", "")]
        body += cls_rows(plan, choice) + [("", ""), ("out: runs", "run folders are written here")]
        return "\n".join(head) + "\n" + lines(body) + "\n"

    out.parent.mkdir(parents=True, exist_ok=True)
    create_text(out, render(candidates[0], None))  # whole or nothing; never over a file that appeared meanwhile
    try:
        draft = validate_written(out, s.channels, len(s.classes))
        floor = epoch_floor(steps_per_epoch(plan.n_train, plan.batch), plan.min_epochs)
        choice = choose_size(candidates, lambda size: _estimate(draft, plan, size), 60.0 * minutes,
                             floor=floor, most=plan.max_epochs)
        replace_text(out, render(choice.size, choice))
        validate_written(out, s.channels, len(s.classes))
    except BaseException:  # also Ctrl-C while timing: no half-made recipe stays behind
        out.unlink(missing_ok=True)
        raise
    return choice.estimate, choice, model.why


def _estimate(r: Recipe, plan: ClsPlan, size: list[int]) -> Estimate:
    """Time the recipe's model at a size (epochs are set by budget.choose_size)."""
    r = dataclasses.replace(r, data=dataclasses.replace(r.data, size=list(size)))
    times = measure_steps(r, plan.channels, plan.num_classes, min(plan.batch, max(plan.n_train, 1)))
    return Estimate(times, steps_per_epoch(plan.n_train, plan.batch), plan.n_val, 1)
