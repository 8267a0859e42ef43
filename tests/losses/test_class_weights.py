"""Class-weighted cross-entropy and frequency weights: hand-computed cases and torch's own weighted cross-entropy."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data.formats.common import class_shares
from cnnlab.data.types import SegData
from cnnlab.errors import ConfigError, DataError
from cnnlab.losses.class_weights import (
    build_weighted_ce,
    inverse_frequency,
    median_frequency,
    per_image_counts,
    weighted_cross_entropy,
    weights_for,
)

# three 2x2 masks, 255 ignored: class 0 has 5 pixels (images 1, 2), class 1 has 4 (images 1, 3), class 2 has 2
MASKS = torch.tensor([[[0, 0], [0, 1]], [[0, 0], [2, 2]], [[1, 1], [1, 255]]], dtype=torch.uint8)


def seg(masks: torch.Tensor = MASKS, num_classes: int = 4, ignore_index: int | None = 255) -> SegData:
    n = masks.shape[0]
    return SegData(torch.zeros(n, 3, *masks.shape[1:], dtype=torch.uint8), masks, [str(i) for i in range(n)],
                   [f"c{i}" for i in range(num_classes)], ignore_index)


def test_weighted_ce_hand_computed_2x2():
    # pixel (0,0): logits (0, 0), target 0 -> -log 1/2; (0,1): (ln 3, 0), target 1 -> -log 1/4;
    # (1,0): (ln 3, 0), target 0 -> -log 3/4; (1,1): ignored.  Weights w0 = 1, w1 = 3.
    ln3 = math.log(3)
    logits = torch.tensor([[[0.0, ln3], [ln3, 5.0]], [[0.0, 0.0], [0.0, -2.0]]]).unsqueeze(0)
    target = torch.tensor([[[0, 1], [0, 255]]])
    loss = weighted_cross_entropy(logits, target, torch.tensor([1.0, 3.0]), ignore_index=255)
    expected = (1 * math.log(2) + 3 * math.log(4) + 1 * math.log(4 / 3)) / (1 + 3 + 1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # without weights it is the plain mean over the three counted pixels
    plain = weighted_cross_entropy(logits, target, None, ignore_index=255)
    assert plain.item() == pytest.approx((math.log(2) + math.log(4) + math.log(4 / 3)) / 3, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_ce_matches_torch_on_random_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, 7, 6, generator=g, requires_grad=True)
    target = torch.randint(0, 5, (3, 7, 6), generator=g)
    target[torch.rand(3, 7, 6, generator=g) < 0.2] = 255
    weights = torch.rand(5, generator=g) * 4 + 0.1
    ours = weighted_cross_entropy(logits, target, weights, ignore_index=255)
    ref = F.cross_entropy(logits, target, weight=weights, ignore_index=255)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)
    g_ours, = torch.autograd.grad(ours, logits)
    g_ref, = torch.autograd.grad(ref, logits)
    assert torch.allclose(g_ours, g_ref, rtol=1e-4, atol=1e-7)


def test_weighted_ce_without_ignore_and_on_class_vectors_matches_torch():
    g = torch.Generator().manual_seed(7)
    logits, target, weights = torch.randn(10, 4, generator=g), torch.randint(0, 4, (10,), generator=g), torch.rand(4)
    assert torch.allclose(weighted_cross_entropy(logits, target, weights),
                          F.cross_entropy(logits, target, weight=weights), rtol=1e-5)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 4), generator=g, dtype=torch.int64).to(torch.uint8)  # uint8 masks
    assert torch.allclose(weighted_cross_entropy(logits, target, torch.tensor([0.5, 1.0, 2.0])),
                          F.cross_entropy(logits, target.long(), weight=torch.tensor([0.5, 1.0, 2.0])), rtol=1e-5)


def test_weighted_ce_bf16_logits_are_computed_in_float32():
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(2, 3, 5, 5, generator=g).bfloat16(), torch.randint(0, 3, (2, 5, 5), generator=g)
    loss = weighted_cross_entropy(logits, target, torch.tensor([1.0, 2.0, 3.0]))
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, F.cross_entropy(logits.float(), target, weight=torch.tensor([1.0, 2.0, 3.0])))


def test_all_ignored_batch_gives_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.full((1, 2, 2), 255), torch.ones(3), ignore_index=255)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_per_image_counts_hand_computed():
    counts = per_image_counts(MASKS, 4, ignore_index=255, chunk=2)  # chunk 2: the chunked path is exercised
    assert counts.tolist() == [[3, 1, 0, 0], [2, 0, 2, 0], [0, 3, 0, 0]]
    with pytest.raises(DataError, match=r"mask values \[255\] outside 0..3"):
        per_image_counts(MASKS, 4, ignore_index=None)


def test_class_shares_exclude_ignore_index():
    # the data check's class shares (data/formats/common.py), on the hand-counted masks above
    shares = class_shares(MASKS, 4, ignore_index=255)
    assert torch.allclose(shares, torch.tensor([5, 4, 2, 0], dtype=torch.float64) / 11)


def test_median_frequency_hand_computed():
    # f0 = 5 / 8 (images 1, 2: 4 + 4 counted pixels), f1 = 4 / 7 (images 1, 3: 4 + 3), f2 = 2 / 4 (image 2)
    # median f = 4 / 7 -> w = (4/7) / f; class 3 never appears: absent weight
    w = median_frequency(per_image_counts(MASKS, 4, 255), absent_weight=0.25)
    assert torch.allclose(w, torch.tensor([(4 / 7) / (5 / 8), 1.0, (4 / 7) / (2 / 4), 0.25]))


def test_median_frequency_even_count_takes_mean_of_middle_two():
    masks = torch.tensor([[[0, 0, 0, 1]], [[2, 2, 2, 3]]], dtype=torch.uint8)  # f = 3/4, 1/4, 3/4, 1/4
    w = median_frequency(per_image_counts(masks, 4))  # median (1/4 + 3/4) / 2 = 1/2, not the lower 1/4
    assert torch.allclose(w, torch.tensor([0.5 / 0.75, 0.5 / 0.25, 0.5 / 0.75, 0.5 / 0.25]))


def test_inverse_frequency_hand_computed():
    w = inverse_frequency(per_image_counts(MASKS, 4, 255))  # N = 11 pixels, K = 3 present classes
    assert torch.allclose(w, torch.tensor([11 / 15, 11 / 12, 11 / 6, 1.0]))
    assert torch.allclose(inverse_frequency(torch.tensor([5, 4, 2, 0])), w)  # totals work too


def test_weights_for_schemes_and_cap():
    assert torch.allclose(weights_for(seg(), "median"), torch.tensor([32 / 35, 1.0, 8 / 7, 1.0]))
    assert torch.allclose(weights_for(seg(), "inverse", max_weight=1.5), torch.tensor([11 / 15, 11 / 12, 1.5, 1.0]))
    assert weights_for(seg(), "none") is None
    with pytest.raises(ConfigError, match="unknown loss.params.scheme 'medain'.*median"):
        weights_for(seg(), "medain")


def test_build_weighted_ce_uses_training_weights_and_ignore_index():
    loss_fn = build_weighted_ce(seg(), scheme="median")
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, generator=g)
    target = torch.randint(0, 4, (2, 3, 3), generator=g)
    target[0, 0] = 255
    ref = F.cross_entropy(logits, target, weight=torch.tensor([32 / 35, 1.0, 8 / 7, 1.0]), ignore_index=255)
    assert torch.allclose(loss_fn(logits, target), ref, rtol=1e-5)
    with pytest.raises(ConfigError, match="unknown loss.params key 'shceme'"):
        build_weighted_ce(seg(), shceme="median")
    with pytest.raises(ConfigError, match="max_weight must be a number"):
        build_weighted_ce(seg(), max_weight="big")
