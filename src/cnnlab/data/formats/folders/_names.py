"""Class names from the files data sets ship beside their masks, so that classes are not called class_3.

Read (the first found in the mask folder, its parent, then the parent's parent):
  class_dict.csv   name,r,g,b rows (CamVid's Kaggle release, many colour-coded sets): names with their colours
  labelmap.txt     CVAT / Pascal VOC exports, `name:r,g,b:parts:actions` lines: names with their colours
  _classes.csv     Roboflow's semantic exports, `Pixel Value, Class` rows: names with their grey values
  classes.txt, labels.txt   one name per line, in mask-value order (line 1 is value 0)
Names such as void / unlabelled / ignore mark that value or colour as void (ignored in loss and metrics, as
data.options.void). Whatever is read is written into the recipe by `cnnlab new` (data.options.classes or colors,
and void), so the recipe states it; the reader itself never looks for these files.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

FILES = ("class_dict.csv", "labelmap.txt", "_classes.csv", "classes.txt", "labels.txt")
VOID_NAMES = re.compile(r"(?i)^_?(void|unlabell?ed|ignored?|don'?t ?care|other_?ignore)_?$")


@dataclass(frozen=True)
class Names:
    """What a names file says: names in order, with a colour or a mask value each where the file gives one."""

    path: Path
    names: tuple[str, ...]
    colors: tuple | None = None     # (r, g, b) per name
    values: tuple | None = None     # grey value per name (None: the line order is the value)

    def value_of(self, i: int) -> int:
        return self.values[i] if self.values is not None else i


def find_names_file(mask_dirs: list[Path]) -> Path | None:
    """The first names file beside the masks: in a mask folder, its parent or its grandparent."""
    seen = []
    for d in mask_dirs:
        for folder in (d, d.parent, d.parent.parent):
            if folder not in seen:
                seen.append(folder)
    for folder in seen:
        for name in FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def _ints(cells: list[str]) -> list[int] | None:
    try:
        return [int(float(c)) for c in cells]
    except ValueError:
        return None


def read_names(path: Path) -> Names | None:
    """Parse a names file (None when it holds no names: a header alone, an unknown layout)."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if path.name == "class_dict.csv":
        rows = [r for r in csv.reader(lines) if len(r) >= 4]
        rows = [r for r in rows if _ints(r[1:4]) is not None]  # the header row is not numbers
        return Names(path, tuple(r[0].strip() for r in rows), tuple(tuple(_ints(r[1:4])) for r in rows)) \
            if rows else None
    if path.name == "labelmap.txt":
        rows = [ln.split(":") for ln in lines]
        rows = [r for r in rows if len(r) >= 2 and _ints(r[1].split(",")) and len(r[1].split(",")) == 3]
        return Names(path, tuple(r[0].strip() for r in rows), tuple(tuple(_ints(r[1].split(","))) for r in rows)) \
            if rows else None
    if path.name == "_classes.csv":
        rows = [r for r in csv.reader(lines) if len(r) >= 2 and _ints([r[0]]) is not None]
        return Names(path, tuple(r[1].strip() for r in rows), values=tuple(_ints([r[0]])[0] for r in rows)) \
            if rows else None
    return Names(path, tuple(lines)) if lines else None


def apply(names: Names, kind: str, values: tuple) -> dict:
    """Reader options from a names file for masks of this encoding kind with these values (grey levels, palette
    indices or colours): {classes: {name: value}} or {colors: {name: [r, g, b]}}, and void: [...] for the
    void-named entries present; {} where the file cannot name these masks (e.g. colours for grey masks)."""
    if kind == "rgb":
        if names.colors is None:
            return {}
        present = set(values)
        colors = {n: list(c) for n, c in zip(names.names, names.colors) if not VOID_NAMES.match(n)}
        void = [list(c) for n, c in zip(names.names, names.colors) if VOID_NAMES.match(n) and tuple(c) in present]
        return {"colors": colors, **({"void": void} if void else {})}
    if kind not in ("grey", "palette", "binary"):
        return {}
    by_value = {names.value_of(i): n for i, n in enumerate(names.names)}
    if names.colors is not None and names.values is None and not set(values) <= set(by_value):
        return {}  # a colour table whose row numbers do not cover these grey values
    if not set(values) <= set(by_value):
        return {}
    void = [v for v in values if VOID_NAMES.match(by_value[v])]
    classes = {by_value[v]: v for v in values if v not in void}
    return {"classes": classes, **({"void": void} if void else {})} if classes else {}

