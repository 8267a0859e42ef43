"""Images of any size and depth for the folders reader: the default size, the fit policies, their notes.

Decoding (`header`, `read_input`: 16-bit scaling, the decompression-bomb check) and the fit policies themselves
(`preprocess.Preprocess`) are shared with the other readers, predict and export; this module keeps the folders
reader's names for them.
"""
from __future__ import annotations

import numpy as np
import torch

from cnnlab.data.formats.common import header, read_input
from cnnlab.data.formats.preprocess import MASK_PAD, Preprocess

__all__ = ["IGNORE", "MAX_DEFAULT_SIDE", "default_size", "fit_note", "fit_one", "header", "read_input"]

IGNORE = MASK_PAD       # mask value of padding: excluded from loss and metrics (as outside the FOV)
MAX_DEFAULT_SIDE = 1024


def default_size(sizes: list[tuple[int, int]]) -> tuple[list[int], str]:
    """Median size rounded to a multiple of 16 (U-Net friendly), long side at most 1024; and the note saying so."""
    mh, mw = (float(np.median([s[i] for s in sizes])) for i in (0, 1))
    scale = min(1.0, MAX_DEFAULT_SIDE / max(mh, mw))
    h, w = (max(16, int(round(x * scale / 16)) * 16) for x in (mh, mw))
    cap = f", scaled so the long side is at most {MAX_DEFAULT_SIDE}" if scale < 1 else ""
    return [h, w], (f"no data.size given: using {h}x{w} (HxW), the median image size {mh:g}x{mw:g} rounded to a "
                    f"multiple of 16{cap}")


def fit_one(img: torch.Tensor, mask: torch.Tensor, size: list[int], fit: str, keep_aspect: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """C x H x W image and H x W mask to exactly size by the policy (images bilinear, masks nearest, pad 0/255)."""
    x, m, _ = Preprocess((int(size[0]), int(size[1])), fit, keep_aspect).apply(img, mask)
    return x, m


def fit_note(size: list[int], fit: str, keep_aspect: bool) -> str:
    """The size policy in words."""
    where = f"{size[0]}x{size[1]} (HxW)"
    if fit == "resize" and not keep_aspect:
        return f"resized to {where}, aspect ratio not kept (masks nearest)"
    if fit == "resize":
        return f"scaled to fit {where} keeping the aspect ratio, then padded (padding is ignored: mask 255)"
    if fit == "pad":
        return (f"padded to {where} at native resolution (larger images first scaled down to fit); padding is "
                "ignored (mask 255)")
    return f"centre-cropped to {where} at native resolution (smaller images first scaled up to cover)"
