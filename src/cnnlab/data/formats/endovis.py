"""EndoVis 2017 course layout: segmentation/<split>/<i>/<i>_input.jpg + <i>_mask.png, grey levels from mapping.json."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.formats.common import (
    class_shares,
    inside_root,
    is_junk,
    read_image,
    read_input,
    resize_images,
    resize_masks,
)
from cnnlab.data.parallel import chw, concat, ordered_map
from cnnlab.data.types import SegData
from cnnlab.errors import DataError

SEG_SPLITS = ("train", "validation", "test")
COLOR_SPLITS = ("train_cor", "validation_cor")
_PAIR = re.compile(r'"([^"\n]+)"\s*:\s*(-?\d+)')


def read_mapping(root: Path) -> tuple[dict[str, int], list[str]]:
    """Class name -> grey level from mapping.json, recovering hand-edited files when unambiguous."""
    path = root / "mapping.json"
    notes: list[str] = []
    if not path.is_file():
        raise DataError(f"{path}: mapping file not found",
                        'write {"Background_Tissue": 0, "<class>": <grey level>, ...} there')
    text = path.read_text(errors="replace")
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected an object of class name -> grey level")
        mapping = raw
    except json.JSONDecodeError:
        pairs = _PAIR.findall(text)
        leftover = _PAIR.sub("", text)
        if not pairs or re.sub(r"[\s{},]", "", leftover):
            raise DataError(f"{path}: not valid JSON and not an unambiguous list of \"name\": level pairs",
                            'fix it to {"name": level, ...}') from None
        names = [n for n, _ in pairs]
        if len(set(names)) != len(names):
            raise DataError(f"{path}: class name repeated in a malformed file", "fix the file by hand") from None
        mapping = {n: int(v) for n, v in pairs}
        notes.append(f"{path.name} is not valid JSON (missing commas?); recovered {len(mapping)} classes "
                     "from its name: level pairs")
    for name, level in mapping.items():
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 255:
            raise DataError(f"{path}: class '{name}' has grey level {level!r}", "levels are integers 0..255")
    if len(set(mapping.values())) != len(mapping):
        raise DataError(f"{path}: two classes share one grey level", "each class needs its own level")
    ordered = dict(sorted(mapping.items(), key=lambda kv: kv[1]))
    return ordered, notes


def list_splits(root: Path) -> list[str]:
    """Segmentation splits present under root/segmentation."""
    seg = Path(root) / "segmentation"
    return [s for s in SEG_SPLITS if (seg / s).is_dir()]


def sample_dirs(split_dir: Path) -> tuple[list[Path], int]:
    """Sample folders sorted numerically where names are numbers, plus the count of skipped junk entries."""
    dirs, junk = [], 0
    for p in split_dir.iterdir():
        if is_junk(p) or not p.is_dir():
            junk += 1
            continue
        dirs.append(inside_root(p, split_dir) if p.is_symlink() else p)  # a plain entry of split_dir is inside
    dirs.sort(key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))
    return dirs, junk


def _decode_mask(path: Path, lut: np.ndarray) -> np.ndarray:
    """Grey-level mask -> class indices through the mapping; unknown levels are an error naming the value."""
    arr = read_image(path)
    if arr.ndim == 3:
        if arr.shape[2] >= 3 and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
            arr = arr[..., 0]
        else:
            raise DataError(f"{path}: mask has colour channels", "save masks as single-channel grey levels")
    idx = lut[arr]  # fancy indexing copies: the result is writable
    if (idx == 255).any():
        bad = sorted(set(np.unique(arr[idx == 255]).tolist()))
        raise DataError(f"{path}: grey value(s) {bad[:5]} not in mapping.json",
                        "add them to mapping.json or fix the mask")
    return idx


def _read_sample(d: Path, split_dir: Path, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One sample folder: its image (C x H x W) and class-index mask (H x W), checked; runs in a decode thread."""
    img_p, mask_p = d / f"{d.name}_input.jpg", d / f"{d.name}_mask.png"
    for p in (img_p, mask_p):
        if not p.is_file():
            raise DataError(f"{p}: missing", f"each sample folder needs {d.name}_input.jpg and {d.name}_mask.png")
        if p.is_symlink():  # d is inside split_dir already: only a link can lead out
            inside_root(p, split_dir)
    img = read_input(img_p, 3)
    mask = _decode_mask(mask_p, lut)
    if img.shape[:2] != mask.shape[:2]:
        raise DataError(f"{mask_p}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{img.shape[1]}x{img.shape[0]}", "masks must match their image's size")
    return chw(img), mask


def load(root: Path, split: str, size: list[int] | None = None, **options) -> SegData:
    """Read one split into memory as uint8 tensors (decode once)."""
    if options:
        raise DataError(f"unknown endovis reader option(s): {', '.join(options)}", "the endovis format takes none")
    root = Path(root)
    if not (root / "segmentation").is_dir():
        raise DataError(f"{root}: no 'segmentation' folder here",
                        "expected ROOT/segmentation/{train,validation,test}/<i>/<i>_input.jpg and mapping.json; "
                        "`cnnlab data synth endovis --out DIR` writes an example")
    mapping, notes = read_mapping(root)
    split_dir = root / "segmentation" / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder not found", f"present: {', '.join(list_splits(root)) or 'none'}")
    lut = np.full(256, 255, dtype=np.uint8)
    for i, level in enumerate(mapping.values()):
        lut[level] = i
    dirs, junk = sample_dirs(split_dir)
    if junk:
        notes.append(f"{split}: skipped {junk} non-sample entries (system files)")
    if not dirs:
        raise DataError(f"{split_dir}: no sample folders", "expected <i>/<i>_input.jpg and <i>/<i>_mask.png")
    images, masks = [], []
    for d, (img, mask) in zip(dirs, ordered_map(lambda d: _read_sample(d, split_dir, lut), dirs)):
        if images and img.shape != images[0].shape and size is None:
            raise DataError(f"{d / f'{d.name}_input.jpg'}: size {img.shape[2]}x{img.shape[1]} differs from the "
                            "split's first image", "set data.size: [H, W] to resize on load")
        images.append(img if size is None else resize_images(torch.from_numpy(img)[None], size))
        masks.append(mask if size is None else resize_masks(torch.from_numpy(mask)[None], size))
    if size is None:
        x, m = torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))  # np.stack copies
    else:
        x, m = concat(images), concat(masks)
    names = [d.name for d in dirs]
    return SegData(x, m, names, list(mapping), None, notes)


def check(root: Path) -> str:
    """Validate the layout and summarise counts and class pixel shares per split."""
    root = Path(root)
    lines = [f"EndoVis course layout at {root}"]
    splits = list_splits(root)
    if not splits:
        raise DataError(f"{root}: no 'segmentation' folder with train/validation/test splits here",
                        "expected ROOT/segmentation/{train,validation,test}/<i>/<i>_input.jpg and mapping.json")
    for split in splits:
        d = load(root, split)
        shares = class_shares(d.masks, len(d.class_names))
        lines.append(f"  {split}: {len(d)} samples, {d.images.shape[2]}x{d.images.shape[3]} (HxW)")
        lines += [f"    {n:<28} {100 * s:6.2f}% of pixels" for n, s in zip(d.class_names, shares.tolist())]
        lines += [f"  note: {n}" for n in d.notes]
    if "test" not in splits:
        lines.append("  note: no test split (segmentation/test); runs will report validation metrics only")
    for split in COLOR_SPLITS:
        p = root / "colorization" / split
        if p.is_dir():
            n = sum(1 for q in p.iterdir() if q.is_dir() and not is_junk(q))
            lines.append(f"  colorization/{split}: {n} samples")
    return "\n".join(dict.fromkeys(lines))
