"""ImageFolder-style trees, root/<split>/<class>/<image> (the course's Train/0..9/*.png, Test/0..9/*.png), or
root/<class>/<image> (torchvision's ImageFolder layout: no split folders; the root itself is the one split '.',
which a `resplit` carves into train/val/test).

Images are decoded with PIL once, at load, into one uint8 tensor per split. Class indices come from
the union of class folders over all splits (sorted naturally, so '10' follows '9'), so a split that
lacks a class keeps the same label numbering as the others; a root of class folders has exactly its own.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.formats._cls_common import carve_splits, is_junk, resplit_names, summarise_split, unknown_options
from cnnlab.data.formats.common import WIDE_MODES, header, note_decoded, open_image, scale_wide
from cnnlab.data.parallel import ordered_map
from cnnlab.data.types import ClsData
from cnnlab.errors import DataError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
EXPECTED = ("one folder per split (e.g. Train/, Test/), each with one folder per class holding the images; or one "
            "folder per class holding the images")
FLAT = "."  # the split name of a root that holds class folders directly


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def subdirs(folder: Path) -> list[Path]:
    """Sub-folders, minus hidden ones and the __MACOSX litter of zips made on a Mac."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX"),
                  key=lambda p: _natural_key(p.name))


def _has_images(folder: Path) -> bool:
    """Whether a folder holds an image file directly; stops at the first (os.scandir: is_flat asks this of every
    class folder, and a class may hold thousands of files, which Path.iterdir would list whole)."""
    with os.scandir(folder) as entries:
        return any(e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS for e in entries)


def _is_split_folder(folder: Path) -> bool:
    """No images of its own, and sub-folders (classes) that hold some."""
    return not _has_images(folder) and any(_has_images(c) for c in subdirs(folder))


def is_flat(root: Path) -> bool:
    """True for root/<class>/<image>: some sub-folder holds images and none is a split folder (a class folder may
    hold folders of its own, which are not read, as before)."""
    subs = subdirs(root)
    return any(_has_images(s) for s in subs) and not any(_is_split_folder(s) for s in subs)


def _check_root(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found", f"expected {EXPECTED}")
    if not is_flat(root) and not [s for s in subdirs(root) if subdirs(s)]:
        raise DataError(f"{root}: no split/class folders found", f"expected {EXPECTED}")
    return root


def _split_dir(root: Path, split: str) -> Path:
    """The split folder; 'train' also finds 'Train' when that is the only case-insensitive match."""
    exact = root / split
    if exact.is_dir():
        return exact
    matches = [p for p in subdirs(root) if p.name.lower() == split.lower()]
    if len(matches) == 1:
        return matches[0]
    raise DataError(f"{root}: no split folder '{split}'", f"splits here: {', '.join(list_splits(root)) or 'none'}")


def all_classes(root: Path) -> list[str]:
    if is_flat(root):
        return [c.name for c in subdirs(root)]
    names = {c.name for s in subdirs(root) for c in subdirs(s)}
    return sorted(names, key=_natural_key)


def scan_split(split_dir: Path, classes: list[str]) -> tuple[list[tuple[Path, int]], int, int]:
    """(image path, label) pairs, plus counts of skipped junk and non-image files."""
    items, junk, other = [], 0, 0
    for cdir in subdirs(split_dir):
        label = classes.index(cdir.name)
        for p in sorted(cdir.iterdir(), key=lambda q: _natural_key(q.name)):
            if is_junk(p.name):
                junk += 1
            elif p.is_file() and p.suffix.lower() in IMAGE_EXTS:
                items.append((p, label))
            elif p.is_file():
                other += 1
    return items, junk, other


def _decode(path: Path, grey: bool | None, size: list[int] | None) -> np.ndarray:
    """H x W x C uint8; grey=None keeps grey images grey and makes everything else RGB.

    16-bit and float images are first scaled to 8 bits by common.scale_wide, as in every reader and predict."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_image(path) as img:
            img.load()
            if img.mode.startswith(WIDE_MODES):  # PIL's convert would clip them to white
                img = Image.fromarray(scale_wide(np.asarray(img)), "L")
            if size is not None and list(img.size[::-1]) != list(size):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            if grey is None:
                grey = img.mode in GREY_MODES
            arr = np.asarray(img.convert("L" if grey else "RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__})",
                        "the file is corrupt or truncated") from None
    note_decoded()
    return arr[:, :, None] if arr.ndim == 2 else arr


def _load_disk_split(root: Path, split: str, size: list[int] | None, channels: str) -> ClsData:
    root = _check_root(root)
    sdir = _split_dir(root, split)
    classes = all_classes(root)
    items, junk, other = scan_split(sdir, classes)
    if not items:
        raise DataError(f"{sdir}: no images in its class folders", f"expected {EXPECTED}")
    grey = {"auto": None, "1": True, "3": False}[channels]
    arrays = list(ordered_map(lambda item: _decode(item[0], grey, size), items))  # decode threads
    if grey is None and len({a.shape[2] for a in arrays}) > 1:  # mixed grey and colour: make all RGB
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    first = arrays[0].shape[:2]
    for (p, _), a in zip(items, arrays):
        if a.shape[:2] != first:
            raise DataError(f"{p}: image is {a.shape[0]}x{a.shape[1]}, others are {first[0]}x{first[1]}",
                            "set data.size: [H, W] to resize all images on load")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([lab for _, lab in items], dtype=torch.int64)
    names = [str(p.relative_to(root)) for p, _ in items]
    notes = []
    if junk or other:
        notes.append(f"{sdir.name}: skipped {junk} junk and {other} non-image file(s)")
    absent = [c for c in classes if not (sdir / c).is_dir()]
    if absent:
        notes.append(f"{sdir.name}: no folder for class(es) {', '.join(absent)}")
    return ClsData(images, labels, names, classes, notes)


def load(root: Path, split: str, size: list[int] | None = None, channels: str | int = "auto",
         resplit: dict | None = None, **unknown) -> ClsData:
    """Read one split folder; channels: auto (grey stays grey) | 1 | 3."""
    unknown_options(unknown, ["channels", "resplit"], "image-folder")
    channels = str(channels)
    if channels not in ("auto", "1", "3"):
        raise DataError(f"data.options.channels must be auto, 1 or 3, got {channels!r}")
    root = Path(root)
    if resplit is not None:
        return carve_splits(lambda s: _load_disk_split(root, s, size, channels), split, resplit,
                            list_splits(root), str(root))
    return _load_disk_split(root, split, size, channels)


def list_splits(root: Path, **options) -> list[str]:
    """Split folders that contain class folders, or the resplit's splits."""
    spec = options.get("resplit")
    if isinstance(spec, dict):
        return resplit_names(spec)
    root = _check_root(Path(root))
    return [FLAT] if is_flat(root) else [s.name for s in subdirs(root) if subdirs(s)]


def _check_size(root: Path, split: str) -> tuple[list[int] | None, str | None]:
    """None when the split's images share one size; else the median size to show them at, and a note saying
    that training needs data.size (loading at native size refuses mixed sizes, and a check must not)."""
    sizes = []
    for p, _ in scan_split(_split_dir(root, split), all_classes(root))[0]:
        try:
            sizes.append(header(p)[:2])
        except DataError:  # an unreadable file: the decode names it as training would
            continue
    if len(set(sizes)) <= 1:
        return None, None
    hs, ws = sorted(h for h, _ in sizes), sorted(w for _, w in sizes)
    size = [hs[len(hs) // 2], ws[len(ws) // 2]]
    return size, (f"{len(set(sizes))} distinct image sizes (HxW {hs[0]}..{hs[-1]} x {ws[0]}..{ws[-1]}); shown at "
                  f"the median {size[0]}x{size[1]}: training resizes to data.size [H, W], which cnnlab new --task "
                  f"classification --images {root} --out recipe.yaml chooses")


def check(root: Path) -> str:
    """Counts, class shares, image sizes and skipped files per split."""
    root = _check_root(Path(root))
    lines = [f"image folders in {root}: classes {', '.join(all_classes(root))}"]
    for split in list_splits(root):
        size, note = _check_size(root, split)
        data = _load_disk_split(root, split, size, "auto")
        lines.append(summarise_split("all (one folder per class, no split folders)" if split == FLAT else split, data))
        lines.extend(f"    note: {n}" for n in ([note] if note else []) + data.notes)
    return "\n".join(lines)
