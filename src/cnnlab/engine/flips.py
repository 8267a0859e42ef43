"""Test-time flips: class scores averaged over an image and its mirror images (train.tta, `predict --tta`).

A model taught a symmetry by augmentation (augment.hflip, augment.vflip) answers a mirrored image about as well as
the image itself, and its errors there differ a little: the mean of the answers, each flipped back, is often
better than either, but not always (below). Only the flips the run trained with are used (tta_flips), so a scene
with an up is never turned upside down. On DRIVE, trained with both flips, the four passes gave +0.003 to +0.0045
vessel Dice (three training seeds; 20 of 20 test images better on the two checked); on the course frames -0.0135
to +0.017 strict mean Dice (five runs, mean +0.002: a rare class can lose); on ISBI's 4 test slices -0.0004 to
-0.005 membrane Dice (five runs; docs/results.md).

The scores are averaged as probabilities (softmax, then the mean over the passes) and handed on as their log,
which are logits whose softmax is that mean: the engine's loss, argmax and sliding-window blend take them like
any model's logits, and `predict`, `evaluate` and the end-of-run test go through this one function, so they agree.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cnnlab.config import AugmentConfig
from cnnlab.engine.runtime import Runtime

Flips = tuple[tuple[int, ...], ...]
HORIZONTAL: Flips = ((-1,),)                       # the mirror alone
VERTICAL: Flips = ((-2,),)
ALL_FLIPS: Flips = ((-1,), (-2,), (-2, -1))        # horizontal, vertical and both
FLIP_NAMES = {(-1,): "horizontal", (-2,): "vertical", (-2, -1): "both"}  # dims flipped -> the word files say


def tta_flips(augment: AugmentConfig, tta: bool | str) -> Flips:
    """The flips test-time augmentation averages over: those the run trained with (augment.hflip, augment.vflip;
    both: the two mirrors and the half turn they make together); none without tta, or for a run taught no symmetry
    (a mirrored digit is not that digit). tta 'auto' gives the flips to try: the end of the run keeps them or not
    (engine/summary.py: choose_flips)."""
    if not tta:
        return ()
    if augment.hflip and augment.vflip:
        return ALL_FLIPS
    return HORIZONTAL if augment.hflip else VERTICAL if augment.vflip else ()


def flip_names(flips: Flips) -> list[str]:
    """The flips in words (summary.json, predict.json, evaluate_<split>.json)."""
    return [FLIP_NAMES[d] for d in flips]


def flips_named(names: list[str]) -> Flips:
    """flip_names read back: the flips a finished run's summary.json says its scores averaged over."""
    dims = {name: d for d, name in FLIP_NAMES.items()}
    return tuple(dims[n] for n in names if n in dims)


def flip_mean_logits(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     flips: Flips) -> torch.Tensor:
    """forward(x) (float logits, N x K x H x W or N x K), or with flips the log of the mean softmax over x and its
    flips, each dense output flipped back (class scores are not)."""
    out = forward(x)
    if not flips:
        return out
    total = out.softmax(1)
    for dims in flips:
        o = forward(x.flip(dims))
        total = total + (o.flip(dims) if o.ndim == 4 else o).softmax(1)
    return (total / (1 + len(flips))).clamp_min(torch.finfo(total.dtype).tiny).log()


def model_logits(model: nn.Module, rt: Runtime, x: torch.Tensor, flips: Flips = ()) -> torch.Tensor:
    """Float logits of normalised inputs on the model's device, each pass in the run's memory format and autocast,
    averaged over flips where there are any: the one call behind the engine's Scorer.logits and inference's
    class_probabilities, so the end-of-run test, `evaluate` and `predict` run the model the same way."""
    with rt.autocast():
        return flip_mean_logits(lambda b: model(rt.to_input(b)).float(), x, flips)
