"""Sliding-window inference: overlapping tiles of the training size, blended with smooth weights.

A model trained on H x W crops sees images larger than that tile by tile. Tiles overlap by a fraction of their
side; each tile's class probabilities are weighted by a window that is high in the middle and small (never zero)
at the edges, so that the pixels a tile sees with little context (near its border, where the convolutions ran
on zero padding) count least. Images smaller than the tile are padded (with zeros of the normalised input, i.e.
the training mean) and the padding is cut off again.

Patch-trained runs (`data.patch`) are scored this way everywhere: validation during training, the end-of-run test,
`evaluate`, `predict` and the export's documented preprocessing all call `window_logits` with the run's `Window`
(the patch, train.window_overlap, Gaussian weights as nnU-Net's), so they agree pixel for pixel.

The tiles must show the model pixels of the size it was trained on: `cnnlab predict --window` first scales each
image as training scaled it (`Preprocess.training_scale`), tiles that, and resizes the probabilities back; tiling a
native image that training had shrunk gives near-empty masks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError

BLENDS = ("cosine", "gaussian", "constant")
_FLOOR = 1e-3  # smallest weight relative to the peak: every pixel of a tile counts a little (no 0/0)


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Tile offsets along one axis: stride window*(1-overlap), the last tile flush with the end."""
    if length <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    n = math.ceil((length - window) / stride) + 1
    return sorted({min(i * stride, length - window) for i in range(n)})


def _profile(n: int, blend: str) -> torch.Tensor:
    """1-D weights over n pixels, peak 1 in the middle."""
    pos = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # pixel centres in (0, 1)
    if blend == "cosine":       # Hann window sampled at pixel centres
        w = 0.5 - 0.5 * torch.cos(2 * math.pi * pos)
    elif blend == "gaussian":   # sigma = 1/8 of the side, as in nnU-Net's tile weighting
        w = torch.exp(-0.5 * ((pos - 0.5) / 0.125) ** 2)
    else:
        w = torch.ones(n, dtype=torch.float64)
    return w / w.max()


def window_weights(height: int, width: int, blend: str = "cosine") -> torch.Tensor:
    """height x width float32 blending weights (outer product of 1-D profiles), floored above zero."""
    if blend not in BLENDS:
        raise CnnlabError(f"unknown blending '{blend}'", f"valid: {', '.join(BLENDS)}")
    w = torch.outer(_profile(height, blend), _profile(width, blend))
    return w.clamp(min=_FLOOR).float()


def check_window(window: tuple[int, int], overlap: float) -> None:
    """Refuse windows and overlaps that cannot tile an image."""
    if len(window) != 2 or min(window) < 1:
        raise CnnlabError(f"window {window} must be two positive sides (H, W)", "e.g. --window 256x256")
    if not 0 <= overlap < 1:
        raise CnnlabError(f"overlap {overlap} must be in [0, 1)", "e.g. 0.25")


@torch.no_grad()
def sliding_window(predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                   window: tuple[int, int], overlap: float = 0.25, batch_size: int = 8,
                   blend: str = "cosine") -> torch.Tensor:
    """Blended K x H x W output for one C x H x W (normalised) image; predict maps N x C x h x w -> N x K x h x w."""
    check_window(window, overlap)
    _, h_img, w_img = image.shape
    wh, ww = window
    pad_h, pad_w = max(wh - h_img, 0), max(ww - w_img, 0)
    x = F.pad(image, [0, pad_w, 0, pad_h]) if pad_h or pad_w else image  # bottom/right: offsets stay valid
    H, W = x.shape[-2:]
    tiles = [(y, x0) for y in window_starts(H, wh, overlap) for x0 in window_starts(W, ww, overlap)]

    def run(batch: torch.Tensor) -> torch.Tensor:
        out = predict(batch).float().cpu()
        if out.ndim != 4 or out.shape[-2:] != (wh, ww):
            raise CnnlabError(f"sliding window needs a segmentation model giving N x K x {wh} x {ww}, "
                              f"got {tuple(out.shape)}", "predict without --window")
        return out

    if len(tiles) == 1:  # one tile covers the (padded) image: nothing to blend
        return run(x[None])[0, :, :h_img, :w_img]
    weights = window_weights(wh, ww, blend)
    acc: torch.Tensor | None = None
    norm = torch.zeros(H, W)
    for i in range(0, len(tiles), batch_size):
        chunk = tiles[i: i + batch_size]
        out = run(torch.stack([x[:, y: y + wh, x0: x0 + ww] for y, x0 in chunk]))
        if acc is None:
            acc = torch.zeros(out.shape[1], H, W)
        for (y, x0), tile in zip(chunk, out):
            acc[:, y: y + wh, x0: x0 + ww] += tile * weights
            norm[y: y + wh, x0: x0 + ww] += weights
    assert acc is not None
    return (acc / norm)[:, :h_img, :w_img]


@dataclass(frozen=True)
class Window:
    """How a patch-trained run sees a whole image: tiles of the patch size, their overlap, blend and batch."""

    size: tuple[int, int]
    overlap: float = 0.5
    blend: str = "gaussian"
    batch_size: int = 8

    @staticmethod
    def of_recipe(patch: list[int] | None, overlap: float, batch_size: int) -> "Window | None":
        """The window of a recipe's data.patch and train.window_overlap (None: the run sees whole images)."""
        if patch is None:
            return None
        return Window((int(patch[0]), int(patch[1])), float(overlap), "gaussian", int(batch_size))

    def describe(self) -> dict:
        return {"size": list(self.size), "overlap": self.overlap, "blend": self.blend}


def window_logits(predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, window: Window
                  ) -> torch.Tensor:
    """K x H x W blended output of one C x H x W normalised image through `predict` by the run's window."""
    return sliding_window(predict, image, window.size, window.overlap, window.batch_size, window.blend)
