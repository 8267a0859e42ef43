"""A legend strip under an overlay image (`cnnlab predict`'s *_overlay.png): which colour is which class.

Without it an overlay of a multi-class prediction is a puzzle of tints: the user had to look the palette up. The
strip lists the classes present in that prediction, each as a swatch in its overlay colour and its name; class 0,
which overlays leave untinted, is named as such. Drawn with Pillow's built-in font (no font files, no matplotlib:
predict writes one overlay per image and must stay quick).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnlab.figures.palette import class_colors

PAD = 4
SWATCH = 10
LINE = 14


def _entries(class_names: list[str], present: list[int]) -> list[tuple[tuple[int, int, int] | None, str]]:
    cols = class_colors(len(class_names))
    out = []
    for c in present:
        if c == 0:
            out.append((None, f"{class_names[0]} (untinted)"))
        elif c < len(class_names):
            out.append((tuple(int(v) for v in cols[c]), class_names[c]))
    return out


def with_legend(rgb: np.ndarray, class_names: list[str], present: list[int]) -> np.ndarray:
    """H x W x 3 uint8 overlay -> the same with a white strip below naming the present classes in their colours
    (rows wrap at the image's width; an image narrower than its longest name is padded white on the right, so no
    name is cut)."""
    entries = _entries(class_names, present)
    if not entries:
        return rgb
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max(SWATCH + 3 + int(probe.textlength(text, font=font)) + 2 * PAD for _, text in entries)
    if widest > rgb.shape[1]:
        rgb = np.pad(rgb, ((0, 0), (0, widest - rgb.shape[1]), (0, 0)), constant_values=255)
    w = rgb.shape[1]
    rows, x = [[]], PAD
    for col, text in entries:
        width = SWATCH + 3 + int(probe.textlength(text, font=font)) + 2 * PAD
        if rows[-1] and x + width > w:
            rows.append([])
            x = PAD
        rows[-1].append((x, col, text))
        x += width
    strip = Image.new("RGB", (w, len(rows) * LINE + PAD), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for r, row in enumerate(rows):
        y = PAD // 2 + r * LINE
        for x0, col, text in row:
            box = (x0, y + 1, x0 + SWATCH, y + 1 + SWATCH)
            draw.rectangle(box, fill=col if col is not None else (255, 255, 255), outline=(0, 0, 0))
            draw.text((x0 + SWATCH + 3, y), text, fill=(0, 0, 0), font=font)
    return np.concatenate([rgb, np.asarray(strip)], axis=0)
