"""EndoVis course colorization layout: colorization/<split>/<i>/<i>_input.jpg (RGB) + <i>_gray.jpg."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.data.formats.common import note_decoded, read_image, resize_images
from cnnlab.data.formats.endovis import sample_dirs
from cnnlab.data.parallel import chw, concat, ordered_map
from cnnlab.data.types import ColorData
from cnnlab.errors import DataError

SPLITS = ("train_cor", "validation_cor", "test_cor")


def list_splits(root: Path) -> list[str]:
    base = Path(root) / "colorization"
    return [s for s in SPLITS if (base / s).is_dir()]


def _to_lab(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 -> (L* scaled to 0..255 uint8, a*b* + 128 uint8) via scikit-image."""
    from skimage.color import rgb2lab

    lab = rgb2lab(rgb)
    light = np.clip(lab[..., 0] * 255 / 100, 0, 255).round().astype(np.uint8)
    ab = np.clip(lab[..., 1:] + 128, 0, 255).round().astype(np.uint8)
    return light, ab


def _read_sample(d: Path, color_space: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """One sample folder: grey input (H x W), colour target (K x H x W), and whether the grey one was computed
    because its file is missing; runs in a decode thread."""
    rgb = read_image(d / f"{d.name}_input.jpg", "RGB")
    gray_p = d / f"{d.name}_gray.jpg"
    made = False
    if color_space == "lab":
        grey, target = _to_lab(rgb)
    else:
        if gray_p.is_file():
            grey = read_image(gray_p, "L")
        else:
            grey, made = np.asarray(torch.from_numpy(rgb).float() @ torch.tensor([0.299, 0.587, 0.114])).round(
            ).clip(0, 255).astype(np.uint8), True
        target = rgb
    if grey.shape[:2] != rgb.shape[:2]:
        raise DataError(f"{gray_p}: size differs from its colour image")
    note_decoded()
    return np.array(grey, copy=True), chw(target), made  # PIL arrays are read-only


def load(root: Path, split: str, size: list[int] | None = None, color_space: str = "rgb") -> ColorData:
    """Grey inputs and colour targets of one split; a missing grey image is made from the colour one (noted)."""
    if color_space not in ("rgb", "lab"):
        raise DataError(f"data.options.color_space must be 'rgb' or 'lab', got {color_space!r}")
    split_dir = Path(root) / "colorization" / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: colorization split not found",
                        f"expected ROOT/colorization/{{{','.join(SPLITS[:2])}}}/<i>/<i>_input.jpg")
    dirs, junk = sample_dirs(split_dir)
    notes = [f"{split}: skipped {junk} non-sample entries"] if junk else []
    greys, targets, made = [], [], 0
    for grey, target, computed in ordered_map(lambda d: _read_sample(d, color_space), dirs):
        greys.append(torch.from_numpy(grey)[None, None])
        targets.append(torch.from_numpy(target)[None])
        made += computed
    names = [d.name for d in dirs]
    if not names:
        raise DataError(f"{split_dir}: no sample folders")
    if made:
        notes.append(f"{split}: {made} grey images were missing and were computed from the colour images")
    if size is None and len({t.shape for t in targets}) > 1:
        raise DataError(f"{split_dir}: images differ in size", "set data.size: [H, W]")
    x = concat([resize_images(t, size) for t in greys])
    y = concat([resize_images(t, size) for t in targets])
    return ColorData(x, y, names, color_space, notes)


def check(root: Path) -> str:
    lines = [f"EndoVis colorization layout at {root}"]
    for s in list_splits(root):
        d = load(root, s)
        lines.append(f"  {s}: {len(d)} samples, {d.images.shape[2]}x{d.images.shape[3]} (HxW)")
        lines += [f"  note: {n}" for n in d.notes]
    return "\n".join(lines)
