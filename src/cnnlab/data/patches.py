"""Random patches of a fixed size cut from whole images kept at their own size (`data.patch`).

Why: shrinking every image to one small size (`data.size`) makes thin and small structures vanish (DRIVE's
vessels, street poles); nnU-Net instead trains on random patches cut at the data's own resolution and predicts
whole images with overlapping sliding windows. This module is the one seeded sampler of where patches lie:

- a patch never leaves its image: its corner is drawn in [0, side - patch] of the image's own size (`sizes`, for
  images padded to a common tensor), and an image smaller than the patch is padded (image 0, mask `fill`);
- `foreground` of the patches (each patch a draw from the run's generator) are centred on a pixel of a class drawn
  uniformly among the non-background classes present in the image (class 0 is background; the ignore value is
  no class): rare classes are seen as often as common ones (class-aware sampling, Zhu et al.; nnU-Net forces a
  third of each batch to hold foreground). An image without foreground gives a uniform patch.

Everything is drawn from the generator passed in, so an epoch (and a resume) cuts the same patches again.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PatchPlan:
    """Where each patch of a batch lies: sample index, top and left corner in the sample's own image."""

    idx: torch.Tensor
    tops: torch.Tensor
    lefts: torch.Tensor
    centred: torch.Tensor  # True where the patch was centred on a foreground pixel


def own_sizes(masks: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
    """N x 2 (height, width) of each image: its recorded size, else the tensor's (every image fills it)."""
    if sizes is not None:
        return sizes.long()
    return torch.tensor(list(masks.shape[-2:]), dtype=torch.long).expand(masks.shape[0], 2)


def _uniform(upper: int, g: torch.Generator) -> int:
    """An integer in [0, upper] (0 when upper <= 0: the image is smaller than the patch)."""
    return int(torch.randint(0, upper + 1, (1,), generator=g)) if upper > 0 else 0


def _centre_on_class(mask: torch.Tensor, ignore: int | None, g: torch.Generator) -> tuple[int, int] | None:
    """A pixel (row, col) of a class drawn uniformly among the non-background classes in mask; None if none."""
    present = torch.unique(mask)
    present = present[(present != 0) & ((present != ignore) if ignore is not None else True)]
    if present.numel() == 0:
        return None
    c = present[int(torch.randint(0, present.numel(), (1,), generator=g))]
    where = (mask == c).nonzero()
    row, col = where[int(torch.randint(0, where.shape[0], (1,), generator=g))].tolist()
    return row, col


def plan_patches(masks: torch.Tensor, sizes: torch.Tensor | None, idx: torch.Tensor, patch: tuple[int, int],
                 foreground: float, g: torch.Generator, ignore: int | None = None) -> PatchPlan:
    """One patch per sample in idx (see the module docstring); masks N x H x W, sizes N x 2 or None."""
    ph, pw = patch
    hw = own_sizes(masks, sizes)
    coins = torch.rand(len(idx), generator=g) < foreground
    tops, lefts, centred = [], [], []
    for i, coin in zip(idx.tolist(), coins.tolist()):
        h, w = hw[i].tolist()
        pixel = _centre_on_class(masks[i, :h, :w], ignore, g) if coin else None
        if pixel is None:
            top, left = _uniform(h - ph, g), _uniform(w - pw, g)
        else:  # centred on the pixel, then moved back inside the image
            top = min(max(pixel[0] - ph // 2, 0), max(h - ph, 0))
            left = min(max(pixel[1] - pw // 2, 0), max(w - pw, 0))
        tops.append(top)
        lefts.append(left)
        centred.append(pixel is not None)
    return PatchPlan(idx, torch.tensor(tops, dtype=torch.long), torch.tensor(lefts, dtype=torch.long),
                     torch.tensor(centred, dtype=torch.bool))


def cut_patches(images: torch.Tensor, masks: torch.Tensor, sizes: torch.Tensor | None, plan: PatchPlan,
                patch: tuple[int, int], fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """B x C x ph x pw uint8 images and B x ph x pw masks at the planned places; parts of a patch beyond a small
    image are 0 in the image and `fill` in the mask."""
    ph, pw = patch
    hw = own_sizes(masks, sizes)
    out_x = torch.zeros(len(plan.idx), images.shape[1], ph, pw, dtype=images.dtype)
    out_m = torch.full((len(plan.idx), ph, pw), fill, dtype=masks.dtype)
    for k, (i, top, left) in enumerate(zip(plan.idx.tolist(), plan.tops.tolist(), plan.lefts.tolist())):
        h, w = hw[i].tolist()
        dh, dw = min(ph, h - top), min(pw, w - left)
        out_x[k, :, :dh, :dw] = images[i, :, top: top + dh, left: left + dw]
        out_m[k, :dh, :dw] = masks[i, top: top + dh, left: left + dw]
    return out_x, out_m
