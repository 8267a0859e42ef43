"""Imbalance-aware losses (issue 39): ENet weights from a known histogram, Lovász-softmax on hand-checked cases,
OHEM keeping the hardest share, and the recipe options that combine them with Dice and cross-entropy."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data.types import SegData
from cnnlab.errors import ConfigError
from cnnlab.losses.class_weights import enet_log, per_image_counts, weights_for
from cnnlab.losses.core import build_loss, dice_loss, loss_entries, needs_weights
from cnnlab.losses.imbalance import lovasz_softmax, ohem_cross_entropy

# three 2x2 masks, 255 void: class 0 has 5 pixels, class 1 has 4, class 2 has 2, class 3 none (11 counted)
MASKS = torch.tensor([[[0, 0], [0, 1]], [[0, 0], [2, 2]], [[1, 1], [1, 255]]], dtype=torch.uint8)


def seg() -> SegData:
    return SegData(torch.zeros(3, 3, 2, 2, dtype=torch.uint8), MASKS, ["a", "b", "c"], ["c0", "c1", "c2", "c3"], 255)


def _logits_for(p1: list[float]) -> torch.Tensor:
    """Two-class logits (1 x 2 x 1 x P) whose softmax gives class 1 the probabilities p1."""
    p = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))]).float().reshape(1, 2, 1, -1)


def test_enet_log_weights_from_a_known_histogram():
    # shares 5/11, 4/11, 2/11 of the 11 counted pixels (the void pixel excluded); class 3 absent -> absent weight
    w = enet_log(per_image_counts(MASKS, 4, 255), absent_weight=0.5)
    expected = [1 / math.log(1.02 + 5 / 11), 1 / math.log(1.02 + 4 / 11), 1 / math.log(1.02 + 2 / 11), 0.5]
    assert torch.allclose(w, torch.tensor(expected))
    assert torch.allclose(weights_for(seg(), "enet_log", max_weight=0.8), torch.tensor(expected[:3] + [1.0]).clamp(
        max=0.8))


def test_lovasz_softmax_hand_computed():
    # class 1: truth 1,0,1, p = .9,.6,.2 -> errors .1,.6,.8; sorted .8(fg) .6(bg) .1(fg), gts 2: Jaccard losses
    # 1-1/2, 1-1/3, 1-0 -> gradient 1/2, 1/6, 1/3 -> .8/2 + .6/6 + .1/3. Class 0: errors the same, truth 0,1,0,
    # sorted .8(bg) .6(fg) .1(bg), gts 1: Jaccard losses 1/2, 1, 1 -> gradient 1/2, 1/2, 0 -> .4 + .3
    loss = lovasz_softmax(_logits_for([0.9, 0.6, 0.2]), torch.tensor([[[1, 0, 1]]]))
    assert loss.item() == pytest.approx(((0.4 + 0.1 + 0.1 / 3) + 0.7) / 2, rel=1e-5)


def test_lovasz_softmax_at_hard_predictions_is_one_minus_iou():
    # a hard prediction (probabilities 0/1) is a vertex, where the Lovász extension equals the Jaccard loss:
    # truth 1,0,1,1 and prediction 1,1,0,1 -> IoU class 1 = 2/4, class 0 = 0/2 -> loss (1/2 + 1) / 2
    logits = torch.tensor([[[30.0, 30.0, -30.0, 30.0]]]).unsqueeze(0)  # class 1 predicted at 1,1,0,1
    logits = torch.cat([-logits, logits], 1)
    target = torch.tensor([[[1, 0, 1, 1]]])
    assert lovasz_softmax(logits, target).item() == pytest.approx(0.75, abs=1e-6)
    # void pixels are left out: voiding the missed pixel leaves IoU 2/3 (class 1) and 0/1 (class 0)
    voided = torch.tensor([[[1, 0, 255, 1]]])
    assert lovasz_softmax(logits, voided, 255).item() == pytest.approx((1 / 3 + 1) / 2, abs=1e-6)
    # a perfect prediction costs 0; 'present': a class absent from the truth is not averaged (class 0 here,
    # predicted at one pixel: class 1's loss alone, IoU 3/4 -> 1/4; 'all' adds class 0's loss 1, -> 5/8)
    assert lovasz_softmax(logits, torch.tensor([[[1, 1, 0, 1]]])).item() == pytest.approx(0.0, abs=1e-6)
    all_one = torch.tensor([[[1, 1, 1, 1]]])
    assert lovasz_softmax(logits, all_one).item() == pytest.approx(0.25, abs=1e-6)
    assert lovasz_softmax(logits, all_one, classes="all").item() == pytest.approx(0.625, abs=1e-6)


def test_ohem_keeps_the_hardest_share():
    # -log p of the true class per pixel: p = .9 .6 .2 .5 for truths 1 1 1 0 (class 0 at p1 = .5)
    logits, target = _logits_for([0.9, 0.6, 0.2, 0.5]), torch.tensor([[[1, 1, 1, 0]]])
    nll = [-math.log(0.9), -math.log(0.6), -math.log(0.2), -math.log(0.5)]
    assert ohem_cross_entropy(logits, target, 0.5).item() == pytest.approx((nll[2] + nll[3]) / 2, rel=1e-5)
    assert ohem_cross_entropy(logits, target, 0.25).item() == pytest.approx(nll[2], rel=1e-5)  # ceil(1) pixel
    assert ohem_cross_entropy(logits, target, 1.0).item() == pytest.approx(sum(nll) / 4, rel=1e-5)
    # class weights over the kept pixels: w0 = 3 on the class-0 pixel
    w = torch.tensor([3.0, 1.0])
    assert ohem_cross_entropy(logits, target, 0.5, w).item() == pytest.approx((nll[2] + 3 * nll[3]) / 4, rel=1e-5)
    # void pixels are never kept, however hard
    voided = torch.tensor([[[1, 1, 255, 0]]])
    assert ohem_cross_entropy(logits, voided, 0.3, None, 255).item() == pytest.approx(nll[3], rel=1e-5)


def test_dice_ce_with_class_weights_is_dice_plus_torch_weighted_ce():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 4, 5, 5, generator=g), torch.randint(0, 4, (2, 5, 5), generator=g)
    target[0, 0] = 255
    loss = build_loss("dice_ce", {"scheme": "median"}, 255, seg())
    w = weights_for(seg(), "median")
    expected = dice_loss(logits, target, ignore_index=255) + F.cross_entropy(logits, target, weight=w,
                                                                             ignore_index=255)
    assert torch.allclose(loss(logits, target), expected, rtol=1e-5)
    assert torch.allclose(torch.tensor(loss_entries(loss)["class_weights"]), w)
    # a Lovász term beside them, and stored weights used as they are (no training split needed)
    lov = build_loss("dice_ce", {"scheme": "median", "lovasz_weight": 0.5}, 255, weights=w)
    assert torch.allclose(lov(logits, target), expected + 0.5 * lovasz_softmax(logits, target, 255), rtol=1e-5)
    # today's dice_ce is unchanged and stores nothing
    plain = build_loss("dice_ce", {}, 255)
    assert torch.allclose(plain(logits, target), dice_loss(logits, target, ignore_index=255)
                          + F.cross_entropy(logits, target, ignore_index=255), rtol=1e-5)
    assert loss_entries(plain) == {}


def test_loss_options_by_name():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(2, 4, 3, 3, generator=g), torch.randint(0, 4, (2, 3, 3), generator=g)
    ohem = build_loss("ohem_ce", {"keep": 1.0}, None)
    assert torch.allclose(ohem(logits, target), F.cross_entropy(logits, target), rtol=1e-5)
    assert torch.allclose(build_loss("lovasz", {}, None)(logits, target), lovasz_softmax(logits, target))
    enet = build_loss("weighted_ce", {"scheme": "enet_log"}, 255, seg())
    assert torch.allclose(enet(logits, target), F.cross_entropy(logits, target, weight=weights_for(seg(), "enet_log")),
                          rtol=1e-5)
    assert needs_weights("weighted_ce", {}) and needs_weights("dice_ce", {"scheme": "enet_log"})
    assert not needs_weights("dice_ce", {}) and not needs_weights("weighted_ce", {"scheme": "none"})


@pytest.mark.parametrize(("name", "params", "message"), [
    ("dice_ce", {"ohem_keep": 0}, r"ohem_keep must be a number in \(0, 1\]"),
    ("ohem_ce", {"keep": 1.5}, r"keep must be a number in \(0, 1\]"),
    ("dice_ce", {"lovasz_weight": -1}, "lovasz_weight must be a number >= 0"),
    ("dice_ce", {"scheme": "enet"}, "unknown loss.params.scheme 'enet'"),
    ("lovasz", {"scheme": "median"}, "unknown config key 'loss.params.scheme' for loss 'lovasz'"),
    ("dice_ce", {"scheme": "median"}, "need the training split"),
])
def test_bad_loss_params_are_one_line(name: str, params: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        build_loss(name, params, 255)
