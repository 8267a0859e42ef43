"""Finding image/mask pairs in users' folders: junk filtering, name matching, and the three split policies."""
from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cnnlab.data.formats.common import IMAGE_EXTS, is_junk
from cnnlab.errors import ConfigError, DataError, did_you_mean

# Annotation tools and data sets append these to the image's name (DRIVE: 21_manual1, GlaS: _anno, ...).
MASK_SUFFIX = re.compile(r"(?:[_\-. ]|(?<=\d))(masks?|anno(?:tations?)?|manual\d*|labels?|labell?ed|gt|"
                         r"ground_?truth|seg(?:mentation)?|targets?|fov|roi)$", re.IGNORECASE)
# ... and images sometimes carry their own (DRIVE: 21_training.tif, EndoVis: 3_input.jpg).
IMAGE_SUFFIX = re.compile(r"(?:[_\-. ]|(?<=\d))(images?|img|input|training|train|testing|test|raw|rgb|"
                          r"orig(?:inal)?)$", re.IGNORECASE)
SPLIT_ALIASES = {"validation": "val", "valid": "val", "training": "train", "testing": "test"}


def natural_key(name: str) -> list:
    """'10' after '9': the order users see in their file browser."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@dataclass
class FolderFiles:
    """The image files of one folder by stem, plus what was skipped."""

    folder: Path
    files: dict[str, Path]
    junk: int = 0
    other: list[str] = field(default_factory=list)    # non-image files, ignored
    subdirs: list[str] = field(default_factory=list)  # not descended into
    nested: bool = False  # files come from sub-folders one level down, named 'sub-folder/stem'


def _list_into(out: FolderFiles, folder: Path, prefix: str) -> None:
    """Add folder's entries to out; image files keyed by prefix + stem."""
    for p in sorted(folder.iterdir(), key=lambda q: natural_key(q.name)):
        if is_junk(p):
            out.junk += 1
        elif p.is_dir():
            out.subdirs.append(prefix + p.name)
        elif p.suffix.lower() in IMAGE_EXTS:
            key = prefix + p.stem
            if key in out.files:
                raise DataError(f"{folder}: '{out.files[key].name}' and '{p.name}' share the name '{p.stem}'",
                                "keep one file per image")
            out.files[key] = p
        else:
            out.other.append(prefix + p.name)


def list_folder(folder: Path, role: str) -> FolderFiles:
    """Image files of a folder; a missing or image-less folder is a DataError naming it. A folder holding only
    sub-folders of images (one per patient or case: LGG MRI, many medical sets) is read one level down, each
    file named 'sub-folder/stem' (`nested`), so that the split can keep each sub-folder's images together."""
    if not folder.is_dir():
        parent = folder.parent
        here = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
        hint = did_you_mean(folder.name, here) if here else f"{parent} does not exist either"
        raise DataError(f"{folder}: {role} folder not found", hint)
    out = FolderFiles(folder, {})
    _list_into(out, folder, "")
    if not out.files and out.subdirs:
        nested = FolderFiles(folder, {}, out.junk, out.other, nested=True)
        for sub in out.subdirs:
            _list_into(nested, folder / sub, sub + "/")
        out = nested if nested.files or nested.other else out  # else: say which folders it holds
    if not out.files:
        seen = f"found {len(out.other)} other file(s), e.g. {out.other[0]}" if out.other else (
            f"it and its sub-folders hold only folders: {', '.join(out.subdirs[:5])}" if out.subdirs
            else "it is empty")
        raise DataError(f"{folder}: no {role} files ({', '.join(sorted(IMAGE_EXTS))})", seen)
    return out


def split_subfolders(folder: Path) -> list[str]:
    """The sub-folders of an images folder when they are its splits (images/train, images/val: a folder without
    images of its own whose sub-folders all have split names), in natural order; [] otherwise."""
    if not folder.is_dir() or any(p.is_file() and p.suffix.lower() in IMAGE_EXTS for p in folder.iterdir()):
        return []
    subs = [p.name for p in sorted(folder.iterdir(), key=lambda q: natural_key(q.name)) if p.is_dir()
            and not is_junk(p)]
    return subs if subs and are_split_names(subs) else []


def are_split_names(names) -> bool:
    """Whether every name is a split's (train, val, test, or an alias such as validation)."""
    return all(canonical_split(n) in ("train", "val", "test") for n in names)


def sub_folder(name: str) -> str:
    """The sub-folder of a nested folder's file name ('case_3/slice_7' -> 'case_3'; '' when not nested)."""
    return name.split("/", 1)[0] if "/" in name else ""


def split_shared_folder(files: FolderFiles) -> tuple[FolderFiles, FolderFiles]:
    """Images and masks in one folder (GlaS: train_1.bmp + train_1_anno.bmp): masks are the names with a mask suffix."""
    is_mask = {s: bool((m := MASK_SUFFIX.search(s)) and m.start() > 0) for s in files.files}
    images = FolderFiles(files.folder, {s: p for s, p in files.files.items() if not is_mask[s]}, files.junk,
                         files.other, files.subdirs, files.nested)
    masks = FolderFiles(files.folder, {s: p for s, p in files.files.items() if is_mask[s]}, nested=files.nested)
    if not images.files or not masks.files:
        raise DataError(f"{files.folder}: images and masks share this folder, but "
                        f"{'no' if not masks.files else 'every'} file name ends in a mask suffix (_mask, _anno, ...)",
                        "name masks <image>_mask.png, or keep them in their own folder")
    return images, masks


@dataclass
class Matching:
    """Image stem -> partner file (mask or field of view), how each pair matched, and what stayed alone."""

    pairs: dict[str, Path]
    rules: Counter
    unmatched_images: list[str]
    unmatched_partners: list[str]
    ambiguous: list[str]


def _strip(pattern: re.Pattern, always: bool) -> Callable[[str], tuple | None]:
    """Key function: the stem without a known suffix (None when there is none, unless always)."""
    def key(stem: str) -> tuple | None:
        m = pattern.search(stem)
        if m and m.start() > 0:
            return stem[:m.start()].casefold(), stem[m.start():]
        return (stem.casefold(), "") if always else None
    return key


def _exact(stem: str) -> tuple:
    return stem.casefold(), ""


def _numbers(stem: str) -> tuple | None:
    nums = re.findall(r"\d+", stem)
    return (tuple(int(n) for n in nums), "#") if nums else None


# Any one last name part after a separator (CHASE_DB1: Image_01L.jpg + Image_01L_1stHO.png): a mask named after its
# image plus a word this list does not know. Two such masks for one image (_1stHO, _2ndHO) stay ambiguous.
ANY_SUFFIX = re.compile(r"[_\-. ][^_\-. ]+$")

# Tried in order on what is still unmatched: exact name, then dropping known suffixes, then any one last name part,
# then the numbers in the names.
STAGES = [(_exact, _exact), (_exact, _strip(MASK_SUFFIX, False)), (_strip(IMAGE_SUFFIX, False), _strip(
    MASK_SUFFIX, True)), (_exact, _strip(ANY_SUFFIX, False)), (_numbers, _numbers)]


def _rule(image_suffix: str, partner_suffix: str, role: str) -> str:
    """How a pair matched, in words for the notes."""
    if partner_suffix == "#":
        return "same numbers in the names (check these pairs)"
    parts = [f"image name minus '{image_suffix}'"] if image_suffix else []
    parts += [f"{role} name minus '{partner_suffix}'"] if partner_suffix else []
    return " = ".join(parts) if len(parts) == 2 else (parts[0] if parts else "same name")


def match_stems(images: dict[str, Path], partners: dict[str, Path], role: str) -> Matching:
    """Pair files by stem: exact, then without common suffixes (_mask, _manual1, _training, ...), then by numbers."""
    left_img, left_part = list(images), list(partners)
    pairs: dict[str, Path] = {}
    matched: set[str] = set()  # partner names paired so far (names, not file stems: nested folders prefix them)
    rules: Counter = Counter()
    ambiguous: set[str] = set()
    for img_key, part_key in STAGES:
        by_img, by_part = defaultdict(list), defaultdict(list)
        for s in left_img:
            if (k := img_key(s)) is not None:
                by_img[k[0]].append((s, k[1]))
        for s in left_part:
            if (k := part_key(s)) is not None:
                by_part[k[0]].append((s, k[1]))
        for key, imgs in by_img.items():
            parts = by_part.get(key)
            if not parts:
                continue
            if len(imgs) > 1 or len(parts) > 1:
                ambiguous.update(s for s, _ in imgs + parts)
                continue
            (img, isuf), (part, psuf) = imgs[0], parts[0]
            pairs[img] = partners[part]
            matched.add(part)
            rules[_rule(isuf, psuf, role)] += 1
        left_img = [s for s in left_img if s not in pairs]
        left_part = [s for s in left_part if s not in matched]
    still = set(left_img) | set(left_part)
    return Matching(pairs, rules, left_img, left_part, sorted(ambiguous & still, key=natural_key))


def canonical_split(name: str) -> str:
    """'validation' and 'val' name the same split (the recipe default is 'validation')."""
    low = name.lower()
    return SPLIT_ALIASES.get(low, low)


def find_split(split: str, present: list[str], where: str) -> str:
    """The present split that split names (aliases and case allowed), or a DataError listing them."""
    if split in present:
        return split
    hits = [p for p in present if canonical_split(p) == canonical_split(split)]
    if len(hits) == 1:
        return hits[0]
    raise DataError(f"{where}: no split '{split}'", f"splits here: {', '.join(present) or 'none'}")


def parse_fractions(raw) -> dict[str, float]:
    """{train: .7, val: .15, test: .15} or [.7, .15, .15]; the first split takes the rounding remainder."""
    if isinstance(raw, (list, tuple)):
        if not 1 <= len(raw) <= 3:
            raise ConfigError(f"data.options.fractions has {len(raw)} numbers", "give [train, val] or "
                              "[train, val, test], or a mapping {train: 0.7, val: 0.15, test: 0.15}")
        raw = dict(zip(("train", "val", "test"), raw))
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"data.options.fractions must be a mapping of split -> fraction, got {raw!r}",
                          "e.g. {train: 0.7, val: 0.15, test: 0.15}")
    out = {}
    for name, f in raw.items():
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise ConfigError(f"data.options.fractions.{name} must be a number in [0, 1], got {f!r}")
        out[str(name)] = float(f)
    if abs(sum(out.values()) - 1) > 1e-6:
        raise ConfigError(f"data.options.fractions add up to {sum(out.values()):g}, not 1",
                          "e.g. {train: 0.7, val: 0.15, test: 0.15}")
    return out


def _counts(n: int, fractions: dict[str, float], what: str) -> dict[str, int]:
    """Every non-zero fraction but the first gets round(f * n) (at least 1); the first keeps the rest (>= 1)."""
    first, *rest = fractions
    counts = {s: max(1, round(fractions[s] * n)) if fractions[s] > 0 else 0 for s in rest}
    if n - sum(counts.values()) < 1:
        raise DataError(f"{n} {what} are too few for fractions {fractions}",
                        "add images, or lower the val/test fractions")
    return counts


def random_split(names: list[str], fractions: dict[str, float], seed: int,
                 what: str = "image/mask pairs") -> dict[str, list[str]]:
    """Seeded split of sorted names: every non-zero fraction gets round(f * n) (at least 1), the first the rest."""
    names = sorted(names, key=natural_key)  # independent of the order the file system lists them
    n = len(names)
    first, *rest = fractions
    counts = _counts(n, fractions, what)
    perm = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for s in rest:
        out[s] = [names[i] for i in sorted(perm[start:start + counts[s]])]
        start += counts[s]
    out[first] = [names[i] for i in sorted(perm[start:])]
    return {s: out[s] for s in fractions if out[s]}


def contiguous_split(names: list[str], fractions: dict[str, float],
                     what: str = "image/mask pairs") -> dict[str, list[str]]:
    """Blocks of names in natural order with random_split's counts: the first split (train) first, the others
    after it in the order given (val, then test last). For one sequence (frames of a video, slices of a stack):
    only the blocks' edges touch, where a random split puts a neighbour of nearly every test image in training."""
    names = sorted(names, key=natural_key)
    first, *rest = fractions
    counts = _counts(len(names), fractions, what)
    start = len(names) - sum(counts.values())  # the first split's share
    out = {first: names[:start]}
    for s in rest:
        out[s] = names[start:start + counts[s]]
        start += counts[s]
    return {s: out[s] for s in fractions if out[s]}


def _list_entry(stem: str) -> str:
    """A listed name may carry its extension or folder ('images/a.png' -> 'a')."""
    p = Path(stem.strip())
    return (p.stem if p.suffix.lower() in IMAGE_EXTS else p.name).casefold()


def read_split_file(path: Path) -> dict[str, str]:
    """Stem -> split from a CSV (stem,split rows, header optional) or JSON ({stem: split} or {split: [stems]})."""
    if not path.is_file():
        raise DataError(f"{path}: split list not found", "set data.options.split_file to a CSV or JSON file "
                        "relative to data.root")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON (line {e.lineno})", "fix the syntax") from None
        if isinstance(raw, dict) and all(isinstance(v, list) for v in raw.values()):
            return {_list_entry(str(s)): str(split) for split, stems in raw.items() for s in stems}
        if isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values()):
            return {_list_entry(str(s)): split for s, split in raw.items()}
        raise DataError(f"{path}: expected {{stem: split}} or {{split: [stems]}}", "e.g. {\"train\": [\"a\", \"b\"]}")
    rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
    if rows and len(rows[0]) >= 2 and rows[0][1].strip().lower() == "split":
        rows = rows[1:]  # header row
    bad = [i for i, r in enumerate(rows) if len(r) < 2 or not r[1].strip()]
    if not rows or bad:
        where = f"row {bad[0] + 1}" if bad else "no rows"
        raise DataError(f"{path}: {where} is not 'stem,split'", "one 'name,split' line per image (header optional)")
    return {_list_entry(r[0]): r[1].strip() for r in rows}


def list_split(names: list[str], listed: dict[str, str]) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """Split -> names from a list; also the names not listed and the listed names with no image."""
    by_cf = {n.casefold(): n for n in names}
    out: dict[str, list[str]] = defaultdict(list)
    for stem, split in listed.items():
        if stem in by_cf:
            out[split].append(by_cf[stem])
    unlisted = [n for n in names if n.casefold() not in listed]
    missing = [s for s in listed if s not in by_cf]
    return {s: sorted(v, key=natural_key) for s, v in out.items()}, unlisted, missing


def split_folders(root: Path, images: str) -> list[str]:
    """Folders root/<split>/ that hold an images folder, in natural order."""
    if not root.is_dir():
        return []
    return [p.name for p in sorted(root.iterdir(), key=lambda q: natural_key(q.name))
            if p.is_dir() and not is_junk(p) and (p / images).is_dir()]
