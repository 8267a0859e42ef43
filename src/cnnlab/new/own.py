"""`cnnlab new` on data as people keep it: given splits, void values, class names, scenes.

What the user can say on the command line (OwnData) and the recipe rows that follow from it and from the survey:
the given splits' folders (data.options.splits), the void values and their share, where class names came from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnlab.data.formats import folders
from cnnlab.errors import ConfigError
from cnnlab.new.rows import y

SCENES = ("auto", "upright", "any")


@dataclass(frozen=True)
class OwnData:
    """`cnnlab new` options about the data: void values, class names, hand-named splits, the scene."""

    void: tuple = ()                            # data.options.void values (ints or [r, g, b])
    classes: tuple[str, ...] | None = None      # --classes NAME,...: in class (mask value) order
    val: tuple = (None, None)                   # --val-images, --val-masks
    test: tuple = (None, None)                  # --test-images, --test-masks
    scene: str = "auto"                         # auto | upright | any (the augmentation rule, new/scene.py)

    def __post_init__(self) -> None:
        if self.scene not in SCENES:
            raise ConfigError(f"--scene {self.scene}: must be one of {', '.join(SCENES)}",
                              "upright: photographs with an up (no vertical flips); any: no up (microscopy, aerial)")

    def reader_options(self) -> dict:
        """What the folders reader gets from these flags."""
        out: dict = {}
        if self.void:
            out["void"] = [list(v) if isinstance(v, (list, tuple)) else v for v in self.void]
        if self.classes:
            out["classes"] = list(self.classes)
        return out


def given(images: Path, masks: Path, fov: Path | None, own: OwnData) -> tuple[Path, dict] | None:
    """(root, reader options) of the given splits: by hand, or found beside the training pair."""
    return folders.given_options(images, masks, fov, own.val, own.test)


def given_rows(s: folders.Survey, splits: dict[str, dict], carve: dict[str, float]) -> list[tuple[str, str]]:
    """The data section's split rows for given splits: the recipe's split names and each split's folders."""
    counts = {k: len(v) for k, v in s.layout.splits.items()}
    rows = [("  train: train", f"{counts.get('train', 0)} pairs"
             + (f" (after carving {', '.join(k for k in carve if k != 'train')})" if len(carve) > 1 else ""))]
    rows.append(("  val: val", f"the given validation split: {counts.get('val', 0)} pairs" if "val" in splits else
                 f"{counts.get('val', 0)} pairs carved from the given train split (seeded; whole name groups where the "
                 "names have them)"))
    rows.append(("  test: test", f"the given test split: {counts.get('test', 0)} pairs, never re-carved"
                 if "test" in splits else f"no test folder given: {counts.get('test', 0)} pairs carved from train"))
    return rows


def given_option_rows(splits: dict[str, dict], carve: dict[str, float], s: folders.Survey) -> list[tuple[str, str]]:
    """data.options rows naming each given split's folders (absolute) and the carve fractions."""
    counts = {k: len(v) for k, v in s.layout.splits.items()}
    rows = [("    split: given", "the splits the data set ships (found beside the folders named, or named by hand)"),
            ("    splits:", "")]
    for name, pair in splits.items():
        rows.append((f"      {name}: {y(pair)}", f"{counts.get(name, 0)} pairs"))
    if len(carve) > 1:
        rows.append((f"    fractions: {y({k: round(v, 4) for k, v in carve.items()})}",
                     "how the given train split is divided among train and the splits not given"))
        rows.append(("    seed: 0", "fixed, so the carved split does not move between runs"))
    return rows


def data_option_rows(s: folders.Survey) -> list[tuple[str, str]]:
    """Rows for void values and class names read from a names file (data.options.void / colors)."""
    enc, rows = s.encoding, []
    colors = s.names_options.get("colors")
    if colors:
        rows.append((f"    colors: {y(colors)}", f"class colours from {s.names_file}"))
    if enc is not None and enc.void_values:
        void = [list(v) if isinstance(v, tuple) else v for v in enc.void_values]
        share = enc.void_pixels / max(enc.void_pixels + sum(enc.pixel_counts), 1)
        src = f"named void in {s.names_file}" if "void" in s.names_options else "--void"
        rows.append((f"    void: {y(void)}", f"{src}: ignored in loss and metrics like 255 "
                     f"({100 * share:.1f}% of mask pixels)"))
    return rows


def classes_why(s: folders.Survey) -> str:
    """Where the class names came from, for the classes row's comment."""
    if s.names_file:
        return f"names from {s.names_file}"
    if s.opts.classes:
        return "names from --classes"
    names = list(s.encoding.class_names) if s.encoding else []
    if len(names) > 2:
        return ("rename freely (value 0 is class_0, not assumed to be background: name it 'background' if it is, "
                "or give --classes / a classes.txt beside the masks)")
    return "rename freely"
