"""Groups in file names: frames of one video, slices of one patient, tiles of one case.

Names such as `0001TP_006690` (CamVid), `Seq05VD_f00000`, `video3_frame_0012` or `patient12_slice4` carry a
group before a running number. Neighbouring frames or slices are near copies: a random split per image puts
them on both sides of the test, which then scores memory (a model that recalls the nearest training frame),
not generalisation. So the seeded random split draws whole groups, as it draws whole sub-folders.

A name's group is what is left after dropping its running number and a frame word before it (frame, slice, f,
img, ...). The groups are used when they are real: at least MIN_GROUPS of them, averaging at least two names
each (names without a shared prefix, `cju0qkwl35piu0993l0dewei2`, are all groups of one; `img_001` ... puts
every name in one group), and only where neighbouring images of a group look alike (neighbours_alike).
"""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

TRAILING = re.compile(r"^(?P<head>.*?)(?P<num>\d+)$")
FRAME_WORD = re.compile(r"(?i)(?:^|[_\-. ])(?:frames?|slices?|f|fr|img|image|im|s|t|z|idx|index|no|n)?[_\-. ]*$")
MIN_GROUPS = 3          # a three-way split needs a group for each side
MIN_MEAN_SIZE = 2.0     # on average two names or more per group: otherwise names are not grouped


def group_of(name: str) -> str:
    """The group a file name belongs to ('' when it has no running number or nothing before it)."""
    stem = name.rsplit("/", 1)[-1]
    m = TRAILING.match(stem)
    if not m:
        return stem
    head = FRAME_WORD.sub("", m.group("head")) if m.group("head") else ""
    return head.strip("_-. ")


def find_groups(names: list[str]) -> dict[str, list[str]]:
    """Group -> names when the names form real groups (see the module docstring); {} otherwise."""
    if not names:
        return {}
    by: dict[str, list[str]] = {}
    for n in names:
        by.setdefault(group_of(n), []).append(n)
    if "" in by or len(by) < MIN_GROUPS or len(names) / len(by) < MIN_MEAN_SIZE:
        return {}
    return by


def describe(groups: dict[str, list[str]], k: int = 6) -> str:
    """'4 groups: 0001TP (124), 0006R0 (101), ...' for notes and data check."""
    counts = Counter({g: len(v) for g, v in groups.items()})
    shown = ", ".join(f"{g} ({c})" for g, c in sorted(counts.items())[:k])
    more = f", ... ({len(groups) - k} more)" if len(groups) > k else ""
    return f"{len(groups)} name groups (sequence/video/patient/case prefixes): {shown}{more}"


ALIKE = 0.6         # neighbours within a group this much closer than images of different groups: near copies
PAIRS = 48          # image pairs read each way (thumbnails), spread over the groups


def _thumb(path: Path) -> np.ndarray:
    """16 x 16 grey thumbnail, zero mean and unit spread (brightness and contrast do not count)."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float64)
    return (arr - arr.mean()) / (arr.std() + 1e-6)


@lru_cache(maxsize=32)
def _alike_cached(within: tuple, across: tuple) -> tuple[float, float]:
    def dist(pairs: tuple) -> float:
        return float(np.median([np.sqrt(((_thumb(Path(a)) - _thumb(Path(b))) ** 2).mean()) for a, b, _, _ in pairs]))
    return dist(within), dist(across)


def neighbours_alike(groups: dict[str, list[str]], paths: dict[str, Path]) -> tuple[float, float, bool]:
    """(distance between neighbours in a group, between images of different groups, near copies?). Names can
    group without being neighbours (Oxford pets' Abyssinian_1, Abyssinian_2 are different cats): only where a
    group's neighbouring images look alike, far more than images of different groups, are they near copies."""
    keys = sorted(groups)
    per = max(1, PAIRS // len(keys))
    within, across = [], []
    for gi, g in enumerate(keys):
        names, other = groups[g], groups[keys[(gi + 1) % len(keys)]]
        for j in range(min(per, len(names) - 1)):
            within.append((names[j], names[j + 1]))
            across.append((names[j], other[j % len(other)]))
    if not within:
        return 0.0, 0.0, False
    stamp = lambda pairs: tuple((str(paths[a]), str(paths[b]), paths[a].stat().st_mtime_ns,  # noqa: E731
                                 paths[b].stat().st_mtime_ns) for a, b in pairs)
    near, far = _alike_cached(stamp(within), stamp(across))
    return near, far, near < ALIKE * far
