"""How thin the thinnest class is: what picks the decoder on the pretrained encoder in `cnnlab new`.

The light FCN decoder upsamples from the encoder's stride-32 map; the U-Net decoder adds the encoder's stride
2/4/8/16 maps back. Measured (docs/results.md): on DRIVE's retinal vessels (the thinnest class's half-width 0.34% of
the long side) the U-Net decoder won on all 20 test images (vessel Dice 0.805 against 0.796 at native size), while
on the EndoVis course data (thinnest class 2.9%) the FCN decoder won by 0.15 strict mean Dice at equal epochs. A
class's half-width is its area over its boundary pixels (a strip of width w gives about w/2, a disc of radius r
about r/2), measured at the masks' own size and stated as a fraction of the image's long side, so it does not
depend on the training size chosen later.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnlab.data.formats import folders

THIN_FRACTION = 0.015   # half-width under 1.5% of the long side: thin structures (DRIVE 0.34%, ISBI membranes
#                         0.76%; EndoVis instruments 2.9%, their background 22%)
FULL_RESOLUTION_PX = 3.0  # half-width under 3 px at the images' own size: the U-Net decoder's fifth block, at
#                         full resolution (DRIVE's vessels, 2.0 px: +0.004 to +0.006 vessel Dice, 18-19 of 20 test
#                         images better; ISBI's membranes, 3.7 px: -0.004 and -0.000 on two seeds, for 1.2-1.4x
#                         the step time)
SAMPLED_MASKS = 16      # masks read (evenly spaced over the training pairs): enough for a stable ratio, quick


@dataclass(frozen=True)
class Thinnest:
    """The thinnest class present in the sampled masks and its half-width as a fraction of the long side."""

    name: str
    fraction: float
    half_width_px: float

    @property
    def thin(self) -> bool:
        return self.fraction < THIN_FRACTION

    @property
    def fine(self) -> bool:
        """Thin enough at the images' own size that the stride-2 grid blurs it (FULL_RESOLUTION_PX)."""
        return self.thin and self.half_width_px < FULL_RESOLUTION_PX

    def line(self) -> str:
        """For the recipe's comments."""
        return (f"thinnest class '{self.name}': half-width {self.half_width_px:.1f} px = {100 * self.fraction:.2f}% "
                f"of the long side ({'under' if self.thin else 'not under'} {100 * THIN_FRACTION:g}%)")


def boundary_pixels(region: np.ndarray) -> int:
    """Pixels of a boolean region with a 4-neighbour outside it (the image border counts as inside)."""
    inner = region.copy()
    inner[1:] &= region[:-1]
    inner[:-1] &= region[1:]
    inner[:, 1:] &= region[:, :-1]
    inner[:, :-1] &= region[:, 1:]
    return int(np.count_nonzero(region & ~inner))


def thinnest_class(mask_paths: list, enc: folders.Encoding, class_names: list[str],
                   ignore: int = 255) -> Thinnest | None:
    """Half-width (area / boundary pixels, summed over the sampled masks) of each class; the smallest, or None
    without masks. Ignored pixels (outside a field of view) belong to no class."""
    if not mask_paths:
        return None
    picks = np.unique(np.linspace(0, len(mask_paths) - 1, min(SAMPLED_MASKS, len(mask_paths))).round().astype(int))
    area: dict[int, int] = {}
    edge: dict[int, int] = {}
    sides = []
    for i in picks:
        mask, _ = folders.to_classes(mask_paths[i], enc)
        sides.append(max(mask.shape))
        for c in np.unique(mask):
            if c == ignore:
                continue
            region = mask == c
            area[int(c)] = area.get(int(c), 0) + int(np.count_nonzero(region))
            edge[int(c)] = edge.get(int(c), 0) + boundary_pixels(region)
    widths = {c: area[c] / max(edge[c], 1) for c in area}
    if not widths:
        return None
    c = min(widths, key=widths.get)
    long_side = float(np.median(sides))
    name = class_names[c] if c < len(class_names) else str(c)
    return Thinnest(name, widths[c] / long_side, widths[c])
