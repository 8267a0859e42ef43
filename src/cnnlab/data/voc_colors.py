"""PASCAL VOC class names and colour map: palette PNGs on disk and overlay figures share them."""
from __future__ import annotations

import numpy as np
import torch

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_BOUNDARY = 255  # 'void': object outlines and difficult regions in SegmentationClass PNGs


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC devkit colour map (n x 3 uint8): bits of the class index spread over R, G, B from the top bit."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):  # bit j of the index lands in bit (7 - j // 3) of a channel
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        cmap[index] = (r, g, b)
    return cmap


VOC_COLORMAP = voc_colormap()
VOC_PALETTE: list[int] = VOC_COLORMAP.reshape(-1).tolist()  # flat 768 values, for PIL's putpalette


def colorize(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """H x W class indices (255 = boundary) -> H x W x 3 uint8 picture in the VOC colours."""
    idx = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return VOC_COLORMAP[idx.astype(np.int64) & 255]


def class_of_color(rgb: np.ndarray, num_classes: int = 21) -> np.ndarray:
    """H x W x 3 VOC colours -> H x W indices (-1 where a colour is not a VOC class or the boundary)."""
    keys = rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2]
    valid = list(range(num_classes)) + [VOC_BOUNDARY]
    table = {int(VOC_COLORMAP[i, 0]) << 16 | int(VOC_COLORMAP[i, 1]) << 8 | int(VOC_COLORMAP[i, 2]): i for i in valid}
    out = np.full(keys.shape, -1, dtype=np.int64)
    for key, index in table.items():
        out[keys == key] = index
    return out
