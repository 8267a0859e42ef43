"""How a data set writes its masks (grey levels, VOC palette, 0/255, indices): predictions are saved the same way."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.config import Recipe
from cnnlab.data.formats.endovis import read_mapping
from cnnlab.data.voc_colors import VOC_PALETTE


@dataclass(frozen=True)
class MaskEncoding:
    """How class indices become pixel values in written masks (the data set's own encoding)."""

    kind: str     # grey_levels | voc_palette | palette | binary | indices | rgb
    values: list  # pixel value written for class i ([r, g, b] for rgb; the palette index for palette)

    def image(self, mask: np.ndarray) -> Image.Image:
        """H x W class indices -> the PIL image to save as PNG."""
        if self.kind == "voc_palette":
            im = Image.fromarray(mask.astype(np.uint8), mode="P")
            im.putpalette(VOC_PALETTE)
            return im
        lut = np.asarray(self.values, dtype=np.int64)
        if self.kind == "rgb":  # colour-coded masks: each class its colour
            return Image.fromarray(lut[mask].astype(np.uint8), mode="RGB")
        if self.kind == "palette":  # the data set's palette indices (its colours are not kept: VOC's are shown)
            im = Image.fromarray(lut[mask].astype(np.uint8), mode="P")
            im.putpalette(VOC_PALETTE)
            return im
        if lut.max(initial=0) > 255:  # more than 256 classes: 16-bit PNG
            return Image.fromarray(lut[mask].astype(np.uint16))
        return Image.fromarray(lut[mask].astype(np.uint8), mode="L")

    def describe(self) -> dict:
        return {"kind": self.kind, "values": list(self.values)}


def resolve_encoding(recipe: Recipe, class_names: list[str], ck: dict) -> tuple[MaskEncoding, list[str]]:
    """The data set's mask encoding: stored in the checkpoint, else from the recipe's format (and its root)."""
    k = len(class_names)
    stored = ck.get("mask_encoding")
    if isinstance(stored, dict) and len(stored.get("values", [])) == k:
        values = [[int(c) for c in v] if isinstance(v, (list, tuple)) else int(v) for v in stored["values"]]
        return MaskEncoding(str(stored["kind"]), values), []
    notes: list[str] = []
    fmt = recipe.data.format
    if fmt == "endovis":
        root = Path(recipe.data.root).expanduser()
        if (root / "mapping.json").is_file():
            mapping, _ = read_mapping(root)
            if list(mapping) == list(class_names):
                return MaskEncoding("grey_levels", list(mapping.values())), notes
            notes.append(f"{root / 'mapping.json'} lists other classes than the run; masks use default values")
        else:
            notes.append(f"{root / 'mapping.json'} not found (the training data moved?); masks use default values")
    if fmt == "voc":
        return MaskEncoding("voc_palette", list(range(k))), notes
    if k == 2:
        return MaskEncoding("binary", [0, 255]), notes
    return MaskEncoding("indices", list(range(k))), notes
