"""Your own data: a folder of images and a folder of masks, paired by file name.

Recipe: `data: {format: folders, root: DIR, options: {images: images, masks: masks, ...}}`; folder options are
relative to data.root (absolute paths work too). Options:
  images, masks   the two folders (defaults 'images', 'masks'). A mask matches its image by stem: exactly, or
                  after dropping a suffix such as _mask, _anno, _manual1, _label (and an image suffix such as
                  _training), or by the numbers in the names; the notes say which rule matched how many pairs.
  fov             optional field-of-view / ignore-mask folder, matched the same way: pixels where it is 0 get
                  mask value 255 (SegData.ignore_index), excluded from loss and metrics.
  split           random | contiguous | folders | list | given (default: given when splits is set, list when
                  split_file is set, folders when root/<split>/<images> exists, else random).
                  random:  seeded (seed, default 0) fractions of the sorted names (fractions, default
                           {train: 0.7, val: 0.15, test: 0.15}); the split does not move with the training seed.
                           Image folders holding only sub-folders (one per patient or case) are read one level
                           down and split by sub-folder, so a case never sits on both sides; sub-folders named
                           train/val/test (images/train, masks/train) are those splits.
                  contiguous: the fractions as blocks of the sorted names, train first and test last: for one
                           sequence (a video's frames, a stack's slices), where a random split puts a near-identical
                           neighbour of almost every test image in training (`cnnlab new` writes it there).
                  folders: one folder per split, each holding the same sub-folders:
                             root/train/<images>/a.png   root/train/<masks>/a_mask.png   [root/train/<fov>/...]
                             root/val/<images>/...       root/test/<images>/...   (any split names)
                           a split folder without the masks folder (unlabelled) is skipped with a note.
                  list:    split_file (relative to root): CSV rows 'stem,split' (header optional) or JSON
                           {stem: split} / {split: [stems]}.
                  given:   splits: {train: {images: DIR, masks: DIR[, fov: DIR]}, val: {...}, test: {...}}: the
                           folders a data set ships per split (train+trainannot, images/train+masks/train, ...;
                           `cnnlab new` finds them, _given). A split the fractions ask for that is not given
                           is carved from the given train split (whole groups); a given test is never carved.
  groups          true (default): the random split draws whole name groups where names carry a sequence, video,
                  patient or case prefix (0001TP_006690, Seq05VD_f00000, patient12_slice4; _groups).
  void            mask values ignored in loss and metrics like 255: grey levels / palette indices, or [r, g, b].
  classes         class names in class order (a list), or {name: mask value} to fix values and order.
  colors          {name: [r, g, b]} for RGB colour-coded masks (without it the colours are discovered).
  fit             resize (default) | pad | crop: how images of any size become one size (masks always nearest);
  keep_aspect     with fit: resize, scale to fit and pad instead of stretching. pad and crop keep native
                  resolution (pad scales down only images larger than the size, crop scales up only smaller
                  ones); padded pixels get mask 255 (ignored).
Size: data.size [H, W]; without it, the median image size rounded to a multiple of 16 (long side at most 1024).
Mask encodings are discovered over all masks at once (see _masks) and stated in the notes.

This package is the folders format's one public face: the reader above (`load`, `list_splits`, `check`,
`data_paths`, as every entry of `FORMATS`) and, in `__all__`, the names other parts use (`cnnlab new`'s survey and
given splits, `cnnlab evaluate`'s scan of other folders, `cnnlab data check folders`). The modules inside
(`_scan` pairs and split policies, `_layout` options and layout, `_masks` mask encodings, `_check` the survey,
`_given` given splits, `_groups` name groups, `_names` class-name files, `_fit` sizes) are private to it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.formats.folders import _scan as fs
from cnnlab.data.formats.folders._check import Survey, check_report, survey, survey_report
from cnnlab.data.formats.folders._fit import default_size, fit_note, fit_one, header
from cnnlab.data.formats.folders._given import carve_fractions, given_options
from cnnlab.data.formats.folders._layout import (
    _policy,
    _read_pair,
    _resolve,
    channels_of,
    encoding_for,
    group_notes,
    ignore_index_for,
    parse_options,
    scan_layout,
    summarize_sizes,
)
from cnnlab.data.formats.folders._masks import IGNORE, Encoding, discover, to_classes
from cnnlab.data.formats.folders._scan import canonical_split, find_split
from cnnlab.data.parallel import chw, concat, ordered_map
from cnnlab.data.types import SegData
from cnnlab.errors import ConfigError, DataError

# What other parts use (new/, inference/evaluate.py, cli/data.py): import these from here, never from the modules
__all__ = ["IGNORE", "LAYOUT", "MOVABLE", "Encoding", "Survey", "canonical_split", "carve_fractions", "check",
           "data_paths", "discover", "find_split", "given_options", "header", "list_splits", "load",
           "parse_options", "pin_encoding", "rebase_options", "scan_layout", "summarize_sizes", "survey",
           "survey_report", "to_classes", "whole_folder_options"]


def load(root: Path, split: str, /, size: list[int] | None = None, native: bool = False, **options) -> SegData:
    """Read one split into memory: images resized/padded/cropped to one size, masks as class indices.
    native (patch training without data.size): every image at its own size (see SegData.sizes)."""
    # root and split are positional-only so that the reader option named `split` (the policy) can reach **options
    opts = parse_options(options)
    layout = scan_layout(Path(root), opts)
    name = fs.find_split(split, list(layout.splits), str(root))
    pairs = layout.splits[name]
    everything = layout.all_pairs()
    enc = encoding_for(layout, opts)
    size_note = ""
    if native:
        return _load_native(pairs, name, layout, enc, opts, channels_of(everything))
    if size is None:
        size, size_note = default_size([header(p.image)[:2] for p in everything])
    size = list(size)
    channels = channels_of(everything)
    images, masks, native, snapped, outside, pixels = [], [], [], 0, 0, 0
    for img, mask, n_snap, n_out in ordered_map(lambda pair: _decode_pair(pair, channels, enc, bool(opts.fov)), pairs):
        native.append(img.shape[1:])
        snapped, outside, pixels = snapped + n_snap, outside + n_out, pixels + mask.size
        x, m = fit_one(torch.from_numpy(img), torch.from_numpy(mask), size, opts.fit, opts.keep_aspect)
        images.append(x[None])
        masks.append(m[None])
    notes = [layout.policy_note, *layout.notes, *group_notes(layout), f"mask encoding: {enc.describe()}",
             "classes: " + ", ".join(enc.class_names)]
    if snapped:
        notes.append(f"{name}: {snapped} mask pixels were not exactly a label value (lossy compression) and were "
                     "snapped to the nearest")
    if opts.fov:
        notes.append(f"{name}: pixels outside the field of view ({opts.fov}) set to 255 and ignored in loss and "
                     f"metrics ({100 * outside / max(pixels, 1):.1f}% of pixels before resizing)")
    if size_note:
        notes.append(size_note)
    notes.append(f"{name}: {fit_note(size, opts.fit, opts.keep_aspect)}")
    notes.append(f"{name}: native sizes (HxW): {summarize_sizes(native)}")
    return SegData(concat(images), concat(masks), [p.name for p in pairs], list(enc.class_names),
                   ignore_index_for(opts, enc), notes, enc.own_encoding())


def _load_native(pairs, name: str, layout, enc, opts, channels: int) -> SegData:
    """The split at each image's own size: images of different sizes in the top-left corner of one tensor (image
    0, mask 255 where there is an ignore value, else 0 beyond them) with their sizes (SegData.sizes)."""
    decoded = list(ordered_map(lambda pair: _decode_pair(pair, channels, enc, bool(opts.fov)), pairs))
    ignore = ignore_index_for(opts, enc)
    hw = [img.shape[1:] for img, _, _, _ in decoded]
    H, W = max(h for h, _ in hw), max(w for _, w in hw)
    images = torch.zeros(len(decoded), channels, H, W, dtype=torch.uint8)
    masks = torch.full((len(decoded), H, W), ignore if ignore is not None else 0, dtype=torch.uint8)
    for k, (img, mask, _, _) in enumerate(decoded):
        h, w = mask.shape
        images[k, :, :h, :w] = torch.from_numpy(img)
        masks[k, :h, :w] = torch.from_numpy(mask)
    sizes = torch.tensor(hw, dtype=torch.long) if len(set(hw)) > 1 else None
    notes = [layout.policy_note, *layout.notes, *group_notes(layout), f"mask encoding: {enc.describe()}",
             "classes: " + ", ".join(enc.class_names),
             f"{name}: kept at native size for patch training (data.patch): {summarize_sizes(hw)}"]
    if opts.fov:
        notes.append(f"{name}: pixels outside the field of view ({opts.fov}) set to 255 and ignored in loss and "
                     "metrics")
    return SegData(images, masks, [p.name for p in pairs], list(enc.class_names), ignore, notes,
                   enc.own_encoding(), sizes)


def _decode_pair(pair, channels: int, enc, need_fov: bool) -> tuple[np.ndarray, np.ndarray, int, int]:
    """_read_pair with the image as C x H x W (a numpy copy); runs in a decode thread."""
    img, mask, n_snap, n_out = _read_pair(pair, channels, enc, need_fov)
    return chw(img), np.array(mask) if not mask.flags.writeable else mask, n_snap, n_out


def data_paths(root: Path, **options) -> list[Path] | None:
    """The files this reader reads, named without a scan where the options allow it: absolute image/mask/fov
    folders with a random or listed split (what `cnnlab new` writes) -> those folders and the split file; None
    otherwise (the whole data root). The decoded cache fingerprints these instead of the root, so files beside
    them (the recipe new wrote there, notebooks, logs) neither invalidate it nor are walked."""
    policy = options.get("split")
    folders = [options.get(k) for k in ("images", "masks", "fov") if options.get(k)]
    absolute = all(isinstance(f, str) and Path(f).expanduser().is_absolute() for f in folders)
    if policy not in ("random", "contiguous", "list") or not absolute:
        return None
    paths = [Path(f).expanduser() for f in folders]
    if policy == "list":
        paths.append(_resolve(Path(root), str(options.get("split_file"))))  # as the reader resolves it
    return paths


def list_splits(root: Path, **options) -> list[str]:
    """Split names under the split policy (random: the non-zero fractions, without touching the disk)."""
    opts = parse_options(options)
    policy = _policy(Path(root), opts)
    if policy == "random":  # images/train, images/val: those splits
        named = fs.split_subfolders(_resolve(Path(root), opts.images))
        return named or [s for s, f in opts.fractions.items() if f > 0]
    if policy == "contiguous":
        return [s for s, f in opts.fractions.items() if f > 0]
    try:
        return list(scan_layout(Path(root), opts).splits)
    except DataError:
        return []


def check(root: Path, **options) -> str:
    """Counts, sizes, discovered encoding, classes with pixel shares, unmatched files and problems."""
    return check_report(Path(root), **options)


# ---------------------------------------------------------------- a trained run on other folders (cnnlab evaluate)
MOVABLE = ("images", "masks", "fov", "split_file")  # options naming paths
LAYOUT = (*MOVABLE, "split", "fractions", "seed", "splits", "groups")  # options saying which files form which split


def rebase_options(options: dict, old_root: Path, new_root: Path) -> dict:
    """A recipe's options on another data root: `cnnlab new` writes absolute folders, which a new root alone
    would not move (evaluate --data then read the training folders again, under the new root's name). A folder
    under the old root keeps its place relative to it, the given splits' folders too; one elsewhere cannot be
    placed: a ConfigError naming it."""
    out = dict(options)
    for key in MOVABLE:
        out[key] = _rebased(options.get(key), f"data.options.{key}", old_root, new_root)
    if isinstance(options.get("splits"), dict):
        out["splits"] = {s: {k: _rebased(v, f"data.options.splits.{s}.{k}", old_root, new_root) for k, v in e.items()}
                         if isinstance(e, dict) else e for s, e in options["splits"].items()}
    return {k: v for k, v in out.items() if k in options}


def _rebased(value, key: str, old_root: Path, new_root: Path):
    """One absolute folder under the old root, moved under the new one; anything else unchanged."""
    if not isinstance(value, str) or not Path(value).expanduser().is_absolute():
        return value  # relative: resolved under whichever root is given
    path = Path(value).expanduser()
    try:
        return str(Path(new_root) / path.resolve().relative_to(Path(old_root).expanduser().resolve()))
    except ValueError:
        raise ConfigError(f"{key} of this run is {path}, outside its data root {old_root}: "
                          f"--data cannot say where that is under {new_root}",
                          "name the folders: cnnlab evaluate RUN_DIR --images DIR --masks DIR") from None


def whole_folder_options(options: dict, images: str | Path, masks: str | Path,
                         fov: str | Path | None = None) -> tuple[Path, dict]:
    """(root, options) that read every image/mask pair of these folders as one split, 'all', with the run's other
    reader options (class names, colours, fit) kept."""
    paths = [Path(p).expanduser().resolve() for p in (images, masks, fov) if p is not None]
    kept = {k: v for k, v in options.items() if k not in LAYOUT}
    new = {"images": str(paths[0]), "masks": str(paths[1]), "split": "random", "fractions": {"all": 1.0}}
    if fov is not None:
        new["fov"] = str(paths[2])
    return Path(os.path.commonpath(paths)), {**kept, **new}


def pin_encoding(options: dict, own: dict | None, class_names: list[str]) -> dict:
    """Read other masks with the run's own mask values, so that class i means what it meant in training: found
    afresh, a class absent from these masks would renumber every class after it. Binary (and thresholded)
    masks are left to discovery: any of their encodings gives the same two classes."""
    kind, values = (own or {}).get("kind"), (own or {}).get("values", [])
    if len(values) != len(class_names) or kind not in ("grey_levels", "palette", "rgb"):
        return options
    rest = {k: v for k, v in options.items() if k not in ("classes", "colors")}
    if kind == "rgb":
        return {**rest, "colors": {n: list(v) for n, v in zip(class_names, values)}}
    return {**rest, "classes": dict(zip(class_names, values))}
