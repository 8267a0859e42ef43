"""Colorization -> segmentation weight transfer loads exactly the tensors whose name and shape match."""
from __future__ import annotations

import torch

from cnnlab.models import build_model
from cnnlab.models.weights import load_compatible


def test_transfer_loads_exactly_the_compatible_tensors():
    torch.manual_seed(0)
    color = build_model("unet", 1, 3, (32, 32), {"width": 4, "depth": 2})   # grey in, RGB out
    seg = build_model("unet", 3, 8, (32, 32), {"width": 4, "depth": 2})     # RGB in, 8 classes out
    before = {k: v.clone() for k, v in seg.state_dict().items()}
    src = color.state_dict()
    report = load_compatible(seg, src)
    differ = {"stem.0.0.weight", "head.weight", "head.bias"}  # first conv (1 vs 3 channels) and the 1x1 head
    assert set(report["loaded"]) == set(src) - differ
    assert {m.split(" ")[0] for m in report["shape_mismatch"]} == differ
    after = seg.state_dict()
    for k in src:
        expected = src[k] if k not in differ else before[k]
        assert torch.equal(after[k], expected), k
    assert report["not_in_source"] == [] and report["not_in_model"] == []
