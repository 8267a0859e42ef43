"""Losses: Dice written from scratch (the course's soft Dice), cross-entropy, their sum, MSE; build_loss()."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from cnnlab.errors import ConfigError, did_you_mean, lookup
from cnnlab.losses.class_weights import build_weighted_ce

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def one_hot(target: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """N x H x W class indices -> N x C x H x W float one-hot (ignored pixels all zero)."""
    t = target.long()
    valid = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
    t = torch.where(valid, t, torch.zeros_like(t))
    oh = F.one_hot(t, num_classes).permute(0, 3, 1, 2).float()
    return oh * valid[:, None].float()


def soft_dice_per_class(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0,
                        ignore_index: int | None = None) -> torch.Tensor:
    """Per-class soft Dice over the whole batch: (2 sum(p g) + s) / (sum(p) + sum(g) + s).

    No one-hot tensor: sum(p g) per class is the probability of each pixel's own class, summed into class bins
    (gather + scatter_add), and sum(g) is a bincount; a dense N x C x H x W one-hot costs ~40% more per step.
    """
    c = probs.shape[1]
    t = target.long()
    valid = None if ignore_index is None else t != ignore_index
    if valid is not None:
        t = torch.where(valid, t, torch.zeros_like(t))
        probs = probs * valid[:, None].to(probs.dtype)
    own = probs.gather(1, t[:, None])  # N x 1 x H x W: p of the true class (0 where ignored)
    inter = probs.new_zeros(c).scatter_add(0, t.flatten(), own.flatten())
    counts = torch.bincount(t.flatten() if valid is None else t[valid], minlength=c)[:c].to(probs.dtype)
    denom = probs.sum((0, 2, 3)) + counts
    return (2 * inter + smooth) / (denom + smooth)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, include_background: bool = True,
              ignore_index: int | None = None) -> torch.Tensor:
    """1 - mean soft Dice over classes, on softmax probabilities (computed in fp32 for stability)."""
    probs = logits.float().softmax(dim=1)
    dice = soft_dice_per_class(probs, target, smooth, ignore_index)
    if not include_background:
        dice = dice[1:]
    return 1 - dice.mean()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy that tolerates ignore_index=None and uint8 targets (class weights: class_weights.py)."""
    return F.cross_entropy(logits.float(), target.long(),
                           ignore_index=-100 if ignore_index is None else ignore_index,
                           label_smoothing=label_smoothing)


# Loss registry: name -> the loss.params keys it takes (weighted_ce's go to class_weights.build_weighted_ce).
LOSSES: dict[str, set[str]] = {"dice": {"smooth", "include_background"}, "cross_entropy": {"label_smoothing"},
                               "dice_ce": {"smooth", "include_background", "ce_weight"}, "weighted_ce": set(),
                               "mse": set()}


def build_loss(name: str, params: dict, ignore_index: int | None = None, train=None,
               weights: torch.Tensor | None = None) -> Loss:
    """A loss function of (logits, target) from the recipe's loss section.

    train: the training split, whose masks give the class weights of a weighted loss; weights: the weights a run
    stored in its checkpoint (loss_entries), used as they are, so an evaluation never recomputes them."""
    params = dict(params)
    allowed = LOSSES
    lookup(allowed, name, "loss")
    if name == "weighted_ce":  # weights from the training split's class frequencies (class_weights.py)
        if train is None and weights is None:
            raise ConfigError("loss 'weighted_ce' needs the training split to compute class weights")
        return build_weighted_ce(train, weights=weights, ignore_index=ignore_index, **params)
    for key in params:
        if key not in allowed[name]:
            raise ConfigError(f"unknown config key 'loss.params.{key}' for loss '{name}'",
                              did_you_mean(key, allowed[name] or {"(none)"}))
    if name == "dice":
        return lambda lo, t: dice_loss(lo, t, ignore_index=ignore_index, **params)
    if name == "cross_entropy":
        return lambda lo, t: cross_entropy(lo, t, ignore_index, **params)
    if name == "dice_ce":
        w = params.pop("ce_weight", 1.0)
        return lambda lo, t: dice_loss(lo, t, ignore_index=ignore_index, **params) + w * cross_entropy(
            lo, t, ignore_index)
    return lambda out, t: F.mse_loss(out.float(), t.float())


def needs_weights(name: str, params: dict) -> bool:
    """Whether a loss weighs classes by the training masks' frequencies (its weights are then stored in the run)."""
    return name == "weighted_ce" and params.get("scheme", "median") != "none"


def loss_entries(loss_fn: Loss) -> dict:
    """What a checkpoint keeps of a loss: its class weights (computed once from the training masks), so that
    `cnnlab evaluate` scores with the very weights training used, without the training data."""
    weights = getattr(loss_fn, "weights", None)
    return {} if weights is None else {"class_weights": [float(w) for w in weights]}
