"""Warwick GlaS release layout: train_N.bmp + train_N_anno.bmp (instance labels), testA_*, testB_*, Grade.csv.

All files sit in one folder (as in "Warwick QU Dataset (Released 2016_07_08)"). Every non-zero annotation value
is one gland instance; the reader merges them into a binary background/gland mask. Images come in more than one
size, so the reader always resizes (default 128 x 128, the course's preprocessing; masks nearest).
Options: stain: none (RGB, 3 channels) | hed (colour deconvolution to haematoxylin + eosin, 2 channels; see
cnnlab.data.stain for the fixed scaling).
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.formats.common import is_junk, read_image, read_input, resize_images, resize_masks
from cnnlab.data.parallel import chw, concat, ordered_map
from cnnlab.data.stain import unmix_he
from cnnlab.data.types import SegData
from cnnlab.errors import ConfigError, DataError, did_you_mean

PREFIXES = ("train", "testA", "testB")
SPLITS = {"train": ("train",), "testA": ("testA",), "testB": ("testB",), "test": ("testA", "testB")}
STAINS = ("none", "hed")
DEFAULT_SIZE = [128, 128]
CLASS_NAMES = ["background", "gland"]
OPTIONS = ("stain",)
_FILE = re.compile(r"^(train|testa|testb)_(\d+)(_anno)?\.bmp$", re.IGNORECASE)
_CANON = {p.lower(): p for p in PREFIXES}


@dataclass
class _Scan:
    """What the folder holds: (prefix, number) -> {'image': path, 'anno': path}, plus skipped entries."""

    pairs: dict[tuple[str, int], dict[str, Path]] = field(default_factory=dict)
    junk: int = 0
    other: list[str] = field(default_factory=list)


def _scan(root: Path) -> _Scan:
    """Index the GlaS files in root by split prefix and number."""
    if not root.is_dir():
        raise DataError(f"{root}: GlaS folder not found",
                        "point data.root at the folder holding train_N.bmp and train_N_anno.bmp; "
                        "`cnnlab data synth glas --out DIR` writes an example")
    scan = _Scan()
    for p in sorted(root.iterdir()):
        if is_junk(p):
            scan.junk += 1
            continue
        m = _FILE.match(p.name)
        if not m:
            if p.name != "Grade.csv":
                scan.other.append(p.name)
            continue
        key = (_CANON[m.group(1).lower()], int(m.group(2)))
        kind = "anno" if m.group(3) else "image"
        slot = scan.pairs.setdefault(key, {})
        if kind in slot:
            raise DataError(f"{p}: duplicate of {slot[kind].name} (same split and number)",
                            "keep one file per sample")
        slot[kind] = p
    return scan


def list_splits(root: Path) -> list[str]:
    """Splits with at least one image: train, testA, testB, and test (= testA + testB) when either exists."""
    prefixes = {prefix for prefix, _ in _scan(Path(root)).pairs}
    splits = [p for p in PREFIXES if p in prefixes]
    if {"testA", "testB"} & prefixes:
        splits.append("test")
    return splits


def read_grades(root: Path) -> tuple[dict[str, str], list[str]]:
    """Image name -> GlaS grade (benign / malignant) from Grade.csv; problems become notes (the file is optional)."""
    path = Path(root) / "Grade.csv"
    if not path.is_file():
        return {}, ["no Grade.csv (grades unknown)"]
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig", errors="replace").splitlines()))
    except csv.Error as e:
        return {}, [f"Grade.csv is not readable CSV ({e}); grades ignored"]
    if not rows:
        return {}, ["Grade.csv is empty; grades ignored"]
    header = [h.strip().lower() for h in rows[0]]
    grade_cols = [i for i, h in enumerate(header) if "grade" in h]
    if not header or header[0] != "name" or not grade_cols:
        return {}, [f"Grade.csv header {rows[0]} lacks 'name' and a grade column; grades ignored"]
    col = grade_cols[0]  # the first grade column is the GlaS challenge grade (benign / malignant)
    grades = {r[0].strip(): r[col].strip() for r in rows[1:] if len(r) > col and r[0].strip()}
    return grades, []


def _read_options(options: dict) -> str:
    """Validate reader options; returns the stain mode."""
    for key in options:
        if key not in OPTIONS:
            raise ConfigError(f"unknown glas reader option 'data.options.{key}'", did_you_mean(key, OPTIONS))
    stain = options.get("stain", "none")
    if stain not in STAINS:
        raise ConfigError(f"config key 'data.options.stain' must be one of {', '.join(STAINS)}, got {stain!r}",
                          "hed = colour deconvolution to haematoxylin + eosin channels")
    return stain


def _read_pair(image_p: Path, anno_p: Path, stain: str) -> tuple[np.ndarray, np.ndarray, int]:
    """One sample: image (C x H x W uint8), binary mask (H x W uint8) and its number of gland instances; runs in a
    decode thread."""
    img = read_input(image_p, 3)
    anno = read_image(anno_p)
    if anno.ndim == 3:  # an RGB-saved annotation: a pixel is a gland where any channel is non-zero
        anno = anno.max(axis=2)
    if anno.shape[:2] != img.shape[:2]:
        raise DataError(f"{anno_p}: annotation is {anno.shape[1]}x{anno.shape[0]} but its image is "
                        f"{img.shape[1]}x{img.shape[0]}", "annotations must match their image's size")
    instances = int(np.count_nonzero(np.unique(anno)))
    mask = (anno != 0).astype(np.uint8)
    # chw copies where needed: PIL's buffers are read-only, which torch.from_numpy warns about
    return chw(unmix_he(img) if stain == "hed" else img), mask, instances


def _split_keys(scan: _Scan, root: Path, split: str) -> list[tuple[str, int]]:
    """Sample keys of a split in numeric order, after checking every image has its annotation and vice versa."""
    if split not in SPLITS:
        raise DataError(f"{root}: no split '{split}' in the GlaS layout", did_you_mean(split, SPLITS))
    keys = sorted((k for k in scan.pairs if k[0] in SPLITS[split]), key=lambda k: (PREFIXES.index(k[0]), k[1]))
    if not keys:
        present = ", ".join(list_splits(root)) or "none"
        raise DataError(f"{root}: no {'/'.join(SPLITS[split])}_N.bmp files for split '{split}'",
                        f"splits present: {present}")
    for prefix, n in keys:
        slot = scan.pairs[(prefix, n)]
        if "anno" not in slot:
            raise DataError(f"{slot['image']}: image has no annotation ({prefix}_{n}_anno.bmp missing)",
                            "add the annotation or remove the image")
        if "image" not in slot:
            raise DataError(f"{slot['anno']}: annotation has no image ({prefix}_{n}.bmp missing)",
                            "add the image or remove the annotation")
    return keys


def _grade_notes(names: list[str], grades: dict[str, str], split: str) -> list[str]:
    """Per-split grade counts (benign / malignant) and names missing from Grade.csv."""
    if not grades:
        return []
    counts = Counter(grades[n] for n in names if n in grades)
    notes = [f"{split} grades: " + ", ".join(f"{g} {c}" for g, c in sorted(counts.items()))] if counts else []
    missing = [n for n in names if n not in grades]
    if missing:
        notes.append(f"{split}: {len(missing)} image(s) not in Grade.csv (e.g. {missing[0]})")
    return notes


def load(root: Path, split: str, size: list[int] | None = None, **options) -> SegData:
    """Read one split (train, testA, testB or test = A + B) into memory, masks binary, resized to size."""
    root = Path(root)
    stain = _read_options(options)
    scan = _scan(root)
    keys = _split_keys(scan, root, split)
    size = list(size) if size is not None else list(DEFAULT_SIZE)
    images, masks, native, instances = [], [], Counter(), 0
    slots = [scan.pairs[key] for key in keys]
    for img, mask, n_inst in ordered_map(lambda slot: _read_pair(slot["image"], slot["anno"], stain), slots):
        native[f"{img.shape[2]}x{img.shape[1]}"] += 1
        instances += n_inst
        images.append(resize_images(torch.from_numpy(img)[None], size))
        masks.append(resize_masks(torch.from_numpy(mask)[None], size))
    names = [slot["image"].stem for slot in slots]
    notes = [f"{split}: {instances} gland instances merged into binary masks",
             f"{split}: resized from " + ", ".join(f"{s} ({c})" for s, c in sorted(native.items()))
             + f" to {size[1]}x{size[0]} (WxH)"]
    if stain == "hed":
        notes.append("stain unmixing: channels are haematoxylin, eosin (fixed scaling, cnnlab.data.stain)")
    if scan.junk:
        notes.append(f"skipped {scan.junk} system file(s)")
    if scan.other:
        notes.append(f"ignored {len(scan.other)} file(s) outside the GlaS naming (e.g. {scan.other[0]})")
    grades, grade_problems = read_grades(root)
    notes += grade_problems + _grade_notes(names, grades, split)
    return SegData(concat(images), concat(masks), names, list(CLASS_NAMES), None, notes)


def check(root: Path) -> str:
    """Validate the layout and summarise images, gland instances, sizes, grades and gland pixel share per split."""
    root = Path(root)
    splits = [s for s in list_splits(root) if s != "test"]
    if not splits:
        raise DataError(f"{root}: no GlaS files (train_N.bmp, testA_N.bmp, testB_N.bmp)",
                        "point at the folder of the GlaS release")
    lines = [f"GlaS layout at {root}"]
    for split in splits:
        d = load(root, split)
        share = d.masks.double().mean().item()
        lines.append(f"  {split}: {len(d)} images, gland {100 * share:.1f}% / background "
                     f"{100 * (1 - share):.1f}% of pixels (at {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]})")
        lines += [f"    {n}" for n in d.notes]
    return "\n".join(dict.fromkeys(lines))
