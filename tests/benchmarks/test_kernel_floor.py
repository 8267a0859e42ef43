"""The benchmarks' kernel floor strips exactly BatchNorm and ReLU and keeps every convolution's weights."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from cnnlab.models import build_model  # noqa: E402
from kernel_floor import floor_side, strip_layers  # noqa: E402


def test_floor_model_is_the_unet_without_batchnorm_and_relu():
    torch.manual_seed(0)
    m = build_model("unet", 3, 4, (32, 32), {"width": 4, "depth": 2})
    stripped = strip_layers(m)
    kinds = lambda net: [type(x) for x in net.modules()]  # noqa: E731
    assert nn.BatchNorm2d in kinds(m) and nn.ReLU in kinds(m)  # the original is left untouched
    assert nn.BatchNorm2d not in kinds(stripped) and nn.ReLU not in kinds(stripped)
    conv = (nn.Conv2d, nn.ConvTranspose2d)
    originals = [x for x in m.modules() if isinstance(x, conv)]
    kept = [x for x in stripped.modules() if isinstance(x, conv)]
    assert len(kept) == len(originals) == 13  # stem 2, down 2x2, up 2x(transposed + 2), head 1
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(originals, kept))
    x = torch.randn(1, 3, 32, 32)
    first = originals[0]  # the stem conv alone is now the model's first operation
    torch.testing.assert_close(stripped.stem[0](x), first(x))


def test_floor_side_trains_the_stripped_model_on_one_resident_batch():
    torch.manual_seed(0)
    m = build_model("unet", 3, 2, (16, 16), {"width": 2, "depth": 1})
    side = floor_side(m, (2, 3, 16, 16), "cpu")
    before = [p.detach().clone() for p in side.model.parameters()]
    out = side.run(2)
    assert out["images"] == 4 and out["data_seconds"] == 0.0 and out["seconds"] > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, side.model.parameters()))
    assert side.x.shape == (2, 3, 16, 16) and side.x.is_contiguous(memory_format=torch.channels_last)
