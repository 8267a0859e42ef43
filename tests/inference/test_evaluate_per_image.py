"""`cnnlab evaluate` on binary segmentation: the foreground's Dice and IoU per image (mean over images) beside the
strict global ones, both named; the per-image numbers by hand and against the training summary's own."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlab.inference.evaluate import evaluate_run
from cnnlab.metrics.boundary import foreground_scores
from cnnlab.metrics.confusion import ConfusionMatrix
from conftest import train_binary_glas


def _masks(*rows: str) -> torch.Tensor:
    """Images of 2 x 3 pixels written as '011/000' (one string per image)."""
    return torch.tensor([[[int(c) for c in line] for line in img.split("/")] for img in rows], dtype=torch.uint8)


def _per_class(pred: torch.Tensor, truth: torch.Tensor, ignore: int | None = None) -> dict:
    cm = ConfusionMatrix(2, ignore)
    cm.update(pred, truth)
    return cm.summary(["background", "polyp"])["per_class"]


def test_per_image_and_global_scores_by_hand():
    # image 1: truth 2 px, prediction 2 px, 1 shared -> Dice 2/4 = 0.5, IoU 1/3
    # image 2: both empty -> 1 and 1 (the convention: nothing to find, nothing found)
    # image 3: empty truth, 1 px predicted -> 0 and 0
    # image 4: the same 3 px -> 1 and 1
    truth = _masks("110/000", "000/000", "000/000", "111/000")
    pred = _masks("011/000", "000/000", "000/001", "111/000")
    got = foreground_scores(pred, truth, None, _per_class(pred, truth), "polyp")
    assert got["dice_per_image_mean"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert got["iou_per_image_mean"] == pytest.approx((1 / 3 + 1 + 0 + 1) / 4)
    # global: shared 1 + 3 = 4 px, predicted 2 + 1 + 3 = 6, truth 2 + 3 = 5 -> Dice 8/11, IoU 4/7
    assert got["dice_global"] == pytest.approx(8 / 11) and got["iou_global"] == pytest.approx(4 / 7)
    assert (got["images"], got["images_empty_truth"], got["images_empty_truth_and_prediction"]) == (4, 2, 1)
    assert got["class"] == "polyp" and "both empty" in got["conventions"]["per_image"]


def test_ignored_pixels_count_in_neither_score():
    # the prediction's third pixel lies on an ignored truth pixel (255): Dice 2*1/(1 + 2) per image
    truth = torch.tensor([[[1, 1, 255]]], dtype=torch.uint8)
    pred = _masks("011")
    got = foreground_scores(pred, truth, 255, _per_class(pred, truth, 255), "polyp")
    assert got["dice_per_image_mean"] == pytest.approx(2 / 3) == got["dice_global"]
    assert got["iou_per_image_mean"] == pytest.approx(1 / 2)


@pytest.fixture(scope="module")
def glas_run(tmp_path_factory) -> Path:
    """A binary (gland / background) run of one epoch on synthetic GlaS images."""
    return train_binary_glas(tmp_path_factory.mktemp("epi"), "binary", threads=1)


def test_evaluate_reports_both_named_and_matches_the_training_summary(glas_run: Path, tmp_path: Path, capsys):
    """Evaluating best.pt on the split training tested gives the summary's per-image Dice (the same function) and
    its strict per-class Dice, under names that say which is which."""
    from cnnlab.cli import main

    result, path = evaluate_run(glas_run, out=tmp_path, progress=False)
    summary = json.loads((glas_run / "summary.json").read_text())
    fg = result["foreground"]
    assert fg["images"] == summary["n_images"] == 5
    assert fg["dice_per_image_mean"] == pytest.approx(summary["binary"]["per_image_dice_mean"], abs=1e-12)
    assert result["binary"]["per_image_dice_mean"] == fg["dice_per_image_mean"]
    name = summary["class_names"][1]
    assert fg["class"] == name
    assert fg["dice_global"] == pytest.approx(summary["per_class"][name]["dice"], abs=1e-12)
    assert fg["iou_global"] == pytest.approx(summary["per_class"][name]["iou"], abs=1e-12)
    assert json.loads(path.read_text())["foreground"] == fg

    assert main(["evaluate", str(glas_run), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (f"foreground '{name}': Dice global (strict, pooled over 5 images) {fg['dice_global']:.4f}, mean per "
            f"image {fg['dice_per_image_mean']:.4f}; IoU global {fg['iou_global']:.4f}, mean per image "
            f"{fg['iou_per_image_mean']:.4f}") in out
    assert "empty ground truth and empty prediction scores 1" in out
