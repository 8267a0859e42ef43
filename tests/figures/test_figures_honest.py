"""Figures seen as a user sees them: ignored pixels are not painted as predictions, and the loss-curve legend is not
drawn under the metric's curve (found by looking at a DRIVE report in a browser)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import cnnlab.figures.run as fr
from cnnlab.figures.palette import overlay


def test_prediction_panel_darkens_what_is_not_scored_instead_of_painting_it():
    img = torch.full((3, 2, 2), 200, dtype=torch.uint8)
    truth = torch.tensor([[0, 1], [255, 255]], dtype=torch.uint8)      # bottom row outside the field of view
    pred = torch.tensor([[1, 1], [1, 0]], dtype=torch.uint8)           # the model says 'vessel' outside it
    shown = fr._scored_only(pred, truth, 255)
    assert shown.tolist() == [[1, 1], [255, 255]]
    panel = overlay(img, shown, 2, ignore_index=255)
    assert np.all(panel[1] == 80)                                      # 200 x 0.4: dimmed, not tinted
    tinted = overlay(img, pred, 2)
    assert not np.array_equal(tinted[1, 0], panel[1, 0])               # the old panel painted it as vessel
    assert fr._scored_only(pred, truth, None) is pred


def _loss_curves_figure(history: list[dict], tmp_path: Path, monkeypatch):
    """The Figure loss_curves draws, kept instead of saved."""
    seen = {}

    def keep(fig, path, **kwargs):
        seen["fig"] = fig
        return path

    monkeypatch.setattr(fr, "save_figure", keep)
    fr.loss_curves(history, tmp_path / "c.png")
    return seen["fig"]


def test_loss_curves_have_one_legend_outside_the_axes(tmp_path: Path, monkeypatch):
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_dice_mean": 0.5 + 0.1 * e}
               for e in (1, 2, 3)]
    fig = _loss_curves_figure(history, tmp_path, monkeypatch)
    assert all(a.get_legend() is None for a in fig.axes)               # none inside an axes
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["train loss", "validation loss",
                                                          "validation Dice (strict)"]


def test_a_short_runs_loss_curves_mark_whole_epochs_only(tmp_path: Path, monkeypatch):
    """Two epochs: the axis showed 1.0, 1.2, ..., 2.0, epochs that never happened; now 1 and 2."""
    fig = _loss_curves_figure([{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e} for e in (1, 2)], tmp_path,
                              monkeypatch)
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1.0, 2.0]


def test_overlay_tints_by_hand_computed_values():
    """Half image, half class colour (class 1 is (230, 25, 75), class 2 (60, 180, 75)), truncated to uint8;
    background and out-of-range labels untouched; ignored pixels at 40% brightness."""
    img = torch.tensor([[[100, 100, 100, 100, 100]], [[10, 10, 10, 10, 10]], [[0, 0, 0, 0, 0]]], dtype=torch.uint8)
    mask = torch.tensor([[0, 1, 2, 9, 7]])
    out = overlay(img, mask, 3, ignore_index=7)
    assert out.shape == (1, 5, 3) and out.dtype == np.uint8
    assert out[0].tolist() == [[100, 10, 0], [165, 17, 37], [80, 95, 37], [100, 10, 0], [40, 4, 0]]
