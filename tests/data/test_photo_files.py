"""Photo files as users have them: stored sideways with an EXIF orientation tag (read as viewers show them, so
masks drawn on the displayed picture line up; LabelMe and OpenCV apply the tag too), and WebP."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.formats import folders
from cnnlab.data.formats.common import header, read_input

RAW_H, RAW_W = 16, 32


def _tagged_jpeg(path: Path, raw: np.ndarray, orientation: int) -> None:
    im = Image.fromarray(raw)
    exif = im.getexif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, exif=exif.tobytes(), quality=95)


def _raw_with_a_bright_corner() -> np.ndarray:
    raw = np.zeros((RAW_H, RAW_W, 3), np.uint8)
    raw[:6, :8] = 250  # bright block at the stored top-left
    return raw


# orientation 3: turned 180 degrees for display; 6: turned 90 degrees clockwise (stored sideways)
DISPLAYED = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1)}


@pytest.mark.parametrize("orientation", [3, 6])
def test_inputs_are_read_as_displayed(tmp_path, orientation):
    raw = _raw_with_a_bright_corner()
    _tagged_jpeg(tmp_path / "p.jpg", raw, orientation)
    shown = DISPLAYED[orientation](raw)
    assert header(tmp_path / "p.jpg")[:2] == shown.shape[:2]
    arr = read_input(tmp_path / "p.jpg", 3)
    assert arr.shape == shown.shape
    assert np.abs(arr.astype(int) - shown.astype(int)).max() < 20  # JPEG noise only, not a turned picture


@pytest.mark.parametrize("orientation", [3, 6])
def test_masks_drawn_on_the_displayed_photo_line_up_with_it(tmp_path, orientation):
    """Before, a 90-degree tag made every pair a size mismatch, and a 180-degree one flipped every label."""
    raw = _raw_with_a_bright_corner()
    shown = DISPLAYED[orientation](raw)
    (tmp_path / "masks").mkdir()
    for i in range(3):
        _tagged_jpeg(tmp_path / "images" / f"p{i}.jpg", raw, orientation)
        Image.fromarray((shown[..., 0] > 128).astype(np.uint8) * 255).save(tmp_path / "masks" / f"p{i}.png")
    d = folders.load(tmp_path, "train", fractions={"train": 1.0}, size=list(shown.shape[:2]))
    bright = d.images[0, 0] > 128
    assert torch.equal(bright, d.masks[0].bool()) and int(d.masks[0].sum()) == 6 * 8


def test_webp_images_and_masks_are_read(tmp_path):
    """WebP files were 'non-image files' to the folders reader, so a WebP data set had no images at all."""
    lab = np.zeros((16, 32), np.uint8)
    lab[2:9, 4:20] = 1
    lab[10:14, 22:30] = 2
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 32, 3), 60 * i, np.uint8)).save(tmp_path / "images" / f"p{i}.webp", quality=90)
        Image.fromarray(lab).save(tmp_path / "masks" / f"p{i}.webp", lossless=True)
    d = folders.load(tmp_path, "train", fractions={"train": 1.0})
    assert d.class_names == ["class_0", "class_1", "class_2"]
    assert torch.equal(d.masks[0], torch.from_numpy(lab))
