"""Groups in file names: frames of one video, slices of one patient, tiles of one case.

Names such as `0001TP_006690` (CamVid), `Seq05VD_f00000`, `video3_frame_0012` or `patient12_slice4` carry a
group before a running number. Neighbouring frames or slices are near copies: a random split per image puts
them on both sides of the test, which then scores memory (a model that recalls the nearest training frame),
not generalisation. So the seeded random split draws whole groups, as it draws whole sub-folders.

A name's group is what is left after dropping its running number and a frame word before it (frame, slice, f,
img, ...). The groups are used when they are real: at least MIN_GROUPS of them, averaging at least two names
each (names without a shared prefix, `cju0qkwl35piu0993l0dewei2`, are all groups of one; `img_001` ... puts
every name in one group).
"""
from __future__ import annotations

import re
from collections import Counter

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
