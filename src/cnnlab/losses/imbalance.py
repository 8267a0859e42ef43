"""Losses for class imbalance beside Dice/CE: Lovász-softmax and online hard example mining (OHEM) of pixels
(losses.core.CombinedLoss sums them with Dice and class-weighted cross-entropy).

Why these: with a few large classes (road, sky) and small ones at under 1% of the pixels (poles, signs, people),
plain Dice+CE lets the small classes vanish; the field's answers, to be compared by measurement (docs/results.md):
- class-weighted CE (class_weights.py: median frequency, inverse, ENet's 1/ln(1.02 + p));
- Lovász-softmax (Berman, Rannen Triki and Blaschko, CVPR 2018): a convex surrogate of each class's Jaccard loss,
  so every class present counts as much as any other in the mean, however few its pixels;
- OHEM (as mmsegmentation's OHEMPixelSampler): the CE of only the hardest share of pixels, so that the millions of
  easy road pixels do not drown the few hard ones.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss, for errors sorted in decreasing order (dim 0).

    gt_sorted: P (or P x C) 0/1 ground truth in the errors' order; Berman et al.'s Algorithm 1, column-wise."""
    gts = gt_sorted.sum(0)
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.shape[0] > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None,
                   classes: str = "present") -> torch.Tensor:
    """Lovász-softmax over the whole batch (pixels of all images pooled), mean over classes.

    classes: 'present' averages the classes with a pixel in the batch's target (Berman's default), 'all' every
    class. Computed in float32; a batch without a counted pixel gives 0 with a zero gradient."""
    c = logits.shape[1]
    probs = logits.float().softmax(1).movedim(1, -1).reshape(-1, c)  # P x C
    t = target.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        probs, t = probs[keep], t[keep]
    if t.numel() == 0:
        return probs.sum() * 0.0
    fg = F.one_hot(t, c).to(probs.dtype)
    errors = (fg - probs).abs()
    errors_sorted, perm = errors.sort(0, descending=True)
    grad = lovasz_grad(fg.gather(0, perm))
    per_class = (errors_sorted * grad).sum(0)
    chosen = fg.sum(0) > 0 if classes == "present" else torch.ones(c, dtype=torch.bool, device=probs.device)
    return per_class[chosen].mean()


def pixel_nll(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel -log p(true class) (float32), the counted mask, and targets safe to index with (0 where ignored)."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    t = target.long()
    counted = t != ignore_index if ignore_index is not None else torch.ones_like(t, dtype=torch.bool)
    safe = torch.where(counted, t, torch.zeros_like(t))
    return -log_probs.gather(1, safe.unsqueeze(1)).squeeze(1), counted, safe


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, keep: float, weights: torch.Tensor | None = None,
                       ignore_index: int | None = None) -> torch.Tensor:
    """Cross-entropy of the hardest `keep` share of the counted pixels (those with the largest -log p of their
    class; at least one), weighted by class as weighted_cross_entropy is: sum(w nll) / sum(w) over kept pixels."""
    nll, counted, safe = pixel_nll(logits, target, ignore_index)
    nll_c = nll[counted]
    if nll_c.numel() == 0:
        return nll.sum() * 0.0
    k = max(1, math.ceil(keep * nll_c.numel()))
    hard, where = nll_c.topk(k) if k < nll_c.numel() else (nll_c, None)
    w = weights.to(nll)[safe[counted]] if weights is not None else torch.ones_like(nll_c)
    w = w if where is None else w[where]
    return (w * hard).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
