"""Per-image Dice and boundary accuracy (boundary-band Dice, boundary F1) for binary masks, on torch tensors.

Masks are N x H x W (or H x W) tensors, foreground = non-zero. An optional `valid` mask of the same shape marks
the pixels that count (e.g. DRIVE's field of view); pixels outside it are ignored everywhere.
Morphology is square (Chebyshev distance) and done with max pooling: dilation by r = max-pool with a
(2r + 1) x (2r + 1) window; erosion = complement of the dilated complement. Beyond the image border nothing is
assumed: the border is not a gland boundary.

Empty cases (stated rules): Dice is 1.0 where prediction and truth are both empty (nothing to find, nothing
found); boundary F1 is 1.0 where neither has a boundary pixel, and precision (recall) is 1.0 where the prediction
(truth) has no boundary pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.metrics.argmax import class_argmax


def _as_batch(mask: torch.Tensor) -> torch.Tensor:
    """N x H x W bool from N x H x W or H x W masks of any dtype (non-zero = foreground)."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"expected an N x H x W or H x W mask, got shape {tuple(mask.shape)}")
    return mask != 0


def _pair(pred: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor | None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bool batches of prediction, truth and valid pixels, with a shape check."""
    p, t = _as_batch(pred), _as_batch(truth)
    v = torch.ones_like(t) if valid is None else _as_batch(valid)
    if p.shape != t.shape or v.shape != t.shape:
        raise ValueError(f"shape mismatch: pred {tuple(p.shape)}, truth {tuple(t.shape)}, valid {tuple(v.shape)}")
    return p, t, v


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of an N x H x W bool mask by a (2r+1)-square (max pooling, stride 1)."""
    if radius <= 0:
        return mask.clone()
    x = mask[:, None].float()
    return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion by a (2r+1)-square; max pooling pads with -inf, so the image border does not erode."""
    return ~dilate(~mask, radius)


def boundary_pixels(mask: torch.Tensor) -> torch.Tensor:
    """Inner boundary: foreground pixels with a background pixel among their 8 neighbours."""
    return mask & ~erode(mask, 1)


def boundary_band(truth: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels within `width` (Chebyshev) of the truth's boundary: dilation minus erosion of the truth."""
    t = _as_batch(truth)
    return dilate(t, width) & ~erode(t, width)


def dice_per_image(pred: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Sorensen-Dice 2|P & T| / (|P| + |T|) per image (float64, N); 1.0 where both are empty."""
    p, t, v = _pair(pred, truth, valid)
    return _dice(p & v, t & v)


def _dice(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    inter = (p & t).flatten(1).sum(1).double()
    total = p.flatten(1).sum(1).double() + t.flatten(1).sum(1).double()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def boundary_dice(pred: torch.Tensor, truth: torch.Tensor, width: int = 3,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """Dice restricted to the band of `width` pixels around the truth's boundary (N); 1.0 where the band is empty
    or neither mask has a pixel in it."""
    p, t, v = _pair(pred, truth, valid)
    band = boundary_band(t, width) & v
    return _dice(p & band, t & band)


def boundary_f1(pred: torch.Tensor, truth: torch.Tensor, tolerance: int = 2,
                valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Boundary precision, recall and F1 per image: a boundary pixel is matched if the other mask's boundary is
    within `tolerance` pixels (Chebyshev)."""
    p, t, v = _pair(pred, truth, valid)
    bp, bt = boundary_pixels(p) & v, boundary_pixels(t) & v
    n_p, n_t = bp.flatten(1).sum(1).double(), bt.flatten(1).sum(1).double()
    hit_p = (bp & dilate(bt, tolerance)).flatten(1).sum(1).double()
    hit_t = (bt & dilate(bp, tolerance)).flatten(1).sum(1).double()
    precision = torch.where(n_p > 0, hit_p / n_p.clamp(min=1), torch.ones_like(n_p))
    recall = torch.where(n_t > 0, hit_t / n_t.clamp(min=1), torch.ones_like(n_t))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(denom))
    return {"precision": precision, "recall": recall, "f1": f1}


def foreground(logits: torch.Tensor, foreground_class: int = 1) -> torch.Tensor:
    """N x C x H x W logits -> N x H x W bool mask of pixels whose argmax is the foreground class."""
    return class_argmax(logits, 1) == foreground_class


def binary_summary(pred: torch.Tensor, truth: torch.Tensor, ignore_index: int | None = None,
                   band_width: int = 3, tolerance: int = 2) -> dict[str, float]:
    """Per-image means of Dice, boundary-band Dice and boundary F1 for 2-class label maps (ignored pixels excluded)."""
    valid = None if ignore_index is None else truth != ignore_index
    t = (truth == 1)
    p = (pred == 1)
    return {"per_image_dice_mean": float(dice_per_image(p, t, valid).mean()),
            "boundary_dice_mean": float(boundary_dice(p, t, band_width, valid).mean()),
            "boundary_f1_mean": float(boundary_f1(p, t, tolerance, valid)["f1"].mean()),
            "boundary_band_width": band_width, "boundary_tolerance": tolerance}


# the two conventions of evaluate's foreground scores, named in evaluate_*.json (foreground_scores)
FOREGROUND_PER_IMAGE = (
    "per image: each image's foreground Dice 2|P&T|/(|P|+|T|) and IoU |P&T|/|P or T| (argmax masks at the "
    "{at}), averaged over the images; an image whose ground truth and prediction are both empty "
    "scores 1 and counts (as in the per-image evaluation of polyp papers, e.g. PraNet and Polyp-PVT, whose "
    "smoothed Dice gives such an image 1); an image with empty ground truth but predicted foreground scores "
    "0")
FOREGROUND_GLOBAL = "global (strict): the pixel counts of all images pooled, then one Dice and one IoU for the split"


def foreground_scores(pred: torch.Tensor, masks: torch.Tensor, ignore_index: int | None, per_class: dict,
                      name: str, at: str = "trained size") -> dict:
    """The foreground class's Dice and IoU, global (the strict per-class scores) and as means over images.

    Per image the Dice is the training summary's own (dice_per_image, the one behind summary.json's
    per_image_dice_mean); its IoU follows from it exactly, J = D / (2 - D), both-empty included.
    at: the size the masks were compared at ("trained size" or "native size"), named in the conventions."""
    valid = None if ignore_index is None else masks != ignore_index
    truth = masks == 1
    dice = dice_per_image(pred == 1, truth, valid)
    iou = dice / (2 - dice)
    truth_n = (truth if valid is None else truth & valid).flatten(1).sum(1)
    pred_n = ((pred == 1) if valid is None else (pred == 1) & valid).flatten(1).sum(1)
    return {"class": name, "dice_global": per_class[name]["dice"], "dice_per_image_mean": float(dice.mean()),
            "iou_global": per_class[name]["iou"], "iou_per_image_mean": float(iou.mean()),
            "images": len(dice), "images_empty_truth": int((truth_n == 0).sum()),
            "images_empty_truth_and_prediction": int(((truth_n == 0) & (pred_n == 0)).sum()),
            "conventions": {"global": FOREGROUND_GLOBAL, "per_image": FOREGROUND_PER_IMAGE.format(at=at)}}
