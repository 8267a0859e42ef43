"""Dice loss and confusion-matrix metrics against hand-computed cases and torchmetrics."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab.losses.core import build_loss, dice_loss, one_hot, soft_dice_per_class
from cnnlab.metrics.confusion import ConfusionMatrix


def test_soft_dice_hand_computed():
    # one image, 2 classes, 2x2 pixels; probabilities given directly
    probs = torch.tensor([[[[0.9, 0.2], [0.6, 0.1]], [[0.1, 0.8], [0.4, 0.9]]]])
    target = torch.tensor([[[0, 1], [1, 1]]])
    # class 0: inter = 0.9, sum p = 1.8, sum g = 1 -> (1.8 + 1) / (2.8 + 1)
    # class 1: inter = 0.8 + 0.4 + 0.9 = 2.1, sum p = 2.2, sum g = 3 -> (4.2 + 1) / (5.2 + 1)
    d = soft_dice_per_class(probs, target, smooth=1.0)
    assert torch.allclose(d, torch.tensor([2.8 / 3.8, 5.2 / 6.2]), atol=1e-6)


@pytest.mark.parametrize("ignore", [None, 255])
def test_soft_dice_matches_the_dense_one_hot_formula_values_and_gradients(ignore):
    torch.manual_seed(0)
    target = torch.randint(0, 4, (3, 9, 7))
    target[0, 0, :3] = 3
    if ignore is not None:
        target[1, 2:5] = ignore
    logits = torch.randn(3, 5, 9, 7, requires_grad=True)  # class 4 never occurs: an empty ground truth
    fast = soft_dice_per_class(logits.softmax(1), target, 1.0, ignore)
    g_fast = torch.autograd.grad(fast.sum(), logits)[0]
    probs = logits.softmax(1)
    if ignore is not None:
        probs = probs * (target != ignore)[:, None]
    g = one_hot(target, 5, ignore)
    dense = (2 * (probs * g).sum((0, 2, 3)) + 1) / (probs.sum((0, 2, 3)) + g.sum((0, 2, 3)) + 1)
    g_dense = torch.autograd.grad(dense.sum(), logits)[0]
    assert torch.allclose(fast, dense, atol=1e-6) and torch.allclose(g_fast, g_dense, atol=1e-6)


def test_dice_loss_is_one_minus_mean_of_softmax_dice():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 1.0]]]])  # 1 x 2 x 1 x 2
    target = torch.tensor([[[0, 1]]])
    p = logits.softmax(1)
    d0 = (2 * p[0, 0, 0, 0] + 1) / (p[0, 0].sum() + 1 + 1)
    d1 = (2 * p[0, 1, 0, 1] + 1) / (p[0, 1].sum() + 1 + 1)
    expected = 1 - (d0 + d1) / 2
    assert dice_loss(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)
    assert dice_loss(logits, target, include_background=False).item() == pytest.approx(1 - d1.item(), abs=1e-6)


def test_dice_loss_perfect_prediction_is_near_zero_and_gradient_flows():
    target = torch.randint(0, 3, (2, 8, 8))
    logits = (F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 40).requires_grad_()
    assert dice_loss(logits, target).item() < 1e-4
    noisy = torch.randn(2, 3, 8, 8, requires_grad=True)
    dice_loss(noisy, target).backward()
    assert noisy.grad.abs().sum() > 0


def test_ignored_pixels_do_not_count():
    target = torch.tensor([[[0, 1], [255, 255]]])
    logits = torch.randn(1, 2, 2, 2)
    changed = logits.clone()
    changed[..., 1, :] = torch.randn(1, 2, 2) * 10  # only ignored pixels change
    a = dice_loss(logits, target, ignore_index=255)
    b = dice_loss(changed, target, ignore_index=255)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)
    assert one_hot(target, 2, 255)[0, :, 1].sum() == 0


def test_confusion_matrix_hand_computed():
    pred = torch.tensor([0, 0, 1, 1, 2, 0])
    true = torch.tensor([0, 1, 1, 1, 0, 0])
    cm = ConfusionMatrix(4)
    cm.update(pred, true)
    # class 0: tp 2, fp 1 (pred 0 on true 1), fn 1 (true 0 pred 2) -> dice 4/6, iou 2/4
    # class 1: tp 2, fp 0, fn 1 -> dice 4/5, iou 2/3; class 2: tp 0, fp 1 -> dice 0; class 3: absent -> NaN
    d, i = cm.dice(), cm.iou()
    assert d[:3].tolist() == pytest.approx([4 / 6, 4 / 5, 0.0])
    assert i[:3].tolist() == pytest.approx([0.5, 2 / 3, 0.0])
    assert math.isnan(d[3]) and math.isnan(i[3])
    s = cm.summary(["bg", "a", "b", "c"])
    assert s["dice_mean"] == pytest.approx((4 / 6 + 4 / 5) / 2)   # classes in GT: 0 and 1
    assert s["dice_mean_foreground"] == pytest.approx(4 / 5)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)
    assert s["per_class"]["c"]["dice"] is None and s["per_class"]["b"]["in_ground_truth"] is False


def test_confusion_matrix_ignore_index():
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(torch.tensor([1, 0, 1]), torch.tensor([1, 255, 0]))
    assert cm.mat.sum() == 2 and cm.mat[1, 1] == 1 and cm.mat[0, 1] == 1


def test_iou_and_accuracy_accumulated_match_torchmetrics():
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    cm = ConfusionMatrix(5)
    iou_tm = MulticlassJaccardIndex(5, average="none")
    acc_tm = MulticlassAccuracy(5, average="micro")
    for _ in range(3):  # accumulated over batches, as over a split
        pred = torch.randint(0, 5, (4, 16, 16), generator=g)
        true = torch.randint(0, 4, (4, 16, 16), generator=g)  # class 4 never in ground truth
        cm.update(pred, true)
        iou_tm.update(pred, true)
        acc_tm.update(pred, true)
    assert torch.allclose(cm.iou().float(), iou_tm.compute().float(), atol=1e-6)
    assert cm.accuracy() == pytest.approx(acc_tm.compute().item(), abs=1e-6)


def test_strict_dice_matches_torchmetrics_on_one_image():
    from torchmetrics.segmentation import DiceScore  # averages per image: one image = global counts

    g = torch.Generator().manual_seed(1)
    pred = torch.randint(0, 3, (1, 20, 20), generator=g)
    true = torch.randint(0, 3, (1, 20, 20), generator=g)
    cm = ConfusionMatrix(3)
    cm.update(pred, true)
    ref = DiceScore(num_classes=3, average="none", input_format="index")(pred, true)
    assert torch.allclose(cm.dice().float(), ref.float(), atol=1e-6)


def test_build_loss_rejects_unknown_names_and_params():
    from cnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'dice'"):
        build_loss("dise", {})
    with pytest.raises(ConfigError, match="loss.params.smoth"):
        build_loss("dice", {"smoth": 1})
