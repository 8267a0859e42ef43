"""Issue 18 item 1: the overlay figure ranks and titles images by the per-image Dice the report states."""
from __future__ import annotations

import math

import torch

from cnnlab.figures.run import overlay_scores, pick_worst_and_best
from cnnlab.metrics.boundary import binary_summary


def _binary_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Three 10x10 images, foreground (class 1) a 2x5 strip; predictions hand-made so that with background the
    scores are high but the foreground Dice is low, and the order differs between the two conventions."""
    truth = torch.zeros(3, 10, 10, dtype=torch.long)
    truth[:, 0:2, 0:5] = 1                       # 10 foreground pixels each
    pred = torch.zeros_like(truth)
    pred[0, 0:1, 0:5] = 1                        # 5 of 10 found, no false positives: fg Dice 2*5/(5+10) = 2/3
    pred[1, 0:2, 0:1] = 1                        # 2 found:        fg Dice 2*2/(2+10) = 1/3
    pred[2, 5:7, 0:5] = 1                        # 10 all wrong:   fg Dice 0
    return pred, truth


def test_binary_overlay_score_is_the_foreground_dice_not_the_background_inclusive_mean() -> None:
    pred, truth = _binary_case()
    scores, name = overlay_scores(pred, truth, 2, None)
    assert name == "foreground Dice"
    assert torch.allclose(scores.double(), torch.tensor([2 / 3, 1 / 3, 0.0], dtype=torch.float64), atol=1e-6)
    # image 2: background Dice 2*80/(90+90) = 0.889, so the old title (mean with background) said 0.44, not 0.00
    assert scores[2] == 0.0


def test_overlay_scores_average_to_the_reports_per_image_dice() -> None:
    pred, truth = _binary_case()
    scores, _ = overlay_scores(pred, truth, 2, None)
    assert math.isclose(float(scores.mean()), binary_summary(pred, truth)["per_image_dice_mean"], rel_tol=1e-6)


def test_ignored_pixels_do_not_count_in_the_overlay_score() -> None:
    pred, truth = _binary_case()
    truth[2, 5:7, 0:5] = 255                     # the false positives of image 2 lie in ignored padding
    scores, _ = overlay_scores(pred, truth, 2, 255)
    assert math.isclose(float(scores[2]), 0.0)   # still misses every true pixel: 0 found of 10
    pred[2, 0:2, 0:5] = 1                        # now finds all 10; the ignored false positives are not counted
    scores, _ = overlay_scores(pred, truth, 2, 255)
    assert math.isclose(float(scores[2]), 1.0)


def test_multiclass_title_names_its_mean() -> None:
    truth = torch.tensor([[[0, 1], [2, 2]]])
    pred = torch.tensor([[[0, 1], [2, 0]]])
    scores, name = overlay_scores(pred, truth, 3, None)
    assert "classes in this image" in name
    # Dice: class 0: 2*1/(2+1)=2/3, class 1: 1, class 2: 2*1/(1+2)=2/3 -> mean 7/9
    assert math.isclose(float(scores[0]), 7 / 9, rel_tol=1e-6)


def test_ranking_picks_the_truly_worst_and_skips_unscored_images() -> None:
    scores = torch.tensor([0.9, float("nan"), 0.1, 0.5, 0.0, 0.95])
    worst, best = pick_worst_and_best(scores, 2)
    assert worst == [4, 2]                       # lowest first; the NaN image is not called 'worst'
    assert best == [5, 0]
    worst, best = pick_worst_and_best(torch.tensor([0.3, 0.2]), 3)
    assert worst == [1, 0] and best == []        # never shown twice
