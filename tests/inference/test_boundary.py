"""Per-image Dice, boundary-band Dice and boundary F1 on hand-drawn masks with hand-computed answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.segmentation import dice_score

from cnnlab.figures.boundary import boundary_figure, mask_panel
from cnnlab.metrics.boundary import (
    boundary_band,
    boundary_dice,
    boundary_f1,
    boundary_pixels,
    dice_per_image,
    foreground,
)


def square(size: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """A size x size mask with ones on rows[0]..rows[1] and cols[0]..cols[1] (inclusive)."""
    m = torch.zeros(size, size, dtype=torch.uint8)
    m[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = 1
    return m


def test_dice_per_image_hand_computed():
    truth = square(10, (2, 7), (2, 7))          # 36 pixels
    pred = square(10, (2, 7), (3, 8))           # shifted right by one: overlap 6 x 5 = 30
    assert dice_per_image(pred, truth).item() == pytest.approx(60 / 72)


def test_dice_empty_rules():
    empty = torch.zeros(1, 5, 5)
    some = square(5, (1, 2), (1, 2))[None]
    assert dice_per_image(empty, empty).tolist() == [1.0]   # nothing to find, nothing found
    assert dice_per_image(some, empty).tolist() == [0.0]
    assert dice_per_image(empty, some).tolist() == [0.0]


def test_dice_matches_torchmetrics_on_random_masks():
    g = torch.Generator().manual_seed(0)
    pred = (torch.rand(8, 16, 16, generator=g) < 0.3).long()
    truth = (torch.rand(8, 16, 16, generator=g) < 0.45).long()
    ours = dice_per_image(pred, truth)
    ref = dice_score(pred, truth, num_classes=2, include_background=False, average="none",
                     input_format="index", aggregation_level="samplewise")[:, 0]
    assert torch.allclose(ours.float(), ref.float(), atol=1e-6)


def test_valid_mask_excludes_pixels():
    truth = square(6, (1, 2), (1, 2))           # 4 pixels
    pred = truth.clone()
    pred[5, 5] = 1                              # one false positive, outside the field of view
    valid = torch.ones(6, 6, dtype=torch.bool)
    valid[4:, 4:] = False
    assert dice_per_image(pred, truth).item() == pytest.approx(8 / 9)
    assert dice_per_image(pred, truth, valid).item() == 1.0


def test_boundary_band_and_dice_hand_computed():
    truth = square(10, (2, 7), (2, 7))
    pred = square(10, (2, 7), (3, 8))
    band = boundary_band(truth, 1)[0]
    # dilation: rows/cols 1..8 (64 px); erosion: rows/cols 3..6 (16 px) -> band of 48
    assert band.sum().item() == 48
    assert band[1, 1] and band[2, 5] and band[8, 8] and not band[3, 3] and not band[0, 0]
    # in the band: truth 36-16 = 20, pred 36-16 = 20, both 30-16 = 14 -> 28 / 40
    assert boundary_dice(pred, truth, width=1).item() == pytest.approx(0.7)
    assert boundary_dice(truth, truth, width=1).item() == 1.0


def test_boundary_pixels_ring_and_image_border():
    ring = boundary_pixels(square(10, (2, 7), (2, 7))[None].bool())[0]
    assert ring.sum().item() == 20 and not ring[4, 4] and ring[2, 5] and ring[5, 7]
    # the image border is not a boundary: a full mask has none, a half mask only at its inner edge
    assert boundary_pixels(torch.ones(1, 5, 5, dtype=torch.bool)).sum().item() == 0
    half = torch.zeros(1, 5, 5, dtype=torch.bool)
    half[:, :, :2] = True
    assert boundary_pixels(half)[0].nonzero()[:, 1].unique().tolist() == [1]


def test_boundary_f1_hand_computed_shift_by_two():
    truth = square(12, (2, 7), (2, 7))
    pred = square(12, (2, 7), (4, 9))
    exact = boundary_f1(pred, truth, tolerance=0)
    # rings of 20 pixels meet on rows 2 and 7, cols 4..7: 8 pixels
    assert exact["precision"].item() == pytest.approx(8 / 20)
    assert exact["recall"].item() == pytest.approx(8 / 20)
    tol1 = boundary_f1(pred, truth, tolerance=1)
    # pred ring: rows 2/7 cols 4..8 (10) + (3,4), (6,4) matched; truth ring likewise 12 of 20
    assert tol1["precision"].item() == pytest.approx(12 / 20)
    assert tol1["recall"].item() == pytest.approx(12 / 20)
    assert tol1["f1"].item() == pytest.approx(0.6)


def test_boundary_f1_asymmetric_precision_recall():
    truth = square(12, (2, 4), (2, 4))          # ring of 8 pixels
    pred = truth.clone()
    pred[9, 9] = 1                              # a spurious one-pixel blob: its own boundary
    out = boundary_f1(pred, truth, tolerance=0)
    assert out["precision"].item() == pytest.approx(8 / 9)
    assert out["recall"].item() == 1.0
    assert out["f1"].item() == pytest.approx(16 / 17)
    none = boundary_f1(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
    assert none["f1"].item() == 1.0
    missed = boundary_f1(torch.zeros(12, 12), truth)
    assert missed["recall"].item() == 0.0 and missed["f1"].item() == 0.0


def test_foreground_from_logits():
    logits = torch.tensor([[[[2.0, -1.0]], [[1.0, 3.0]]]])  # N=1, C=2, H=1, W=2
    assert foreground(logits).tolist() == [[[False, True]]]


def test_mask_panel_colours():
    truth = np.array([[True, True, False]])
    pred = np.array([[True, False, True]])
    panel = mask_panel(pred, truth)
    assert panel[0, 0].tolist() == [255, 255, 255]   # true positive: white
    assert panel[0, 1].tolist() == [40, 120, 255]    # false negative: blue
    assert panel[0, 2].tolist() == [230, 40, 40]     # false positive: red


def test_boundary_figure_written(tmp_path):
    truth = torch.stack([square(16, (4, 11), (4, 11))] * 3)
    pred = truth.clone()
    pred[1] = 0
    pred[2, 4:8] = 0
    images = torch.randint(0, 255, (3, 2, 16, 16), dtype=torch.uint8)
    out = boundary_figure(images, truth, {"no skip": pred, "skip": truth}, tmp_path / "b" / "band.png", width=2)
    assert out.is_file() and out.stat().st_size > 1000
