"""`cnnlab new`: look at a user's image/mask folders and write a commented recipe that trains on this machine."""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.config import Recipe
from cnnlab.data.formats import folders
from cnnlab.data.formats.folders import canonical_split, carve_fractions
from cnnlab.errors import CnnlabError, ConfigError, DataError
from cnnlab.new.budget import (
    MAX_PATCH_EPOCHS,
    MAX_SIDE,
    ModelChoice,
    SizeChoice,
    batch_for_steps,
    candidate_sizes,
    choose_model,
    choose_size,
    epoch_floor,
    median_size,
    with_most_epochs,
)
from cnnlab.new.classify import make_classification
from cnnlab.new.estimate import Estimate, measure_steps, steps_per_epoch, validate_written
from cnnlab.new.files import create_text, replace_text
from cnnlab.new.hints import check_command, refuse_problems
from cnnlab.new.own import OwnData, classes_why, data_option_rows, given_option_rows, given_rows
from cnnlab.new.own import given as given_splits
from cnnlab.new.patching import choose_patch, patch_rows, windows_per_image
from cnnlab.new.rows import UNET_EPOCH_S, Plan, lines, pretrained_model, train_rows, y
from cnnlab.new.scene import decide as decide_scene
from cnnlab.new.scene import with_scene
from cnnlab.new.structure import FULL_RESOLUTION_PX, Thinnest, thinnest_class

DEFAULT_MINUTES = 15.0       # `--minutes`: the training time the size and epochs are chosen for
# Rule of thumb for choosing the width only (the time written into the recipe is measured): U-Net width 16,
# depth 4, bf16 on 2 CPU cores, forward + backward ~1.06 s per 256x256 image; grows with pixels and width squared.
S_PER_MEGAPIXEL_W16 = 16.0
PATHS_RULE = ("# Paths: relative paths in a recipe resolve against the directory you run cnnlab from; "
              "`cnnlab new` writes absolute ones, so this recipe works from anywhere.")
FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
VAL_CARVE = 0.2


@dataclass
class Placement:
    """Where the recipe points: data.root, the folder options, and the split policy found."""

    root: str
    rel: dict[str, str]
    train: str
    test: str | None
    val: str | None
    policy: str
    splits: dict | None = None      # policy given: {split: {images, masks[, fov]}} (absolute), new/own.py


@dataclass(frozen=True)
class NewRecipe:
    """The recipe written, the model chosen and the size chosen with its measured training-time estimate."""

    path: Path
    estimate: Estimate
    model: ModelChoice
    size: SizeChoice
    resolution: str = ""  # segmentation: whole images at the size, or patches at the images' own size, and why


def _place(images: Path, masks: Path, fov: Path | None, own: OwnData = OwnData()) -> Placement:
    """Common parent as data.root; sibling folders named val/test holding the same sub-folders make split folders.

    Every path is written absolute (resolved): a relative one resolves against the directory cnnlab runs from,
    so a recipe written with `root: "small"` only worked from the folder where `cnnlab new` ran. With split
    folders the folder options stay sub-folder names, since they name the same sub-folder inside every split.
    """
    given = [p for p in (images, masks, fov) if p is not None]
    for p in given:
        if not p.expanduser().is_dir():
            raise DataError(f"{p}: folder not found", "check --images, --masks and --fov")
    absolute = [p.expanduser().resolve() for p in given]
    found = given_splits(images, masks, fov, own) if own.val != (None, None) or own.test != (None, None) else None
    if found:  # named by hand: those splits
        return _given_place(*found)
    root = Path(os.path.commonpath(absolute))
    rel = {k: os.path.relpath(a, root) for k, a in zip(("images", "masks", "fov"), absolute)}
    siblings = {canonical_split(d.name): d.name for d in sorted(root.parent.iterdir())
                if d.is_dir() and d != root and all((d / r).is_dir() for r in rel.values())}
    if rel["images"] != "." and ({"val", "test"} & set(siblings)):
        return Placement(str(root.parent), rel, root.name, siblings.get("test"), siblings.get("val"), "folders")
    found = given_splits(images, masks, fov, own)
    if found:  # train + trainannot beside val + valannot, images/train beside images/test, ...
        return _given_place(*found)
    full = {k: str(a) for k, a in zip(("images", "masks", "fov"), absolute)}
    return Placement(str(root), full, "train", "test", "val", "random")


def _given_place(root: Path, opts: dict) -> Placement:
    """The Placement of given splits (new/own.py writes their rows)."""
    splits = opts["splits"]
    train = splits["train"]
    return Placement(str(root), dict(train), "train", "test" if "test" in splits else None, "val", "given", splits)


def _depth(median_hw: tuple[float, float]) -> int:
    """U-Net from scratch: four halvings when the input allows (the course U-Net), fewer for small images."""
    mh, mw = median_hw
    short = min(mh, mw) * min(1.0, MAX_SIDE / max(mh, mw))
    return 4 if short >= 64 else 3 if short >= 32 else 2


def _width(n_train: int, size: list[int]) -> int:
    """The widest of 32/16/8 whose epoch fits the budget by the rule of thumb (then measured, see new_estimate)."""
    mp = n_train * size[0] * size[1] / 1e6
    for width in (32, 16, 8):
        if mp * S_PER_MEGAPIXEL_W16 * (width / 16) ** 2 <= UNET_EPOCH_S:
            return width
    return 8


def _plan(s: folders.Survey, place: Placement, model: ModelChoice, depth: int) -> Plan:
    """Training and validation images per epoch (a carved validation set comes out of train), and the batch:
    8 for the pretrained network on 64+ images (recipe (f)), else 4 (2 under 8 images) for more steps, halved
    further where 12 epochs would be under MIN_STEPS optimizer steps (budget.batch_for_steps)."""
    n_train = _n_split(s, place.train)
    if place.policy == "folders" and not place.val:
        n_val = max(1, round(VAL_CARVE * n_train))  # as data.loading carves val_fraction
        n_train -= n_val
    else:
        n_val = _n_split(s, place.val)
    batch = 8 if model.pretrained and n_train >= 64 else 4 if n_train >= 8 else 2
    return Plan(n_train, n_val, batch_for_steps(n_train, batch), model, depth)


def _params(plan: Plan, size: list[int]) -> dict:
    """model.params at a size: the pretrained network's are fixed; the U-Net's width follows the size."""
    if plan.model.pretrained:
        return pretrained_model(plan.model.unet_decoder, plan.model.full_resolution)[1]
    return {"width": _width(plan.n_train, size), "depth": plan.depth}


def _n_split(s: folders.Survey, split: str | None) -> int:
    return len(s.layout.splits.get(split, [])) if split else 0


def _data_rows(s: folders.Survey, place: Placement, size: list[int], size_why: str) -> list[tuple[str, str]]:
    """The data section: where, which splits, the size and the reader options."""
    enc = s.encoding
    rows = [("data:", ""), ("  format: folders", "your own image/mask folders (cnnlab.data.formats.folders)"),
            (f"  root: {y(place.root)}", "absolute: the recipe works from any directory")]
    if place.policy == "given":
        rows += given_rows(s, place.splits, _carve(s, place))
    elif place.policy == "folders":
        n = _n_split(s, place.train)
        rows.append((f"  train: {y(place.train)}", f"{n} pairs"))
        if place.val:
            rows.append((f"  val: {y(place.val)}", f"{_n_split(s, place.val)} pairs"))
        else:
            rows.append((f"  val_fraction: {VAL_CARVE}", f"no validation folder: {max(1, round(VAL_CARVE * n))} of the "
                         f"{place.train} pairs held out (seeded)"))
        rows.append((f"  test: {y(place.test or 'test')}", f"{_n_split(s, place.test)} pairs" if place.test
                     else "no test folder: final metrics come from validation"))
    else:
        counts = ", ".join(f"{k} {len(v)}" for k, v in s.layout.splits.items())
        nested = any(g.images.nested for g in s.layout.groups)  # sub-folders: by case, or named as splits
        kind = "contiguous" if s.sequence else "random"  # a sequence is never found in nested folders
        rows += [("  train: train", s.layout.policy_note if nested else
                  f"{kind} split of {len(s.layout.all_pairs())} pairs: {counts}"),
                 ("  val: val", ""), ("  test: test", "" if "test" in s.layout.splits or not nested else
                                      "no test sub-folder: final metrics come from validation")]
    rows += [(f"  size: {y(size)}", size_why), ("  options:", "")]
    rows.append((f"    images: {y(place.rel['images'])}", f"{len(s.sizes)} images, "
                 f"{'colour' if s.channels == 3 else 'grey'}"))
    rules = "; ".join(f"{r} ({c})" for g in s.layout.groups for r, c in g.mask_match.rules.most_common())
    rows.append((f"    masks: {y(place.rel['masks'])}", f"matched by {rules}"))
    if place.rel.get("fov"):
        rows.append((f"    fov: {y(place.rel['fov'])}", "field of view: pixels outside are ignored (mask 255)"))
    if place.policy == "given":
        rows = [r for r in rows if not r[0].startswith(("    images:", "    masks:", "    fov:"))]
        rows += given_option_rows(place.splits, _carve(s, place), s)
    elif place.policy == "folders":
        rows.append(("    split: folders", "one folder per split (siblings), each holding the folders above"))
    elif s.sequence:  # one sequence (folders' one_sequence; never nested)
        rows += [("    split: contiguous", "one sequence (the note above): blocks in name order, train first and "
                  "test last, so only the blocks' edges touch; a random split would score the test on images whose "
                  "near-identical neighbours it trained on"),
                 (f"    fractions: {y(FRACTIONS)}", "")]
    else:
        rows += [("    split: random", "images in sub-folders: each sub-folder stays in one split (named "
                  "train/val/test: those splits)" if nested else "no val/test folders found: seeded random split"),
                 (f"    fractions: {y(FRACTIONS)}", ""),
                 ("    seed: 0", "fixed, so the split does not move between runs")]
    ratios = [w / h for h, w in s.sizes]
    varied = max(ratios) / min(ratios) > 1.15
    rows += [("    fit: resize", "one size for batching (images bilinear, masks nearest)"),
             (f"    keep_aspect: {y(varied)}", "aspect ratios differ: scale to fit and pad (padding ignored)"
              if varied else "all images have about one aspect ratio: plain resize")]
    shares = ", ".join(f"{n} {100 * f:.1f}%" for n, f in zip(enc.class_names, s.shares()))
    rows.append((f"    classes: {y(list(enc.class_names))}", f"{classes_why(s)}; {enc.describe()}; "
                 f"pixel shares: {shares}"))
    return rows + data_option_rows(s)


def _carve(s: folders.Survey, place: Placement) -> dict[str, float]:
    """How the given train split is divided (the reader's rule, from the survey's options)."""
    return carve_fractions(s.opts.fractions, list(place.splits or {}))


def write_recipe(task: str, images: str | Path, masks: str | Path | None, out: str | Path,
                 fov: str | Path | None = None,
                 name: str | None = None, encoder: str = "auto", minutes: float = DEFAULT_MINUTES,
                 own: OwnData = OwnData()) -> Path:
    """Inspect the folders and write a commented, validated recipe to out (never overwriting)."""
    return make_recipe(task, images, masks, out, fov, name, encoder, minutes, own).path


def _survey(images: str | Path, masks: str | Path, fov: str | Path | None, own: OwnData = OwnData()
            ) -> tuple[Placement, folders.Survey]:
    """Every pair decoded, not only its header: a truncated JPEG passes the header read, then stops training.

    Any problem refuses the recipe, naming the file: the folders reader has no exclude list, so a recipe that
    left a corrupt file out would have to change the split (e.g. a split_file) and would train on other pairs
    than the folders hold; the fix (replace or remove the file) is the user's, and takes one command to verify.
    """
    place = _place(Path(images), Path(masks), Path(fov) if fov else None, own)
    opts = {"images": place.rel["images"], "masks": place.rel["masks"], "split": place.policy}
    if fov:
        opts["fov"] = place.rel["fov"]
    if place.policy == "given":
        opts = {"split": "given", "splits": place.splits}
    opts.update(own.reader_options())
    s = folders.survey(Path(place.root), decode=True, **opts)
    refuse_problems(s.problems, check_command(images, masks, fov))
    return place, s


def make_recipe(task: str, images: str | Path, masks: str | Path | None, out: str | Path,
                fov: str | Path | None = None, name: str | None = None, encoder: str = "auto",
                minutes: float = DEFAULT_MINUTES, own: OwnData = OwnData()) -> NewRecipe:
    """write_recipe, with the model chosen (encoder: auto|imagenet|none) and the size and epochs chosen from
    training steps timed on this machine to fit `minutes` (see cnnlab.new.budget). task classification: `images`
    is a folder of class folders (cnnlab.new.classify) and masks must be None."""
    out = Path(out)
    if task not in WRITERS:
        raise ConfigError(f"cnnlab new --task {task}: must be one of {', '.join(WRITERS)}",
                          "e.g. cnnlab new --task classification --images DIR --out recipe.yaml")
    if not minutes > 0:
        raise ConfigError(f"--minutes {minutes:g}: the training budget must be positive", "e.g. --minutes 15")
    if out.exists():
        raise CnnlabError(f"{out}: recipe already exists", "choose another --out, or delete the file first")
    return WRITERS[task](images, masks, out, fov, name, encoder, minutes, own)


def _classification_recipe(images: str | Path, masks: str | Path | None, out: Path, fov: str | Path | None,
                           name: str | None, encoder: str, minutes: float, own: OwnData = OwnData()) -> NewRecipe:
    """The course CNN with recipe (t)'s training for a folder of class folders (cnnlab.new.classify)."""
    if own != OwnData():
        raise ConfigError("--task classification reads class folders: --void, --classes, --val-/--test- folders and "
                          "--scene are for segmentation", "e.g. cnnlab new --task classification --images DIR "
                          "--out recipe.yaml")
    if masks is not None or fov is not None:
        raise ConfigError("--task classification reads class folders: --masks and --fov are for segmentation",
                          "e.g. cnnlab new --task classification --images DIR --out recipe.yaml")
    if encoder == "imagenet":
        raise ConfigError("--encoder imagenet: `new` writes the course CNN from scratch for classification",
                          "drop --encoder; for an ImageNet classifier start from recipes/mnist/j_lite0_frozen.yaml")
    est, choice, why = make_classification(images, out, name or _run_name(out), minutes)
    return NewRecipe(out, est, ModelChoice(False, why), choice)


def _segmentation_recipe(images: str | Path, masks: str | Path | None, out: Path, fov: str | Path | None,
                         name: str | None, encoder: str, minutes: float, own: OwnData = OwnData()) -> NewRecipe:
    """Image and mask folders: the model, size and epochs chosen by survey and timed steps."""
    if masks is None:
        raise ConfigError("--task segmentation needs --masks (a folder of masks named like the images)",
                          "e.g. cnnlab new --images DIR --masks DIR --out recipe.yaml")
    place, s = _survey(images, masks, fov, own)
    scene = decide_scene([p.mask for p in s.layout.splits.get(place.train, [])], s.encoding, own.scene)
    median = median_size(s.sizes)
    model = choose_model(encoder, s.channels, median)
    thinnest = thinnest_class([p.mask for p in s.layout.splits.get(place.train, [])], s.encoding,
                              list(s.encoding.class_names)) if model.pretrained else None
    model = _with_decoder(model, thinnest)
    plan = _plan(s, place, model, _depth(median))
    candidates = candidate_sizes(median, 32 if model.pretrained else 2 ** plan.depth, own_size=model.pretrained)
    classes = list(s.encoding.class_names)

    def render(size: list[int], choice: SizeChoice | None) -> str:
        head = [f"# Written by `cnnlab new` from {images} + {masks}{' + ' + str(fov) if fov else ''}.",
                "# Every value is a starting point: edit freely. Train with: cnnlab train " + str(out), PATHS_RULE,
                f"# Model: {model.why}."]
        head += [f"# Decoder: {model.decoder_why}."] if model.decoder_why else []
        est = choice.estimate if choice else None
        patch = choose_patch(thinnest, size, median) if choice else choose_patch(None, size, median)
        head += [f"# Resolution: {patch.why}."] if choice else []
        head += [f"# Time: {est.epoch_line()}; {est.total_line()}."] if est else []
        head += [f"# note: {w}" for w in s.warnings]
        body = [(f"name: {y(name or _run_name(out))}", ""), ("task: segmentation", ""), ("", "")]
        size_why = choice.why() if choice else "draft, being timed"
        train = train_rows(plan, _params(plan, size), size, classes, s.shares(), s.channels, choice,
                           cpu=not torch.cuda.is_available())
        train = with_scene(train, scene, size[0] == size[1])  # flips and turns by the scene (new/scene.py)
        # data.patch instead of data.size where thin structures would shrink away (new/patching.py)
        data, train = patch_rows(_data_rows(s, place, size, size_why), train, patch)
        body += data + [("", "")] + train
        body += [("", ""), ("out: runs", "run folders are written here")]
        return "\n".join(head) + "\n" + lines(body) + "\n"

    out.parent.mkdir(parents=True, exist_ok=True)
    create_text(out, render(candidates[0], None))  # whole or nothing; never over a file that appeared meanwhile
    try:
        draft = validate_written(out, s.channels, len(classes))

        choice = choose_size(candidates, _timer(draft, s, plan, thinnest, median), 60.0 * minutes,
                             floor=epoch_floor(steps_per_epoch(plan.n_train, plan.batch)))
        resolution = choose_patch(thinnest, choice.size, median)
        if resolution.patch:  # a patch is part of an image: more epochs
            choice = with_most_epochs(choice, MAX_PATCH_EPOCHS)
        replace_text(out, render(choice.size, choice))
        validate_written(out, s.channels, len(classes))
    except BaseException:  # also Ctrl-C while timing: no half-made recipe stays behind
        out.unlink(missing_ok=True)
        raise
    return NewRecipe(out, choice.estimate, model, choice, resolution.why)


# what `cnnlab new --task NAME` writes, one function per task it knows
WRITERS = {"segmentation": _segmentation_recipe, "classification": _classification_recipe}

def _with_decoder(model: ModelChoice, thinnest: Thinnest | None) -> ModelChoice:
    """The pretrained network with the U-Net decoder where the thinnest class is thin (new/structure.py)."""
    if not model.pretrained:
        return model
    return dataclasses.replace(model, unet_decoder=bool(thinnest and thinnest.thin),
                               full_resolution=bool(thinnest and thinnest.fine),
                               decoder_why=_decoder_line(thinnest))


def _decoder_line(thinnest: Thinnest | None) -> str:
    """Why this decoder, from the masks, with the measurements behind the rule."""
    if thinnest is None:
        return "light FCN decoder (no masks to measure)"
    if thinnest.thin:
        return (f"U-Net decoder: {thinnest.line()}, thin structures, where its skips won (DRIVE vessels: 0.805 "
                f"against the FCN decoder's 0.796 at native size, all 20 test images better)"
                + (f", with a fifth block at full resolution: under {FULL_RESOLUTION_PX:g} px (DRIVE: 0.8155 against "
                   f"0.8091 at 584x565, 19 of 20 test images better)" if thinnest.fine else
                   f"; no block at full resolution: {FULL_RESOLUTION_PX:g} px or wider (ISBI's 3.7 px membranes "
                   f"gained nothing from it)"))
    return (f"light FCN decoder: {thinnest.line()}, objects rather than thin structures, where it won (course "
            f"data: 0.905 against the U-Net decoder's 0.75 strict mean Dice at equal epochs)")


def _at_size(r: Recipe, plan: Plan, size: list[int]) -> Recipe:
    """The draft recipe at another input size (and, for the U-Net, the width that size gets)."""
    return dataclasses.replace(r, data=dataclasses.replace(r.data, size=list(size)),
                               model=dataclasses.replace(r.model, params=_params(plan, size)))


def _timer(draft: Recipe, s: folders.Survey, plan: Plan, thinnest: Thinnest | None,
           median: tuple[float, float]) -> Callable[[list[int]], Estimate]:
    """The estimate at each candidate size, for budget.choose_size: a patch run's step is timed at its patch, and
    candidates that cut the same patch share its one timing (DRIVE's sizes from 384x384 up all cut 384x384)."""
    timed: dict[tuple, Estimate] = {}

    def estimate_at(size: list[int]) -> Estimate:
        patch = choose_patch(thinnest, size, median)
        at, windows = patch.patch or size, windows_per_image(patch, median, draft.train.window_overlap)
        if (tuple(at), windows) not in timed:
            timed[tuple(at), windows] = _estimate(_at_size(draft, plan, at), s, plan, windows)
        return timed[tuple(at), windows]

    return estimate_at


def _estimate(r: Recipe, s: folders.Survey, plan: Plan, windows: int = 1) -> Estimate:
    """Time the recipe's model at its size (the epochs are set by budget.choose_size); `windows` forward passes
    per validation image where patches are chosen at that size (the whole images are scored tile by tile)."""
    times = measure_steps(r, s.channels, len(s.encoding.class_names), min(plan.batch, max(plan.n_train, 1)))
    return Estimate(times, steps_per_epoch(plan.n_train, plan.batch), plan.n_val, 1, windows)


def _run_name(out: Path) -> str:
    """The recipe file's stem as a valid run name (`my data.yaml` -> `my-data`): run names become folder names."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", out.stem).strip("-._") or "run"
