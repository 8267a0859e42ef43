"""Given splits of users' folders: the train / validation / test folders a data set ships, found beside the ones
named, so that training uses them instead of carving a random split out of the training folder.

Layouts recognised from the training pair (`--images DIR --masks DIR`), by swapping the split word in a folder
name for the other splits' words (train/training -> val/valid/validation, test/testing) and keeping the pair only
where both folders exist:
  train/ + trainannot/          -> val/ + valannot/, test/ + testannot/ (SegNet's CamVid; any mask-side name:
                                   train_labels, train_masks, train_annot, ...)
  images/train/ + masks/train/  -> images/val/ + masks/val/, images/test/ + masks/test/ (and training/validation)
  train_images/ + train_masks/  -> val_images/ + val_masks/, ...
and an images folder whose sub-folders are splits (images/{train,val,test}) beside a masks folder with the same.
The recipe names every split's folders under `data.options.splits: {split: {images: DIR, masks: DIR}}` (split
policy `given`); a split not given is carved from the given train split (data.options.fractions), never the test.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from cnnlab.data.formats.folders import _scan as fs
from cnnlab.errors import ConfigError

# a split word at the start of a folder name or after a separator, longest spelling first
SPLIT_WORD = re.compile(r"(?i)(?:^|(?<=[_\-. ]))(training|train|validation|valid|val|testing|test)")
SPELLINGS = {"val": ("val", "valid", "validation"), "test": ("test", "testing")}
MASK_WORDS = {"annot", "annots", "annotation", "annotations", "label", "labels", "labelled", "mask", "masks", "gt",
              "seg", "segmentation", "groundtruth", "ground_truth", "target", "targets"}
IMAGE_WORDS = {"images", "image", "imgs", "img", "inputs", "input", "rgb", "photos"}
ROLES = ("images", "masks", "fov")


def check_splits(raw) -> dict[str, dict[str, str]] | None:
    """Validate data.options.splits: {split: {images: DIR, masks: DIR[, fov: DIR]}}, a train split among them."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"data.options.splits must map split names to folders, got {raw!r}",
                          "e.g. splits: {train: {images: train, masks: trainannot}, test: {images: test, "
                          "masks: testannot}}")
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and entry[k] for k in ROLES[:2]):
            raise ConfigError(f"data.options.splits.{name} must name its folders: {{images: DIR, masks: DIR}}, "
                              f"got {entry!r}")
        extra = [k for k in entry if k not in ROLES]
        if extra:
            raise ConfigError(f"data.options.splits.{name}.{extra[0]}: unknown key", "keys: images, masks, fov")
        out[str(name)] = {k: str(v) for k, v in entry.items()}
    if not any(fs.canonical_split(n) == "train" for n in out):
        raise ConfigError(f"data.options.splits gives {', '.join(out)} but no train split",
                          "name the training folders under splits.train")
    return out


def _swap(path: Path, spelling: str) -> Path | None:
    """path with the split word of its last (else parent) folder name replaced by spelling; None without one."""
    for depth in (0, 1):
        parts = list(path.parts)
        if len(parts) <= depth + 1:
            return None
        i = len(parts) - 1 - depth
        m = SPLIT_WORD.search(parts[i])
        if m:
            word = spelling.capitalize() if m.group(1)[0].isupper() else spelling
            parts[i] = parts[i][:m.start()] + word + parts[i][m.end():]
            return Path(*parts)
    return None


def _word(path: Path) -> str | None:
    """The split named in the last (else parent) folder name, canonical (train/val/test)."""
    for part in (path.name, path.parent.name):
        m = SPLIT_WORD.search(part)
        if m:
            return fs.canonical_split(m.group(1))
    return None


def find_given(images: Path, masks: Path, fov: Path | None = None) -> dict[str, dict[str, Path]]:
    """{split: {images, masks[, fov]}} of the splits found beside a training pair (train first); {} when the pair
    names no training split or no other split exists. Paths are resolved."""
    images, masks = images.expanduser().resolve(), masks.expanduser().resolve()
    fov = fov.expanduser().resolve() if fov is not None else None
    if images == masks:  # the data set's own folder named twice: look for the layouts inside it
        pair = _pair_inside(images) if fov is None else None
        return find_given(*pair) if pair else {}
    nested = fs.split_subfolders(images)
    if nested:  # images/{train,val,test} beside masks/{train,val,test}
        out = {}
        for sub in nested:
            found = {"images": images / sub, "masks": masks / sub, "fov": fov / sub if fov else None}
            if all(p is None or p.is_dir() for p in found.values()):
                out[fs.canonical_split(sub)] = {k: v for k, v in found.items() if v is not None}
        order = ("train", "val", "test")
        out = dict(sorted(out.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        return out if "train" in out and len(out) > 1 else {}
    if _word(images) != "train" or _word(masks) != "train":
        return {}
    out = {"train": {"images": images, "masks": masks, **({"fov": fov} if fov else {})}}
    for split, spellings in SPELLINGS.items():
        for spelling in spellings:
            found = {"images": _swap(images, spelling), "masks": _swap(masks, spelling),
                     **({"fov": _swap(fov, spelling)} if fov else {})}
            if all(p is not None and p.is_dir() and p not in (images, masks) for p in found.values()):
                out[split] = found
                break
    return out if len(out) > 1 else {}


def _pair_inside(root: Path) -> tuple[Path, Path] | None:
    """The training pair inside a data set's folder: train/ beside trainannot/ (train_labels/, train_masks/, ...),
    or images/ beside masks/ (labels/, annotations/, ...) holding split sub-folders; None otherwise."""
    if not root.is_dir():
        return None
    subs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    for d in subs:
        if fs.canonical_split(d.name) != "train":
            continue
        for m in subs:
            rest = m.name[len(d.name):].strip("_-. ").lower() if m.name.lower().startswith(d.name.lower()) else ""
            if m != d and rest in MASK_WORDS:
                return d, m
    imgs = [d for d in subs if d.name.lower() in IMAGE_WORDS and fs.split_subfolders(d)]
    msks = [d for d in subs if d.name.lower() in MASK_WORDS and fs.split_subfolders(d)]
    return (imgs[0], msks[0]) if len(imgs) == 1 and len(msks) == 1 else None


def by_hand(images: Path, masks: Path, fov: Path | None, val: tuple, test: tuple) -> dict[str, dict[str, Path]]:
    """The splits named with --val-images/--val-masks/--test-images/--test-masks (each pair complete)."""
    out = {"train": {"images": images, "masks": masks, **({"fov": fov} if fov else {})}}
    for split, (img, msk) in (("val", val), ("test", test)):
        if (img is None) != (msk is None):
            given, missing = ("images", "masks") if img is not None else ("masks", "images")
            raise ConfigError(f"--{split}-{given} needs --{split}-{missing} too",
                              f"e.g. --{split}-images DIR --{split}-masks DIR")
        if img is not None:
            out[split] = {"images": Path(img), "masks": Path(msk)}
    return {s: {k: Path(p).expanduser().resolve() for k, p in v.items()} for s, v in out.items()}


def carve_fractions(fractions: dict[str, float], given: list[str]) -> dict[str, float]:
    """How the given train split is divided: its own share and the splits not given, scaled to add up to 1
    ({train .7, val .15, test .15} with train and test given -> {train .82, val .18}); the test is never carved
    when it is given."""
    present = {fs.canonical_split(g) for g in given}
    keep = {s: f for s, f in fractions.items() if fs.canonical_split(s) == "train" or
            (fs.canonical_split(s) not in present and f > 0)}
    total = sum(keep.values())
    return {s: f / total for s, f in keep.items()} if total > 0 else {"train": 1.0}


def describe(splits: dict[str, dict], counts: dict[str, int]) -> str:
    """One line: each given split's folders and pairs."""
    return "given splits: " + "; ".join(
        f"{s} {v['images']} + {v['masks']} ({counts.get(s, 0)} pairs)" for s, v in splits.items())


def given_options(images: Path, masks: Path, fov: Path | None = None, val: tuple = (None, None),
                  test: tuple = (None, None)) -> tuple[Path, dict] | None:
    """(data root, reader options) for the given splits: named by hand (val/test pairs) or found beside the
    training pair; None when there are none. The root is the folders' common parent; paths are absolute."""
    found = find_given(images, masks, fov)
    if any(v is not None for v in (*val, *test)):  # named by hand: those, and the others found beside them
        hand = by_hand(images, masks, fov, val, test)
        splits = {s: hand.get(s, found.get(s)) for s in ("train", "val", "test") if s in hand or s in found}
    else:
        splits = found
    if not splits:
        return None
    paths = [p for v in splits.values() for p in v.values()]
    root = Path(os.path.commonpath([str(p) for p in paths]))
    return root, {"split": "given", "splits": {s: {k: str(p) for k, p in v.items()} for s, v in splits.items()}}
