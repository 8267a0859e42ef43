"""Class-weighted cross-entropy for rare classes: weights from training-set pixel frequencies, loss written here.

Weighting schemes (classes absent from the training split get `absent_weight`, 1.0 by default: they have no
training pixels to weight, and a neutral value keeps them counted normally in validation losses):
- inverse frequency ('balanced'): w_c = N / (K * n_c), with n_c the counted pixels of class c, N their sum
  and K the number of classes present; the pixel-weighted mean of the weights is then 1.
- median frequency (Eigen & Fergus 2015): f_c = n_c / (pixels of the images that contain c), and
  w_c = median_c(f_c) / f_c, the median taken over the classes present (mean of the middle two when even).
- ENet's ('enet_log', Paszke et al. 2016): w_c = 1 / ln(1.02 + p_c), p_c = n_c / N the class's share of all
  counted pixels; bounded between 1/ln(2.02) = 1.42 and 1/ln(1.02) = 50.5, so a very rare class is not weighted
  thousands of times (median frequency's weak point) while large classes still weigh less.
Void/ignored pixels (the split's ignore_index) are never counted; the weights are computed once, from the training
masks, and stored in the run's checkpoint (losses.core.loss_entries).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.types import SegData
from cnnlab.errors import ConfigError, DataError, did_you_mean


def per_image_counts(masks: torch.Tensor, num_classes: int, ignore_index: int | None = None,
                     chunk: int = 64) -> torch.Tensor:
    """N x C int64 pixel counts of each class in each mask, ignore_index excluded; in chunks to bound memory."""
    rows = []
    for start in range(0, masks.shape[0], chunk):
        m = masks[start:start + chunk].reshape(min(chunk, masks.shape[0] - start), -1).long()
        keep = m != ignore_index if ignore_index is not None else torch.ones_like(m, dtype=torch.bool)
        bad = keep & ((m < 0) | (m >= num_classes))
        if bad.any():
            raise DataError(f"mask values {m[bad].unique()[:8].tolist()} outside 0..{num_classes - 1}"
                            + (f" and ignore_index {ignore_index}" if ignore_index is not None else ""),
                            "check data.options (boundary) and the class list")
        b = m.shape[0]
        flat = (m + num_classes * torch.arange(b).unsqueeze(1))[keep]
        rows.append(torch.bincount(flat, minlength=b * num_classes).view(b, num_classes))
    if not rows:
        return torch.zeros(0, num_classes, dtype=torch.long)
    return torch.cat(rows)


def class_counts(data: SegData) -> torch.Tensor:
    """Per-image class pixel counts (N x C) of a SegData split, its ignore_index excluded."""
    return per_image_counts(data.masks, len(data.class_names), data.ignore_index)


def _fill_absent(weights: torch.Tensor, present: torch.Tensor, absent_weight: float) -> torch.Tensor:
    return torch.where(present, weights, torch.full_like(weights, absent_weight)).float()


def inverse_frequency(counts: torch.Tensor, absent_weight: float = 1.0) -> torch.Tensor:
    """w_c = N / (K n_c) from class pixel counts (C, or N x C per image)."""
    totals = (counts.sum(0) if counts.dim() == 2 else counts).double()
    present = totals > 0
    if not present.any():
        raise DataError("no counted pixels to compute class weights from")
    weights = totals.sum() / (present.sum() * totals.clamp_min(1))
    return _fill_absent(weights, present, absent_weight)


def median_frequency(counts: torch.Tensor, absent_weight: float = 1.0) -> torch.Tensor:
    """w_c = median(f) / f_c, f_c = n_c / pixels of the images containing c; counts is N x C per image."""
    if counts.dim() != 2:
        raise ValueError("median_frequency needs per-image counts (N x C)")
    counts = counts.double()
    totals = counts.sum(0)
    present = totals > 0
    if not present.any():
        raise DataError("no counted pixels to compute class weights from")
    image_pixels = counts.sum(1, keepdim=True)
    pixels_where_present = (image_pixels * (counts > 0)).sum(0)
    freq = totals / pixels_where_present.clamp_min(1)
    median = torch.quantile(freq[present], 0.5)  # linear interpolation: the mean of the middle two when even
    weights = median / freq.clamp_min(torch.finfo(torch.float64).tiny)
    return _fill_absent(weights, present, absent_weight)


def enet_log(counts: torch.Tensor, absent_weight: float = 1.0, c: float = 1.02) -> torch.Tensor:
    """w_c = 1 / ln(c + p_c), p_c the class's share of all counted pixels (ENet); counts: C, or N x C per image."""
    totals = (counts.sum(0) if counts.dim() == 2 else counts).double()
    present = totals > 0
    if not present.any():
        raise DataError("no counted pixels to compute class weights from")
    weights = 1.0 / torch.log(c + totals / totals.sum())
    return _fill_absent(weights, present, absent_weight)


SCHEMES = {"inverse": inverse_frequency, "median": median_frequency, "enet_log": enet_log}


def weights_for(data: SegData, scheme: str = "median", max_weight: float | None = None,
                absent_weight: float = 1.0) -> torch.Tensor | None:
    """Class weights (C, float32) of a training split; scheme 'none' gives None; max_weight caps rare classes."""
    if scheme == "none":
        return None
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown loss.params.scheme '{scheme}'", did_you_mean(str(scheme), [*SCHEMES, "none"]))
    weights = SCHEMES[scheme](class_counts(data), absent_weight)
    return weights.clamp(max=max_weight) if max_weight is not None else weights


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                           ignore_index: int | None = None) -> torch.Tensor:
    """Mean of w[t] * -log softmax(logits)[t] over counted pixels, divided by the sum of their w[t].

    This is F.cross_entropy(logits, target, weight=weights, ignore_index=ignore_index) written out, with one
    deliberate difference: a batch with no counted pixel gives 0 (with a zero gradient) instead of NaN.
    logits: N x C (x H x W ...), target: N (x H x W ...) class indices; computed in float32 under autocast.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    target = target.long()
    counted = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    safe_target = torch.where(counted, target, torch.zeros_like(target))  # ignored pixels gather class 0, weight 0
    nll = -log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    pixel_weights = weights.to(log_probs)[safe_target] if weights is not None else torch.ones_like(nll)
    pixel_weights = pixel_weights * counted
    total = pixel_weights.sum()
    return (pixel_weights * nll).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


class WeightedCrossEntropy(nn.Module):
    """weighted_cross_entropy as a module: the weights move with .to(device) as a buffer."""

    def __init__(self, weights: torch.Tensor | None = None, ignore_index: int | None = None) -> None:
        super().__init__()
        self.register_buffer("weights", None if weights is None else weights.float().clone())
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return weighted_cross_entropy(logits, target, self.weights, self.ignore_index)


LOSS_PARAMS = {"scheme": "median", "max_weight": None, "absent_weight": 1.0}


def check_weight_params(params: dict, scheme: str = "median") -> dict:
    """The class-weight params of a loss (scheme, default `scheme`; max_weight; absent_weight) with defaults filled
    in, each checked (one line each): also where stored weights are used and nothing is computed."""
    p = {**LOSS_PARAMS, "scheme": scheme, **{k: v for k, v in params.items() if k in LOSS_PARAMS}}
    for key in ("max_weight", "absent_weight"):
        value = p[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ConfigError(f"loss.params.{key} must be a number >= 0, got {value!r}")
    if p["scheme"] not in SCHEMES and p["scheme"] != "none":
        raise ConfigError(f"unknown loss.params.scheme '{p['scheme']}'",
                          did_you_mean(str(p["scheme"]), [*SCHEMES, "none"]))
    return p


def training_weights(train: SegData | None, params: dict, scheme: str = "median") -> torch.Tensor | None:
    """The class weights a loss's params ask for (check_weight_params), from the training split's masks; None for
    scheme 'none'."""
    p = check_weight_params(params, scheme)
    if p["scheme"] != "none" and train is None:
        raise ConfigError("class weights need the training split (its masks) to be computed from")
    return weights_for(train, p["scheme"], p["max_weight"], float(p["absent_weight"]))


def build_weighted_ce(train: SegData | None, weights: torch.Tensor | None = None, ignore_index: int | None = None,
                      **params) -> WeightedCrossEntropy:
    """The 'weighted_ce' loss for a training split; params: scheme (median|inverse|none), max_weight, absent_weight.
    weights: stored weights (a run's checkpoint) used as they are instead of counting train's masks."""
    for key in params:
        if key not in LOSS_PARAMS:
            raise ConfigError(f"unknown loss.params key '{key}' for weighted_ce", did_you_mean(key, LOSS_PARAMS))
    if weights is None:
        weights = training_weights(train, params)
    else:
        weights = torch.as_tensor(weights, dtype=torch.float32)
    return WeightedCrossEntropy(weights, train.ignore_index if train is not None else ignore_index)
