"""`cnnlab new`'s choice between whole images at the budget's size and patches at the images' own size.

The budget (new/budget.py) picks the largest whole-image size whose epochs fit the time; shrinking the images to
it is harmless for objects (the course instruments stay 7+ pixels wide) and ruinous for thin or small structures
(street poles and signs scored 0 at 160x224; DRIVE's vessels lose pixels). The rule: where the thinnest class's
half-width (new/structure.py, measured on the masks at their own size) would fall under MIN_HALF_WIDTH pixels at
the chosen size, the recipe trains on patches cut at the images' own size instead (data.patch, no data.size) and
scores whole images by Gaussian-weighted sliding windows (cnnlab.engine.windows).

The patch has the pixels of the chosen whole-image size (so a training step costs what the budget timed, and the
epochs it allowed still fit), as a square with sides a multiple of 32 (the encoder's stride), at most the images'
short side. train.foreground_oversample is written as a row with its measurement: 0 here, where the small classes
lie in most patches; a third (nnU-Net's share) for foreground that most patches miss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from cnnlab.engine.windows import window_starts
from cnnlab.new.structure import Thinnest

MIN_HALF_WIDTH = 1.5        # px at the training size: under it (a strip under ~3 px wide) patches keep the detail.
#                             Measured (docs/results.md, issue 31): DRIVE at 512x480 (1.75 px) tied (vessel Dice
#                             0.794 on 384x384 patches against 0.797 whole, native, 24 epochs each) so it stays whole;
#                             4x4-pixel objects shrunk to 64x64 (0.33 px) went from 0.58 to 0.97 on 64x64 patches
FOREGROUND_SHARE = 0.0      # train.foreground_oversample written: 0, as measured (1/3 lowered the small class from
#                             0.972 to 0.933 where it lay in most patches); nnU-Net's 1/3 is for sparse foreground
STEP = 32                   # patch sides: multiples of the encoder's stride
MIN_PATCH = 64


@dataclass(frozen=True)
class PatchChoice:
    """data.patch (None: whole images at data.size) and the one-line reason (written into the recipe)."""

    patch: list[int] | None
    why: str


def choose_patch(thinnest: Thinnest | None, size: list[int], median_hw: tuple[float, float]) -> PatchChoice:
    """Patches at native size where the thinnest class would shrink under MIN_HALF_WIDTH px at `size`."""
    if thinnest is None:
        return PatchChoice(None, f"whole images at {size[0]}x{size[1]} (no masks measured for thin structures)")
    scale = min(1.0, max(size) / max(median_hw))
    at_size = thinnest.half_width_px * scale
    measured = (f"the thinnest class '{thinnest.name}' (half-width {thinnest.half_width_px:.1f} px at the images' "
                f"own size) would be {at_size:.1f} px at {size[0]}x{size[1]}")
    short = int(min(median_hw))
    if scale >= 1.0:
        return PatchChoice(None, f"whole images at {size[0]}x{size[1]}, their own size (nothing is shrunk, so "
                                 f"patches would keep no more detail): {measured}")
    if short < MIN_PATCH:
        return PatchChoice(None, f"whole images at {size[0]}x{size[1]}: {measured}, but the images' short side "
                                 f"({short} px) is under the smallest patch ({MIN_PATCH} px)")
    if at_size >= MIN_HALF_WIDTH:
        return PatchChoice(None, f"whole images at {size[0]}x{size[1]}: {measured} (not under {MIN_HALF_WIDTH:g} px)")
    side = int(math.sqrt(size[0] * size[1]) // STEP) * STEP
    side = max(MIN_PATCH, min(side, short // STEP * STEP))
    return PatchChoice([side, side], f"patches of {side}x{side} at the images' own size ({int(median_hw[0])}x"
                                     f"{int(median_hw[1])} median), whole images scored by sliding windows: "
                                     f"{measured}, under {MIN_HALF_WIDTH:g} px; a patch has about the pixels of "
                                     f"{size[0]}x{size[1]}, so a step costs what the budget timed")


def windows_per_image(choice: PatchChoice, median_hw: tuple[float, float], overlap: float) -> int:
    """Sliding windows over an image of the median size (1 for whole images), as engine.windows tiles it: what a
    validation image costs in forward passes of the timed size, so that the budget counts it."""
    if choice.patch is None:
        return 1
    (ph, pw), (h, w) = choice.patch, (int(median_hw[0]), int(median_hw[1]))
    return len(window_starts(h, ph, overlap)) * len(window_starts(w, pw, overlap))


def patch_rows(data_rows: list[tuple[str, str]], train_rows: list[tuple[str, str]], choice: PatchChoice
               ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The recipe's data and train rows with data.patch instead of data.size, and the foreground share."""
    if choice.patch is None:
        return data_rows, train_rows
    data = [(f"  patch: {choice.patch}", "HxW of the random patches training cuts at the images' own size (no "
             "data.size): see the Resolution line above") if row.startswith("  size:") else (row, why)
            for row, why in data_rows]
    at = next((i for i, (row, _) in enumerate(train_rows) if row == "train:"), None)
    if at is None:
        return data, train_rows
    oversample = (f"  foreground_oversample: {FOREGROUND_SHARE}", "share of patches centred on a pixel of a "
                  "non-background class drawn uniformly among those present; 0: measured better where the small "
                  "classes lie in most patches (0.972 against 0.933 at 1/3); raise it (nnU-Net: 0.33) for "
                  "foreground that most patches miss")
    return data, [*train_rows[: at + 1], oversample, *train_rows[at + 1:]]
