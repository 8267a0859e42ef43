"""Does the imagery have an up? What picks `cnnlab new`'s flips and turns.

Photographs of scenes (streets, rooms, people) have an up: sky above, road below. A vertical flip or a quarter turn
makes a picture the model will never be shown, and spends capacity on it. Imagery without an up (microscopy,
endoscopy, fundus, aerial and top-down views) looks the same any way round, so vertical flips and quarter turns
are free extra data there.

The measurement, from the masks (what the classes do, not how the pixels look): the share of each class in the
top third of every sampled mask, summed over the masks, against the bottom third's; `up` is the total-variation
distance between the two class histograms (0: the same classes above and below; 1: none in common). `side` is the
same between the left and right thirds. Summed over the data set, objects placed anywhere cancel out; a layout
that holds across images (sky on top) does not. Upright where up >= UP_MIN and up >= SIDE_RATIO x side (a scene
lit or framed from one side is not upside-down-proof either, but its left and right differ as much).

Measured (tests/new/test_own_data_scene.py, docs/results.md): street-scene stand-in frames (sky, buildings, road)
up 0.94; the shared real sets: DRIVE fundus 0.01, ISBI 2012 EM 0.01, EndoVis 2017 course frames 0.11 (the
instruments enter from below more often than from above, but their share differs by far less than a scene's
layers do). UP_MIN = 0.3 sits between the endoscopy frames' 0.11 and the street frames' 0.94.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnlab.data.formats import folders

UP_MIN = 0.3        # top/bottom class histograms this far apart (total variation): the scene has an up
SIDE_RATIO = 2.0    # ... and at least twice as far apart as left/right
SAMPLED = 24        # masks read, evenly spaced
SMALL_ROTATE = 10.0  # degrees: the small rotations an upright photograph tolerates (a camera held a little askew)
SCALE = 0.8          # crop_scale: random crops of 80-100% of the side, resized back (zoom)


@dataclass(frozen=True)
class Scene:
    """What the masks say about an up, and the rule's verdict (or the user's --scene)."""

    up: float
    side: float
    upright: bool
    source: str          # "measured" | "--scene upright" | "--scene any" | "no masks"

    def line(self) -> str:
        """For the recipe's augmentation comment."""
        what = ("an up (photographs of scenes): horizontal flips, small rotations and zoom; no vertical flips or "
                "quarter turns") if self.upright else ("no up (microscopy, endoscopy, fundus, aerial): flips both "
                                                       "ways and quarter turns")
        if self.source != "measured":
            return f"{self.source}: {what}"
        return (f"measured from the masks: class layout top vs bottom {self.up:.2f}, left vs right {self.side:.2f} "
                f"(total variation; upright where top/bottom >= {UP_MIN} and >= {SIDE_RATIO:g}x left/right): {what}; "
                f"--scene upright|any overrides")


def _thirds(mask: np.ndarray, k: int, ignore: int = folders.IGNORE) -> tuple[np.ndarray, ...]:
    """Class histograms (normalised) of the top, bottom, left and right thirds of one mask."""
    h, w = mask.shape
    parts = (mask[: h // 3], mask[h - h // 3:], mask[:, : w // 3], mask[:, w - w // 3:])
    out = []
    for p in parts:
        v = p[p != ignore].astype(np.int64)
        c = np.bincount(v, minlength=k)[:k].astype(np.float64)
        out.append(c / max(c.sum(), 1.0))
    return tuple(out)


def measure_layout(masks: list[np.ndarray], k: int) -> tuple[float, float]:
    """(up, side): total-variation distances between the summed class histograms of top vs bottom and left vs right
    thirds (each mask weighs the same)."""
    if not masks:
        return 0.0, 0.0
    sums = np.zeros((4, k))
    for m in masks:
        sums += np.stack(_thirds(m, k))
    sums /= len(masks)
    return float(0.5 * np.abs(sums[0] - sums[1]).sum()), float(0.5 * np.abs(sums[2] - sums[3]).sum())


def decide(mask_paths: list, enc: folders.Encoding, override: str = "auto") -> Scene:
    """The scene rule for these masks, or the user's --scene."""
    if override in ("upright", "any"):
        return Scene(0.0, 0.0, override == "upright", f"--scene {override}")
    if not mask_paths:
        return Scene(0.0, 0.0, False, "no masks")
    picks = np.unique(np.linspace(0, len(mask_paths) - 1, min(SAMPLED, len(mask_paths))).round().astype(int))
    masks = [folders.to_classes(mask_paths[i], enc)[0] for i in picks]
    up, side = measure_layout(masks, len(enc.class_names))
    return Scene(up, side, up >= UP_MIN and up >= SIDE_RATIO * side, "measured")


def augment_rows(scene: Scene, square: bool) -> list[tuple[str, str]]:
    """The flips and turns for imagery with an up (photographs of scenes) or without one (microscopy, endoscopy,
    fundus, aerial); the first row's comment states the measurement or the override."""
    if scene.upright:
        return [("  hflip: true", scene.line()), ("  vflip: false", "a scene upside down is never shown to the model"),
                ("  rot90: false", ""), (f"  rotate: {SMALL_ROTATE:g}", "degrees: a camera held a little askew"),
                (f"  crop_scale: {SCALE:g}", "zoom: random crops of 80-100% of the side, resized back")]
    return [("  hflip: true", scene.line()), ("  vflip: true", ""),
            (f"  rot90: {'true' if square else 'false'}", "square input: quarter turns too" if square else
             "input is not square: no quarter turns")]


def with_scene(rows: list[tuple[str, str]], scene: Scene, square: bool) -> list[tuple[str, str]]:
    """The training rows with their flip/turn rows (hflip, vflip, rot90) replaced by the scene's."""
    keys = ("  hflip:", "  vflip:", "  rot90:")
    at = next((i for i, (t, _) in enumerate(rows) if t.startswith(keys[0])), None)
    if at is None:
        return rows
    rest = [r for r in rows[at:] if not r[0].startswith(keys)]
    return rows[:at] + augment_rows(scene, square) + rest
