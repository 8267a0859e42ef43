"""`cnnlab new`'s choice between whole images at the budget's size and patches at the images' own size.

The budget (new/budget.py) picks the largest whole-image size whose epochs fit the time; shrinking the images to
it is harmless for objects (the course instruments stay 7+ pixels wide) and ruinous for thin or small structures
(street poles and signs scored 0 at 160x224; DRIVE's vessels lose pixels). Two rules give patches cut at the
images' own size (data.patch, no data.size), with whole images scored by Gaussian-weighted sliding windows
(cnnlab.engine.windows):
- thin structures (the thinnest class under new/structure.py's THIN_FRACTION of the long side: vessels,
  membranes) always: on DRIVE, whole images at their own size for 60 epochs scored vessel Dice 0.8192 / 0.8186 /
  0.8174 (three seeds), 384x384 patches for 100 epochs 0.8217 / 0.8213 / 0.8219, in about two thirds of the
  training time, and as many epochs as fill the budget did better still (DRIVE 184: 0.8246; ISBI 230: 0.8083
  against 0.8061 at 100, one seed each); on ISBI's membranes 352x352 patches tied whole images (mean of three
  seeds 0.8095 against 0.8080);
- any class whose half-width would fall under MIN_HALF_WIDTH pixels at the chosen size (4x4-pixel objects).

A patch has the pixels of the chosen whole-image size, at most about NATIVE_SHARE of the images' short side (so
random crops vary: DRIVE's 584x565 gives 384x384), as a square with sides a multiple of 32 (the encoder's
stride). The budget times a step at the patch's size. train.foreground_oversample is written as a row with its
measurement: 0 here, where the small classes lie in most patches; a third (nnU-Net's share) for foreground that
most patches miss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from cnnlab.engine.windows import window_starts
from cnnlab.new.structure import Thinnest

MIN_HALF_WIDTH = 1.5        # px at the training size: under it (a strip under ~3 px wide) patches keep the detail.
#                             Measured (docs/results.md, issue 31): 4x4-pixel objects shrunk to 64x64 (0.33 px)
#                             went from 0.58 to 0.97 on 64x64 patches
NATIVE_SHARE = 2 / 3        # the patch's side at most about this share of the short side (to the nearest multiple
#                             of STEP): DRIVE 584x565 -> 384x384, ISBI 512x512 -> 352x352
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
    """Patches at native size for thin structures, or where the thinnest class would shrink under MIN_HALF_WIDTH
    px at `size`; whole images at `size` otherwise."""
    if thinnest is None:
        return PatchChoice(None, f"whole images at {size[0]}x{size[1]} (no masks measured for thin structures)")
    scale = min(1.0, max(size) / max(median_hw))
    at_size = thinnest.half_width_px * scale
    measured = (f"the thinnest class '{thinnest.name}' (half-width {thinnest.half_width_px:.1f} px at the images' "
                f"own size) would be {at_size:.1f} px at {size[0]}x{size[1]}")
    shrinks = scale < 1.0 and at_size < MIN_HALF_WIDTH
    if not (thinnest.thin or shrinks):
        own = ", their own size" if scale >= 1.0 else ""
        return PatchChoice(None, f"whole images at {size[0]}x{size[1]}{own}: {measured} (not under "
                                 f"{MIN_HALF_WIDTH:g} px), and it is no thin structure")
    short = int(min(median_hw))
    if short < MIN_PATCH:
        return PatchChoice(None, f"whole images at {size[0]}x{size[1]}: {measured}, but the images' short side "
                                 f"({short} px) is under the smallest patch ({MIN_PATCH} px)")
    side = patch_side(size, short)
    why = (f"{measured}, under {MIN_HALF_WIDTH:g} px" if shrinks else
           f"{thinnest.line()}, thin structures: on DRIVE 384x384 patches for 100 epochs beat whole images at "
           f"their own size for 60 (vessel Dice 0.8217 / 0.8213 / 0.8219 against 0.8192 / 0.8186 / 0.8174, three "
           f"seeds) in about two thirds of the time, and 184 epochs (the whole budget) 0.8246; ISBI's membranes: a "
           f"tie (0.8095 against 0.8080)")
    return PatchChoice([side, side], f"patches of {side}x{side} at the images' own size ({int(median_hw[0])}x"
                                     f"{int(median_hw[1])} median), whole images scored by sliding windows: {why}")


def patch_side(size: list[int], short: int) -> int:
    """The pixels of `size` as a square, at most about NATIVE_SHARE of the short side, in multiples of STEP."""
    side = int(math.sqrt(size[0] * size[1]) // STEP) * STEP
    side = min(side, round(short * NATIVE_SHARE / STEP) * STEP, short // STEP * STEP)
    return max(MIN_PATCH, side)


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
