"""Issue 30: multi-class per-image metrics (mean over images of each image's mean Dice over the classes present in
it) in summary.json and evaluate, named as such; legends on overlays (predict's PNGs and the report figure)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from cnnlab.data.types import SegData
from cnnlab.figures.legend import with_legend
from cnnlab.figures.palette import class_colors
from cnnlab.figures.run import seg_overlays
from cnnlab.metrics.per_image import per_image_scores, per_image_summary


def test_per_image_mean_against_a_hand_computed_example():
    truth = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [2, 255]]])
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 0], [2, 1]]])
    # image 1: class 0 tp 1 fn 1 -> Dice 2/3, IoU 1/2; class 1 tp 2 fp 1 -> Dice 4/5, IoU 2/3; class 2 not in truth
    # image 2 (the 255 pixel ignored): class 2 tp 2 fn 1 -> Dice 4/5, IoU 2/3; classes 0 and 1 not in its truth
    dice, iou = per_image_scores(pred, truth, 3, 255)
    assert dice.tolist() == pytest.approx([(2 / 3 + 4 / 5) / 2, 4 / 5])
    assert iou.tolist() == pytest.approx([(1 / 2 + 2 / 3) / 2, 2 / 3])
    s = per_image_summary(pred, truth, ["Sky", "Road", "Car"], 255)
    assert s["dice_mean_per_image"] == pytest.approx(23 / 30) and s["iou_mean_per_image"] == pytest.approx(15 / 24)
    assert s["images"] == 2 and "each image" in s["convention"]
    # an image with only ignored pixels is not scored
    s = per_image_summary(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 255), ["a", "b", "c"], 255)
    assert s["images"] == 0 and s["dice_mean_per_image"] is None


def test_predict_overlay_legend_names_the_present_classes_in_their_colours():
    rgb = np.full((20, 120, 3), 128, np.uint8)
    names = ["Sky", "Road", "Car", "Pedestrian"]
    out = with_legend(rgb, names, [0, 2])
    cols = class_colors(4)
    strip = out[20:].reshape(-1, 3)
    assert out.shape[0] > 20 and np.array_equal(out[:20], rgb)
    has = {c: bool((strip == cols[c]).all(1).any()) for c in (1, 2, 3)}
    assert has == {1: False, 2: True, 3: False}  # Car's swatch, not the absent classes'
    narrow = with_legend(np.zeros((8, 16, 3), np.uint8), ["Background_Tissue", "Bipolar_Forceps"], [0, 1])
    assert narrow.shape[1] > 16 and np.array_equal(narrow[:8, :16], np.zeros((8, 16, 3), np.uint8))  # names not cut


def test_report_overlay_figure_has_a_legend_with_every_class(monkeypatch, tmp_path):
    labels = []
    real = Figure.legend

    def spy(self, *args, **kwargs):
        labels.extend(h.get_label() for h in kwargs.get("handles", []))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "legend", spy)
    masks = torch.tensor([[[0, 1], [2, 2]]], dtype=torch.uint8).repeat(2, 1, 1)
    split = SegData(torch.zeros(2, 3, 2, 2, dtype=torch.uint8), masks, ["a", "b"], ["Sky", "Road", "Car"], None, [])
    seg_overlays(split, masks.clone(), torch.tensor([0.5, 0.9]), tmp_path / "o.png", k=1)
    assert labels[:3] == ["Sky (untinted)", "Road", "Car"] and (tmp_path / "o.png").is_file()
