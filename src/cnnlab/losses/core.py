"""Losses: Dice written from scratch (the course's soft Dice), cross-entropy, their sum, MSE; the imbalance-aware
combination (class-weighted CE, Lovász-softmax, OHEM: CombinedLoss); build_loss()."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError, did_you_mean, lookup
from cnnlab.losses.class_weights import check_weight_params, training_weights, weighted_cross_entropy
from cnnlab.losses.imbalance import lovasz_softmax, ohem_cross_entropy

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
    """Cross-entropy that tolerates ignore_index=None and uint8 targets (class weights: class_weights.py).

    A batch whose every pixel is ignored (a patch wholly on void) gives 0 with a zero gradient, as
    weighted_cross_entropy does: F.cross_entropy's mean over no pixel is 0/0 = NaN, which stops a run as diverged.
    """
    t = target.long()
    loss = F.cross_entropy(logits.float(), t, ignore_index=-100 if ignore_index is None else ignore_index,
                           label_smoothing=label_smoothing)
    if ignore_index is None:
        return loss
    return torch.where((t != ignore_index).any(), loss, torch.zeros_like(loss))  # no host sync: a tensor test


class CombinedLoss(nn.Module):
    """dice * soft-Dice loss + ce * cross-entropy (class weights; OHEM: only the hardest share of pixels) + lovasz *
    Lovász-softmax (losses.imbalance). The class weights are a buffer (they move with .to(device)) and what the
    checkpoint stores (loss_entries); None: unweighted cross-entropy."""

    def __init__(self, weights: torch.Tensor | None = None, ignore_index: int | None = None, dice: float = 0.0,
                 ce: float = 1.0, lovasz: float = 0.0, ohem_keep: float = 1.0, smooth: float = 1.0,
                 include_background: bool = True) -> None:
        super().__init__()
        self.register_buffer("weights", None if weights is None else torch.as_tensor(weights).float().clone())
        self.ignore_index, self.dice, self.ce, self.lovasz = ignore_index, dice, ce, lovasz
        self.ohem_keep, self.smooth, self.include_background = ohem_keep, smooth, include_background

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        if self.dice:
            total = total + self.dice * dice_loss(logits, target, self.smooth, self.include_background,
                                                  self.ignore_index)
        if self.ce and self.ohem_keep < 1.0:
            total = total + self.ce * ohem_cross_entropy(logits, target, self.ohem_keep, self.weights,
                                                         self.ignore_index)
        elif self.ce:
            total = total + self.ce * weighted_cross_entropy(logits, target, self.weights, self.ignore_index)
        if self.lovasz:
            total = total + self.lovasz * lovasz_softmax(logits, target, self.ignore_index)
        return total


# Loss registry: name -> the loss.params keys it takes. Class weights (scheme: median | inverse | enet_log | none,
# max_weight, absent_weight; class_weights.py) go into the cross-entropy of every loss that has one; lovasz_weight
# adds a Lovász-softmax term beside it, ohem_keep (0 < share <= 1) keeps only the hardest pixels' cross-entropy.
WEIGHTS = {"scheme", "max_weight", "absent_weight"}
TERMS = {"lovasz_weight", "ohem_keep"}
LOSSES: dict[str, set[str]] = {"dice": {"smooth", "include_background"}, "cross_entropy": {"label_smoothing"},
                               "dice_ce": {"smooth", "include_background", "ce_weight"} | WEIGHTS | TERMS,
                               "weighted_ce": WEIGHTS | TERMS, "lovasz": set(), "ohem_ce": {"keep"} | WEIGHTS,
                               "mse": set()}
DEFAULT_SCHEME = {"weighted_ce": "median"}  # the other losses weigh classes only when asked (scheme)


def _share(params: dict, key: str, default: float, low: float = 0.0, high: float | None = 1.0) -> float:
    """A number param in (low, high]: one line naming the key otherwise."""
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < low or (high is not None and v > high) or (
            high is not None and v == low):
        span = f"in ({low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ConfigError(f"loss.params.{key} must be a number {span}, got {v!r}")
    return float(v)


def build_loss(name: str, params: dict, ignore_index: int | None = None, train=None,
               weights: torch.Tensor | None = None) -> Loss:
    """A loss function of (logits, target) from the recipe's loss section.

    train: the training split, whose masks give the class weights of a weighted loss; weights: the weights a run
    stored in its checkpoint (loss_entries), used as they are, so an evaluation never recomputes them."""
    params = dict(params)
    lookup(LOSSES, name, "loss")
    for key in params:
        if key not in LOSSES[name]:
            raise ConfigError(f"unknown config key 'loss.params.{key}' for loss '{name}'",
                              did_you_mean(key, LOSSES[name] or {"(none)"}))
    if name == "dice":
        return lambda lo, t: dice_loss(lo, t, ignore_index=ignore_index, **params)
    if name == "cross_entropy":
        return lambda lo, t: cross_entropy(lo, t, ignore_index, **params)
    if name == "mse":
        if ignore_index is not None:  # colour targets have no ignored pixels: say so rather than drop it
            raise ConfigError(f"loss 'mse' compares values pixel by pixel and takes no ignore_index "
                              f"(got {ignore_index})",
                              "use a label loss (dice_ce, cross_entropy, ...) for masks with an ignore value")
        return lambda out, t: F.mse_loss(out.float(), t.float())
    if name == "lovasz":
        return lambda lo, t: lovasz_softmax(lo, t, ignore_index)
    if name == "dice_ce" and not (params.keys() & (WEIGHTS | TERMS)):  # today's dice_ce, unchanged
        w = params.pop("ce_weight", 1.0)
        return lambda lo, t: dice_loss(lo, t, ignore_index=ignore_index, **params) + w * cross_entropy(
            lo, t, ignore_index)
    scheme = DEFAULT_SCHEME.get(name, "none")
    if weights is None:
        weights = training_weights(train, params, scheme)
    else:  # stored (or stand-in) weights: the params are still checked
        check_weight_params(params, scheme)
    keep = _share(params, "keep" if name == "ohem_ce" else "ohem_keep", 0.25 if name == "ohem_ce" else 1.0)
    return CombinedLoss(weights, ignore_index, dice=1.0 if name == "dice_ce" else 0.0,
                        ce=_share(params, "ce_weight", 1.0, high=None), ohem_keep=keep,
                        lovasz=_share(params, "lovasz_weight", 0.0, high=None),
                        smooth=params.get("smooth", 1.0), include_background=params.get("include_background", True))


def needs_weights(name: str, params: dict) -> bool:
    """Whether a loss weighs classes by the training masks' frequencies (its weights are then stored in the run)."""
    return bool(LOSSES.get(name, set()) & WEIGHTS) and params.get("scheme", DEFAULT_SCHEME.get(name, "none")) != "none"


def loss_entries(loss_fn: Loss) -> dict:
    """What a checkpoint keeps of a loss: its class weights (computed once from the training masks), so that
    `cnnlab evaluate` scores with the very weights training used, without the training data."""
    weights = getattr(loss_fn, "weights", None)
    return {} if weights is None else {"class_weights": [float(w) for w in weights]}
