"""PASCAL VOC 2007/2012 segmentation from a local root: JPEGImages + SegmentationClass palette PNGs + image sets.

Layout: root may hold VOCdevkit/VOC<year>/ (the archives' layout), VOC<year>/, or be the VOC<year>-like folder
itself (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/<split>.txt). Where the folder sits at
torchvision's expected place (<tv_root>/VOCdevkit/VOC<year>, TrainVal/VOCdevkit/VOC2011) and torchvision knows
the split (train/trainval/val; test only for 2007), the file lists come from
torchvision.datasets.VOCSegmentation (download=False). Otherwise (a bare VOC-like folder, another split such as
the synthetic 2012 'test', an unknown year) the same files are listed here the same way: <split>.txt names ->
JPEGImages/<name>.jpg and SegmentationClass/<name>.png. Decoding is done here in both cases, so that every bad
file gives a one-line DataError instead of a PIL traceback.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.formats.common import inside_root, is_junk, read_image, read_input, resize_images, resize_masks
from cnnlab.data.parallel import chw, concat, ordered_map
from cnnlab.data.types import SegData
from cnnlab.data.voc_colors import VOC_BOUNDARY, VOC_CLASSES, class_of_color
from cnnlab.errors import ConfigError, DataError, did_you_mean

OPTIONS = {"boundary": "background", "foreground_background": False, "year": None}
BOUNDARY_CHOICES = ("background", "ignore")
SPLIT_ALIASES = {"validation": "val"}  # the recipe default 'validation' means VOC's 'val'


def _check_options(options: dict) -> dict:
    """Reader options merged over defaults; unknown keys and bad values are ConfigErrors."""
    for key in options:
        if key not in OPTIONS:
            raise ConfigError(f"unknown data.options key '{key}' for format voc", did_you_mean(key, OPTIONS))
    opts = {**OPTIONS, **options}
    if opts["boundary"] not in BOUNDARY_CHOICES:
        raise ConfigError(f"data.options.boundary must be one of {', '.join(BOUNDARY_CHOICES)}, "
                          f"got {opts['boundary']!r}")
    if not isinstance(opts["foreground_background"], bool):
        raise ConfigError(f"data.options.foreground_background must be true or false, "
                          f"got {opts['foreground_background']!r}")
    if opts["year"] is not None and not re.fullmatch(r"20\d\d", str(opts["year"])):
        raise ConfigError(f"data.options.year must be a VOC year such as 2007 or 2012, got {opts['year']!r}")
    opts["year"] = None if opts["year"] is None else str(opts["year"])
    return opts


def _is_voc_dir(path: Path) -> bool:
    return (path / "JPEGImages").is_dir() and (path / "ImageSets").is_dir()


def find_voc_dir(root: Path, year: str | None = None) -> tuple[Path, str | None]:
    """The VOC<year>-like folder under root and its year (None when the folder name does not say)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found", "point data.root at the folder holding VOCdevkit/")
    if _is_voc_dir(root):
        m = re.fullmatch(r"VOC(\d{4})", root.name)
        return root, (m.group(1) if m else year)
    found: dict[str, Path] = {}
    for pattern in ("VOCdevkit/VOC*", "VOC*", "*/VOCdevkit/VOC*"):
        for path in sorted(root.glob(pattern)):
            m = re.fullmatch(r"VOC(\d{4})", path.name)
            if m and _is_voc_dir(path):
                found.setdefault(m.group(1), path)
    if year is not None:
        if year in found:
            return found[year], year
        raise DataError(f"{root}: no VOC{year} folder with JPEGImages/ and ImageSets/",
                        f"found years: {', '.join(found) or 'none'}")
    if len(found) == 1:
        return next(iter(found.values())), next(iter(found))
    if not found:
        raise DataError(f"{root}: no VOC data (expected VOCdevkit/VOC<year>/JPEGImages and ImageSets/Segmentation)",
                        "point data.root at the folder holding VOCdevkit/, or write the synthetic set")
    raise DataError(f"{root}: several VOC years ({', '.join(found)})", "choose one with data.options.year")


def list_splits(root: Path) -> list[str]:
    """Image sets in ImageSets/Segmentation (train, val, trainval, test ...)."""
    voc_dir, _ = find_voc_dir(Path(root))
    sets = voc_dir / "ImageSets" / "Segmentation"
    if not sets.is_dir():
        return []
    return sorted(p.stem for p in sets.glob("*.txt") if not is_junk(p))


def _torchvision_root(voc_dir: Path, year: str | None, split: str) -> Path | None:
    """The root torchvision's VOCSegmentation wants for this folder, or None where its layout rules do not fit."""
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    tv_splits = ("train", "trainval", "val") + (("test",) if year == "2007" else ())
    if year is None or split not in tv_splits:
        return None
    key = "2007-test" if year == "2007" and split == "test" else year
    base = Path(DATASET_YEAR_DICT.get(key, {}).get("base_dir", "-"))
    if voc_dir.parts[-len(base.parts):] != base.parts:
        return None
    return voc_dir.parents[len(base.parts) - 1]


def split_files(root: Path, split: str, year: str | None = None) -> tuple[list[tuple[str, Path, Path]], str]:
    """(name, image path, mask path) for each line of <split>.txt, and which parser listed them."""
    voc_dir, year = find_voc_dir(Path(root), year)
    sets = voc_dir / "ImageSets" / "Segmentation"
    split_file = sets / f"{split}.txt"
    if not split_file.is_file() and split in SPLIT_ALIASES and (sets / f"{SPLIT_ALIASES[split]}.txt").is_file():
        split = SPLIT_ALIASES[split]
        split_file = sets / f"{split}.txt"
    if not split_file.is_file():
        have = sorted(q.stem for q in sets.glob("*.txt") if not is_junk(q)) if sets.is_dir() else []
        raise DataError(f"{split_file}: image set '{split}' not found",
                        f"available: {', '.join(have)}" if have else "ImageSets/Segmentation holds no .txt lists")
    tv_root = _torchvision_root(voc_dir, year, split)
    if tv_root is not None:
        from torchvision.datasets import VOCSegmentation

        try:
            ds = VOCSegmentation(str(tv_root), year=year, image_set=split, download=False)
        except (UnicodeDecodeError, OSError, RuntimeError) as e:
            raise DataError(f"{split_file}: unreadable image set ({type(e).__name__})") from None
        files = [(Path(i).stem, Path(i), Path(m)) for i, m in zip(ds.images, ds.masks) if Path(i).name != ".jpg"]
        parser = "torchvision VOCSegmentation"
    else:
        try:
            names = [line.strip() for line in split_file.read_text().splitlines()]
        except (UnicodeDecodeError, OSError) as e:
            raise DataError(f"{split_file}: unreadable image set ({type(e).__name__})") from None
        files = [(n, voc_dir / "JPEGImages" / f"{n}.jpg", voc_dir / "SegmentationClass" / f"{n}.png")
                 for n in names if n]
        parser = "cnnlab (layout outside torchvision's rules)"
    if not files:
        raise DataError(f"{split_file}: image set '{split}' is empty", "list one image name per line")
    for _, image, mask in files:  # names like ../../x must not reach outside the VOC folder
        inside_root(image, voc_dir)
        inside_root(mask, voc_dir)
    return files, parser


def _read(path: Path, what: str, channels: int | None = None) -> np.ndarray:
    """A decoded file, or a DataError naming it (missing files are named as listed in the image set); with
    channels, a model input through common.read_input (16-bit images scaled as in every reader)."""
    if not path.is_file():
        raise DataError(f"{path}: {what} listed in the image set is missing")
    return read_image(path) if channels is None else read_input(path, channels)


def read_mask(path: Path, num_classes: int = len(VOC_CLASSES)) -> np.ndarray:
    """A SegmentationClass PNG -> H x W uint8 indices in 0..20 or 255; RGB masks are mapped via the colour map."""
    arr = _read(path, "mask")
    if arr.ndim == 3 and arr.shape[2] < 3:
        raise DataError(f"{path}: mask with {arr.shape[2]} channels", "save masks as palette (P mode) PNGs")
    if arr.ndim == 3:  # a palette PNG re-saved as colours: map the VOC colours back
        idx = class_of_color(arr[..., :3], num_classes)
        if (idx < 0).any():
            raise DataError(f"{path}: RGB mask with {int((idx < 0).sum())} pixels in colours outside the VOC "
                            "colour map", "save masks as palette (P mode) PNGs of class indices")
        arr = idx.astype(np.uint8)
    bad = np.setdiff1d(np.unique(arr), np.r_[np.arange(num_classes), VOC_BOUNDARY])
    if bad.size:
        raise DataError(f"{path}: mask values {bad[:8].tolist()} outside 0..{num_classes - 1} and "
                        f"{VOC_BOUNDARY}", "VOC masks hold class indices 0..20 and 255 for boundaries")
    return arr


def _decode_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One decoded pair (3 x H x W, H x W) at its own size, checked for matching sizes; runs in a decode thread."""
    img = chw(_read(image_path, "image", 3))
    mask = np.array(read_mask(mask_path))  # a writable copy
    if tuple(mask.shape) != tuple(img.shape[-2:]):
        raise DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{img.shape[2]}x{img.shape[1]}", "masks must have their image's size")
    return img, mask


def _resize_pair(img: np.ndarray, mask: np.ndarray, size: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A decoded pair resized (nearest for the mask), in the calling thread (torch runs its own threads)."""
    return (resize_images(torch.from_numpy(img)[None], size)[0],
            resize_masks(torch.from_numpy(mask)[None], size)[0])


def _read_pair(image_path: Path, mask_path: Path, size: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoded pair (3 x H x W, H x W), checked for matching sizes, resized (nearest for the mask)."""
    return _resize_pair(*_decode_pair(image_path, mask_path), size)


def _decode_all(files: list[tuple[str, Path, Path]], size: list[int] | None):
    """Decode every pair in decode threads (PIL releases the GIL), resizing each in this thread as it arrives."""
    pairs = [_resize_pair(img, mask, size) for img, mask in ordered_map(lambda f: _decode_pair(f[1], f[2]), files)]
    shapes = {tuple(img.shape) for img, _ in pairs}
    if len(shapes) > 1:
        raise DataError(f"{files[0][1].parent}: images of {len(shapes)} different sizes",
                        "set data.size, e.g. [224, 224]")
    return pairs


def load(root: Path, split: str, size: list[int] | None = None, **options) -> SegData:
    """One VOC split as uint8 tensors; boundary pixels become background or ignore_index 255 (options)."""
    opts = _check_options(options)
    files, parser = split_files(Path(root), split, opts["year"])
    pairs = _decode_all(files, size)
    images = concat([img[None] for img, _ in pairs])
    masks = concat([m[None] for _, m in pairs])
    notes = [f"voc: {len(files)} '{split}' samples listed by {parser}"]
    ignore_index = None
    if opts["boundary"] == "background":  # the assignment's rule: outlines count as background
        notes.append(f"voc: boundary pixels ({VOC_BOUNDARY}) mapped to background (data.options.boundary=background)")
        masks[masks == VOC_BOUNDARY] = 0
    else:
        notes.append(f"voc: boundary pixels kept as ignore_index {VOC_BOUNDARY} (data.options.boundary=ignore)")
        ignore_index = VOC_BOUNDARY
    class_names = list(VOC_CLASSES)
    if opts["foreground_background"]:
        notes.append("voc: foreground/background mode, every object class mapped to 1")
        masks[(masks > 0) & (masks != VOC_BOUNDARY)] = 1
        class_names = ["background", "foreground"]
    return SegData(images, masks, [name for name, _, _ in files], class_names, ignore_index, notes)


def _junk_count(voc_dir: Path) -> int:
    """Junk files lying in the data folders (never read: files come from the image sets)."""
    folders = [voc_dir / "JPEGImages", voc_dir / "SegmentationClass", voc_dir / "ImageSets" / "Segmentation"]
    return sum(is_junk(p) for f in folders if f.is_dir() for p in f.iterdir())


def check(root: Path) -> str:
    """A readable summary: layout, samples per split, class pixel and image shares, every problem found."""
    root = Path(root)
    voc_dir, year = find_voc_dir(root)
    lines = [f"VOC folder: {voc_dir} (year {year or 'unknown'})"]
    problems: list[str] = []
    pixels = np.zeros(256, dtype=np.int64)
    images_with = np.zeros(256, dtype=np.int64)
    n_masks = 0
    for split in list_splits(root):
        try:
            files, parser = split_files(root, split, year)
        except DataError as e:
            problems.append(e.line())
            continue
        ok = 0
        for _, image_path, mask_path in files:
            try:
                _, mask = _read_pair(image_path, mask_path, None)
            except DataError as e:
                problems.append(e.line())
                continue
            ok += 1
            if split in ("train", "val"):
                counts = np.bincount(mask.reshape(-1).numpy(), minlength=256)
                pixels += counts
                images_with += counts > 0
                n_masks += 1
        lines.append(f"  {split}: {len(files)} listed, {ok} readable ({parser})")
    total = pixels.sum()
    if total:
        lines.append(f"classes over train+val ({n_masks} masks): pixel share / share of images containing it")
        for index in [*range(len(VOC_CLASSES)), VOC_BOUNDARY]:
            if pixels[index]:
                name = VOC_CLASSES[index] if index < len(VOC_CLASSES) else "boundary (255)"
                share, seen = pixels[index] / total, images_with[index] / n_masks
                lines.append(f"  {index:3d} {name:<15} {share:7.2%}  {seen:7.1%}")
    junk = _junk_count(voc_dir)
    if junk:
        lines.append(f"skipped {junk} junk files (.DS_Store, Thumbs.db, ._*)")
    lines.append(f"problems: {len(problems)}" + "".join(f"\n  {p}" for p in problems[:20]))
    if len(problems) > 20:
        lines.append(f"  ... and {len(problems) - 20} more")
    return "\n".join(lines)
