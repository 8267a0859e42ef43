"""The folders format's options and layout: which image pairs with which mask, in which split, encoded how."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cnnlab.data.formats.folders import _given as fg
from cnnlab.data.formats.folders import _groups as fgr
from cnnlab.data.formats.folders import _masks as fm
from cnnlab.data.formats.folders import _scan as fs
from cnnlab.data.formats.folders._fit import header, read_input
from cnnlab.errors import ConfigError, DataError, did_you_mean

OPTIONS = ("images", "masks", "fov", "split", "fractions", "seed", "split_file", "classes", "colors", "fit",
           "keep_aspect", "splits", "void", "groups")
POLICIES = ("random", "contiguous", "folders", "list", "given")
FITS = ("resize", "pad", "crop")
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
IGNORE = fm.IGNORE


@dataclass(frozen=True)
class Options:
    """Validated reader options (see the module docstring)."""

    images: str = "images"
    masks: str = "masks"
    fov: str | None = None
    split: str | None = None
    fractions: dict = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0
    split_file: str | None = None
    classes: list | dict | None = None
    colors: dict | None = None
    fit: str = "resize"
    keep_aspect: bool = False
    splits: dict | None = None       # split policy given: {split: {images, masks[, fov]}} (_given)
    void: tuple = ()                 # mask values (grey, palette index or (r, g, b)) ignored like 255
    groups: bool = True              # random splits draw whole groups of names (_groups)


def parse_options(options: dict) -> Options:
    """Check option names, types and values; one ConfigError naming the key."""
    for key in options:
        if key not in OPTIONS:
            raise ConfigError(f"unknown folders reader option 'data.options.{key}'", did_you_mean(key, OPTIONS))
    o = dict(options)
    for key in ("images", "masks"):
        if not isinstance(o.get(key, "x"), str) or not o.get(key, "x"):
            raise ConfigError(f"data.options.{key} must be a folder path, got {o[key]!r}")
    if o.get("split") is not None and o["split"] not in POLICIES:
        raise ConfigError(f"data.options.split must be one of {', '.join(POLICIES)}, got {o['split']!r}",
                          did_you_mean(str(o["split"]), POLICIES))
    if o.get("fit", "resize") not in FITS:
        raise ConfigError(f"data.options.fit must be one of {', '.join(FITS)}, got {o['fit']!r}",
                          did_you_mean(str(o["fit"]), FITS))
    if not isinstance(o.get("keep_aspect", False), bool):
        raise ConfigError(f"data.options.keep_aspect must be true or false, got {o['keep_aspect']!r}")
    if isinstance(o.get("seed", 0), bool) or not isinstance(o.get("seed", 0), int):
        raise ConfigError(f"data.options.seed must be an integer, got {o['seed']!r}")
    if o.get("split") == "list" and not o.get("split_file"):
        raise ConfigError("data.options.split is 'list' but data.options.split_file is not set",
                          "point split_file at a CSV (stem,split) or JSON file relative to data.root")
    if "fractions" in o:
        o["fractions"] = fs.parse_fractions(o["fractions"])
    o["splits"] = fg.check_splits(o.get("splits"))
    if o.get("split") == "given" and not o["splits"]:
        raise ConfigError("data.options.split is 'given' but data.options.splits is not set",
                          "e.g. splits: {train: {images: train, masks: trainannot}, test: {images: test, "
                          "masks: testannot}}")
    o["void"] = fm.check_void(o.get("void"))
    if not isinstance(o.get("groups", True), bool):
        raise ConfigError(f"data.options.groups must be true or false, got {o['groups']!r}")
    o["colors"] = fm.check_colors(o.get("colors"))
    classes = o.get("classes")
    if classes is not None and not (isinstance(classes, (list, dict)) and classes):
        raise ConfigError(f"data.options.classes must be a list of names or a mapping name -> mask value, "
                          f"got {classes!r}")
    return Options(**o)


@dataclass
class Pair:
    """One sample's files."""

    name: str
    image: Path
    mask: Path
    fov: Path | None


@dataclass
class Group:
    """One images/masks(/fov) folder set (the whole data, or one split folder) and how its files paired up."""

    label: str
    images: fs.FolderFiles
    masks: fs.FolderFiles
    fov: fs.FolderFiles | None
    mask_match: fs.Matching
    fov_match: fs.Matching | None
    pairs: list[Pair]


@dataclass
class Layout:
    """Every pair of the data set by split, and how the split was made."""

    root: Path
    policy: str
    policy_note: str
    groups: list[Group]
    splits: dict[str, list[Pair]]
    notes: list[str] = field(default_factory=list)

    def all_pairs(self) -> list[Pair]:
        return [p for g in self.groups for p in g.pairs]


def _resolve(base: Path, rel: str) -> Path:
    p = Path(rel).expanduser()
    return p if p.is_absolute() else base / p


def _scan_group(base: Path, opts: Options, label: str) -> Group:
    """List and pair the files of one folder set; no pair at all is a DataError showing both names."""
    image_dir, mask_dir = _resolve(base, opts.images), _resolve(base, opts.masks)
    images = fs.list_folder(image_dir, "image")
    if image_dir.resolve() == mask_dir.resolve():
        images, masks = fs.split_shared_folder(images)
    else:
        masks = fs.list_folder(mask_dir, "mask")
    mm = fs.match_stems(images.files, masks.files, "mask")
    if not mm.pairs:
        raise DataError(f"{masks.folder}: no mask matches an image by name (e.g. image "
                        f"'{next(iter(images.files.values())).name}', mask '{next(iter(masks.files.values())).name}')",
                        "name masks like their images, optionally with a suffix such as _mask")
    fov, fvm = None, None
    if opts.fov:
        fov = fs.list_folder(_resolve(base, opts.fov), "field-of-view")
        fvm = fs.match_stems({s: images.files[s] for s in mm.pairs}, fov.files, "fov")
    pairs = [Pair(s, images.files[s], mm.pairs[s], fvm.pairs.get(s) if fvm else None) for s in images.files
             if s in mm.pairs]
    return Group(label, images, masks, fov, mm, fvm, pairs)


def _policy(root: Path, opts: Options) -> str:
    """The split policy asked for, or the one the layout implies."""
    if opts.split:
        return opts.split
    if opts.splits:
        return "given"
    if opts.split_file:
        return "list"
    if not _resolve(root, opts.images).is_dir() and fs.split_folders(root, opts.images):
        return "folders"
    return "random"


def _folder_groups(root: Path, opts: Options) -> tuple[list[Group], list[str]]:
    """split: folders: one group per root/<split>/ holding the images folder (unlabelled ones skipped)."""
    names = fs.split_folders(root, opts.images)
    if not names:
        here = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        raise DataError(f"{root}: split 'folders' expects root/<split>/{opts.images}/ (e.g. train/{opts.images}), "
                        "found none", f"folders here: {', '.join(here) or 'none'}")
    groups, notes = [], []
    for name in names:
        if not _resolve(root / name, opts.masks).is_dir():
            notes.append(f"split folder '{name}' has no '{opts.masks}' folder: skipped (unlabelled)")
            continue
        groups.append(_scan_group(root / name, opts, name))
    if not groups:
        raise DataError(f"{root}: no split folder holds both '{opts.images}' and '{opts.masks}'",
                        "check data.options.masks")
    return groups, notes


def scan_layout(root: Path, opts: Options) -> Layout:
    """All pairs of the data set and their splits, by the split policy."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root not found: {root}", "set data.root to the folder holding the images and masks "
                        "folders")
    policy = _policy(root, opts)
    if policy == "given":
        return _given_layout(root, opts)
    if policy == "folders":
        groups, notes = _folder_groups(root, opts)
        splits = {g.label: g.pairs for g in groups}
        return Layout(root, policy, "split by folders: " + ", ".join(splits), groups, splits, notes)
    group = _scan_group(root, opts, "")
    by_name = {p.name: p for p in group.pairs}
    notes: list[str] = []
    if policy == "random":
        names, note = _random_names(list(by_name), group.images.nested, opts, {n: p.image for n, p in by_name.items()})
    elif policy == "contiguous":
        names = fs.contiguous_split(list(by_name), opts.fractions)
        note = f"contiguous blocks in name order ({_fractions_text(opts)})"
    else:
        names, unlisted, missing = fs.list_split(list(by_name), fs.read_split_file(_resolve(root, opts.split_file)))
        note = f"split from {opts.split_file}"
        if unlisted:
            notes.append(f"{len(unlisted)} pair(s) not in {opts.split_file}, left out: {_some(unlisted)}")
        if missing:
            notes.append(f"{len(missing)} name(s) in {opts.split_file} have no image/mask pair: {_some(missing)}")
        if not names:
            raise DataError(f"{_resolve(root, opts.split_file)}: no listed name matches an image/mask pair",
                            f"pairs are named like {_some(list(by_name), 3)}")
    splits = {s: [by_name[n] for n in ns] for s, ns in names.items()}
    return Layout(root, policy, note + ": " + ", ".join(f"{s} {len(v)}" for s, v in splits.items()), [group],
                  splits, notes)


def _fractions_text(opts: Options) -> str:
    """The split fractions as the notes say them: 'train 0.7, val 0.15, test 0.15'."""
    return ", ".join(f"{s} {f:g}" for s, f in opts.fractions.items())


def _random_names(names: list[str], nested: bool, opts: Options, paths: dict[str, Path] | None = None
                  ) -> tuple[dict[str, list[str]], str]:
    """Split -> pair names, and how. Files from sub-folders (one per patient or case) are split by sub-folder, so
    no case has images on both sides of the test (slices of one patient are near copies: splitting them would
    score memory, not the model); sub-folders named train/val/test are those splits. Names carrying a group
    (a sequence, video, patient or case prefix: _groups) are split by group the same way."""
    frac = _fractions_text(opts)
    if not nested:
        groups = fgr.find_groups(names) if opts.groups else {}
        unlike = ""
        if groups and paths is not None:
            near, far, alike = fgr.neighbours_alike(groups, paths)
            if not alike:  # a shared prefix, not a sequence (a breed, a source): images are independent
                groups, unlike = {}, (f"; names form {fgr.describe(groups).split(' (')[0]}, but neighbours in a group "
                                      f"do not look alike (thumbnail distance {near:.2f} against {far:.2f} between "
                                      "groups): split per image")
        if len(groups) >= sum(1 for f in opts.fractions.values() if f > 0):
            return _by_group(groups, opts, "name group", "name groups (sequence/video/patient/case prefixes)", frac)
        return fs.random_split(names, opts.fractions, opts.seed), (f"random split (seed {opts.seed}; fractions "
                                                                   f"{frac}){unlike}")
    by_sub: dict[str, list[str]] = {}
    for n in names:
        by_sub.setdefault(fs.sub_folder(n), []).append(n)
    if fs.are_split_names(by_sub):
        return by_sub, "split by sub-folders: " + ", ".join(by_sub)
    return _by_group(by_sub, opts, "sub-folder", "sub-folders (one per case)", frac)


def _by_group(by: dict[str, list[str]], opts: Options, one: str, many: str, frac: str
              ) -> tuple[dict[str, list[str]], str]:
    """A seeded split of whole groups: each group's images in one split."""
    subs = fs.random_split(list(by), opts.fractions, opts.seed, what=many)
    split = {s: [n for sub in chosen for n in by[sub]] for s, chosen in subs.items()}
    counts = ", ".join(f"{s} {len(v)}" for s, v in subs.items())
    return split, (f"random split by {one}, each {one}'s images in one split ({len(by)} {one}s: {counts}; "
                   f"seed {opts.seed}; fractions {frac})")


def _given_layout(root: Path, opts: Options) -> Layout:
    """split: given: each split's own folders. A split the fractions ask for that is not given is carved from the
    given train split (whole groups where the names have them, seeded); a given test is never carved."""
    groups = [_scan_group(root, replace(opts, images=v["images"], masks=v["masks"], fov=v.get("fov")), name)
              for name, v in opts.splits.items()]
    splits = {g.label: g.pairs for g in groups}
    note = fg.describe(opts.splits, {s: len(p) for s, p in splits.items()})
    train = next(n for n in splits if fs.canonical_split(n) == "train")
    fractions = fg.carve_fractions(opts.fractions, list(splits))
    if len(fractions) > 1:
        by_name = {p.name: p for p in splits[train]}
        nested = next(g for g in groups if g.label == train).images.nested
        names, how = _random_names(list(by_name), nested, replace(opts, fractions=fractions),
                                   {n: p.image for n, p in by_name.items()})
        carved = {s if fs.canonical_split(s) != "train" else train: [by_name[n] for n in ns]
                  for s, ns in names.items()}
        order = [*carved, *(s for s in splits if s not in carved)]
        splits = {s: carved.get(s, splits.get(s)) for s in order}
        note += f"; {', '.join(s for s in carved if s != train)} carved from the given {train}: {how}"
    return Layout(root, "given", note, groups, splits)


def _some(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names) - k} more)" if len(names) > k else "")


def encoding_for(layout: Layout, opts: Options) -> fm.Encoding:
    """The discovered encoding (over every split's masks) with the user's class names or values applied."""
    pairs = layout.all_pairs()
    enc = fm.discover([p.mask for p in pairs], [p.fov for p in pairs], opts.colors, opts.void)
    return enc if opts.classes is None else fm.with_classes(enc, opts.classes)


def ignore_index_for(opts: Options, enc: fm.Encoding) -> int | None:
    """255 where some pixels are excluded (outside the FOV, padding, palette void); same for every split."""
    pads = opts.fit == "pad" or (opts.fit == "resize" and opts.keep_aspect)
    fovs = opts.fov or any("fov" in v for v in (opts.splits or {}).values())
    return IGNORE if (fovs or pads or enc.void or enc.void_values) else None


def _read_pair(pair: Pair, channels: int, enc: fm.Encoding, need_fov: bool) -> tuple[np.ndarray, np.ndarray, int,
                                                                                     int]:
    """(image, class-index mask with 255 outside the FOV, snapped pixels, pixels outside the FOV)."""
    img = read_input(pair.image, channels)
    mask, snapped = fm.to_classes(pair.mask, enc)
    if mask.shape != img.shape[:2]:
        raise DataError(f"{pair.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {pair.image.name} is "
                        f"{img.shape[1]}x{img.shape[0]}", "masks must have their image's size")
    outside = 0
    if need_fov or pair.fov is not None:  # given splits name their field-of-view folders each
        if pair.fov is None:
            raise DataError(f"{pair.image}: no field-of-view file matches this image",
                            "add one to the fov folder or drop data.options.fov")
        inside = fm.read_fov(pair.fov, mask.shape)
        outside = int(inside.size - np.count_nonzero(inside))
        mask = np.where(inside, mask, IGNORE).astype(np.uint8)
    return img, mask, snapped, outside


def channels_of(pairs: list[Pair]) -> int:
    """3 if any image is in colour (grey ones are then repeated), else 1."""
    return 1 if all(header(p.image)[2] in GREY_MODES for p in pairs) else 3


def group_notes(layout: Layout) -> list[str]:
    """How files paired up and what was skipped, per folder set."""
    notes = []
    for g in layout.groups:
        at = f"{g.label}: " if g.label else ""
        rules = ", ".join(f"{r} ({c})" for r, c in g.mask_match.rules.most_common())
        notes.append(f"{at}{len(g.pairs)} image/mask pairs from {g.images.folder} + {g.masks.folder}; "
                     f"matched by {rules}")
        if g.mask_match.unmatched_images:
            notes.append(f"{at}{len(g.mask_match.unmatched_images)} image(s) without a mask skipped: "
                         f"{_some(g.mask_match.unmatched_images)}")
        if g.mask_match.unmatched_partners:
            notes.append(f"{at}{len(g.mask_match.unmatched_partners)} mask(s) without an image skipped: "
                         f"{_some(g.mask_match.unmatched_partners)}")
        if g.mask_match.ambiguous:
            notes.append(f"{at}ambiguous names (several files fit one name): {_some(g.mask_match.ambiguous)}")
        junk = sum(f.junk for f in (g.images, g.masks, g.fov) if f)
        other = [n for f in (g.images, g.masks, g.fov) if f for n in f.other]
        if junk:
            notes.append(f"{at}skipped {junk} system file(s) (.DS_Store, Thumbs.db, ._*)")
        if other:
            notes.append(f"{at}ignored {len(other)} non-image file(s): {_some(other)}")
    return notes


def summarize_sizes(sizes: list[tuple[int, int]], listed: int = 4) -> str:
    """Image sizes in a line of bounded length: all of them when few, else count, min/median/max, most common.

    Real folders can hold hundreds of distinct sizes; listing each made a note of thousands of characters that
    summary.json and the report repeated.
    """
    counts = Counter(f"{h}x{w}" for h, w in sizes)
    if len(counts) <= listed:
        return ", ".join(f"{k} ({c})" for k, c in counts.most_common())
    hs, ws = np.array([s[0] for s in sizes]), np.array([s[1] for s in sizes])
    line = (f"{len(counts)} distinct over {len(sizes)} images; min {hs.min()}x{ws.min()}, median "
            f"{np.median(hs):g}x{np.median(ws):g}, max {hs.max()}x{ws.max()} (each side on its own)")
    common = [f"{k} ({c})" for k, c in counts.most_common(3) if c > 1]  # a size seen once is not "common"
    return line + (f"; most common {', '.join(common)}" if common else "")
