"""class_argmax (cnnlab.metrics.argmax) is torch's argmax, index for index: every layout, dimension, tie and NaN.

Oracle: torch.argmax itself on the same tensor. The fast path (K - 1 elementwise passes) is taken for CPU tensors
whose class dimension is not the innermost one, which is what these cases build."""
from __future__ import annotations

import pytest
import torch

from cnnlab.metrics.argmax import MAX_LOOP_CLASSES, class_argmax


def _cases() -> list[tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(0)
    nchw = torch.randn(3, 5, 7, 9, generator=g)
    return [
        ("N x K x H x W contiguous", nchw, 1),
        ("N x K x H x W channels_last", nchw.contiguous(memory_format=torch.channels_last), 1),
        ("K x H x W", torch.randn(4, 6, 8, generator=g), 0),
        ("two classes", torch.randn(2, 2, 16, 16, generator=g), 1),
        ("a transposed view", torch.randn(5, 11, generator=g).t(), 0),
        ("ties everywhere (small integers)", torch.randint(0, 3, (2, 6, 10, 10), generator=g).float(), 1),
        ("all equal: the first class", torch.zeros(2, 4, 3, 3), 1),
        ("bf16 scores", torch.randn(2, 4, 8, 8, generator=g).bfloat16(), 1),
        ("N x K class scores", torch.randn(7, 10, generator=g), 1),
    ]


@pytest.mark.parametrize("name,scores,dim", _cases(), ids=[c[0] for c in _cases()])
def test_class_argmax_equals_torch_argmax(name: str, scores: torch.Tensor, dim: int) -> None:
    got = class_argmax(scores, dim)
    assert got.dtype == torch.int64 and got.shape == scores.argmax(dim).shape
    assert torch.equal(got, scores.argmax(dim)), name


def test_ties_go_to_the_first_class_as_in_torch() -> None:
    scores = torch.tensor([[1.0, 2.0], [3.0, 2.0], [3.0, 1.0], [0.0, 2.0]])[:, :, None]  # K=4 x 2 x 1, contiguous
    assert scores.stride(0) != 1
    assert class_argmax(scores, 0).flatten().tolist() == [1, 0] == scores.argmax(0).flatten().tolist()


def test_nan_scores_give_torch_s_answer() -> None:
    scores = torch.randn(1, 4, 3, 3)
    scores[0, 2, 1, 1] = float("nan")
    scores[0, 3, 0, 0] = float("nan")
    assert torch.equal(class_argmax(scores, 1), scores.argmax(1))


def test_many_classes_use_torch_argmax_directly() -> None:
    scores = torch.randn(2, MAX_LOOP_CLASSES + 1, 4, 4)
    assert torch.equal(class_argmax(scores, 1), scores.argmax(1))
