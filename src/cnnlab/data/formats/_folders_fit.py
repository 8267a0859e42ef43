"""Images of any size and depth for the folders reader: 8-bit decoding, the default size, resize/pad/crop."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import DataError
from .common import read_image, resize_images, resize_masks

IGNORE = 255            # mask value of padding: excluded from loss and metrics (as outside the FOV)
MAX_DEFAULT_SIDE = 1024


def header(path: Path) -> tuple[int, int, str]:
    """(height, width, mode) without decoding pixels; a DataError naming an unreadable file."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0], im.mode
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({str(e)[:60]})", "replace or remove the file") from None


def default_size(sizes: list[tuple[int, int]]) -> tuple[list[int], str]:
    """Median size rounded to a multiple of 16 (U-Net friendly), long side at most 1024; and the note saying so."""
    mh, mw = (float(np.median([s[i] for s in sizes])) for i in (0, 1))
    scale = min(1.0, MAX_DEFAULT_SIDE / max(mh, mw))
    h, w = (max(16, int(round(x * scale / 16)) * 16) for x in (mh, mw))
    cap = f", scaled so the long side is at most {MAX_DEFAULT_SIDE}" if scale < 1 else ""
    return [h, w], (f"no data.size given: using {h}x{w} (HxW), the median image size {mh:g}x{mw:g} rounded to a "
                    f"multiple of 16{cap}")


def read_input(path: Path, channels: int) -> np.ndarray:
    """An image as H x W (x 3) uint8; 16-bit and float images are scaled by their own maximum."""
    mode = header(path)[2]
    if mode.startswith("I") or mode == "F":
        try:
            with Image.open(path) as im:
                arr = np.asarray(im, dtype=np.float64)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable image ({str(e)[:60]})", "replace or remove the file") from None
        arr = np.round(255 * arr / max(arr.max(initial=0), 1e-12)).clip(0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2) if channels == 3 else arr
    return read_image(path, "RGB" if channels == 3 else "L")


def fit_one(img: torch.Tensor, mask: torch.Tensor, size: list[int], fit: str, keep_aspect: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """C x H x W image and H x W mask to exactly size by the policy (images bilinear, masks nearest, pad 0/255)."""
    th, tw = size
    h, w = img.shape[-2:]
    if fit == "resize" and not keep_aspect:
        return resize_images(img[None], size)[0], resize_masks(mask[None], size)[0]
    if fit == "crop":
        s = max(th / h, tw / w) if (h < th or w < tw) else 1.0  # cover the size, then centre-crop
    else:
        s = min(th / h, tw / w) if fit == "resize" else min(th / h, tw / w, 1.0)  # fit inside, then pad
    if s != 1.0:
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        img, mask = resize_images(img[None], [nh, nw])[0], resize_masks(mask[None], [nh, nw])[0]
        h, w = nh, nw
    if fit == "crop":
        top, left = (h - th) // 2, (w - tw) // 2
        return img[:, top:top + th, left:left + tw].contiguous(), mask[top:top + th, left:left + tw].contiguous()
    top, left = (th - h) // 2, (tw - w) // 2
    pad = (left, tw - w - left, top, th - h - top)
    return F.pad(img, pad, value=0), F.pad(mask, pad, value=IGNORE)


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
