"""A sweep over every model in the MODELS registry (as timm checks every registered model): forward and backward at
two input sizes, the output shape of its task, a finite gradient for every trainable parameter, channels-last input
computing the same function, and a state-dict round trip that reproduces the outputs bit for bit.

Parametrised by registry name, so a newly registered model is swept without touching this file: it gets the
default sizes of its kind and its builder's default params. TINY only shrinks widths (the structure stays the
registry default) and SIZES only narrows sizes where a builder refuses the default ones.

Why these sizes: a segmentation model must give one logit per class at every pixel of any input its builder
accepts, so each is run at 32x32 (the smallest that all stride-32 encoders accept) and at 33x47 (odd, non-square:
U-Nets pad, FCNs resize, EfficientNet pads 'same'; a recipe's data.size may be any of these). Classifiers run at
their minimum size (4x4: the course CNN's two 2x2 pools; the transfer nets upsample small inputs to 32 px inside)
and at 5x7. The second size also takes one grey input channel, the path every grey data set uses.

No network: every builder's default weights are 'none' (ImageNet weights are never fetched: `no_network` makes a
connection attempt fail the test), so the larger encoders (EfficientNet-Lite1/2, whose weights are the optional
extra cnnlab[larger-encoders]) build from timm, a default dependency, and need no skip.
"""
from __future__ import annotations

import copy
import io
import socket

import pytest
import torch
from torch import nn

from cnnlab.models import MODELS, build_model
from cnnlab.models.classifiers import CLASSIFIERS

NUM_CLASSES = 3
BATCH = 2
TINY: dict[str, dict] = {  # the smallest width a builder takes; structure (depth, stages, strides) as registered
    "unet": {"width": 2},
    "unet_paper": {"base_width": 2},
    "fcn_baseline": {"width": 2},
    "fcn_custom": {"width": 4},
    "fcn_resnet34": {"decoder_width": 4},
    "fcn_vgg16": {"decoder_width": 4},
    "fcn_efficientnet_lite0": {"decoder_width": 4},
    "fcn_efficientnet_lite1": {"decoder_width": 4},
    "fcn_efficientnet_lite2": {"decoder_width": 4},
    "unet_efficientnet_lite0": {"decoder_widths": [4, 4, 4, 4]},
    "unet_efficientnet_lite1": {"decoder_widths": [4, 4, 4, 4]},
    "unet_efficientnet_lite2": {"decoder_widths": [4, 4, 4, 4]},
    "course_fcn": {"width": 0.5},
    "mlp": {"hidden": [8]},
    "cifar_net": {"width": 4, "depth": 1},
    # torchvision's VGG16 head is a 120M-parameter classifier (2 s per build and step on one core); the dense head
    # keeps the same convolutional body, and the torchvision-head path (last Linear replaced) is resnet18/34's
    "vgg16": {"head": "dense", "head_hidden": 8},
}
SEGMENTATION_SIZES = ((32, 32), (33, 47))
CLASSIFIER_SIZES = ((4, 4), (5, 7))
SIZES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}  # per-model exceptions (none needed today)
SLOW: set[str] = set()  # models too costly for the quick suite (marked slow; none today)
UNUSED: dict[str, set[str]] = {}  # trainable parameters a model legitimately leaves without a gradient (none today)


def is_classifier(name: str) -> bool:
    """Classifiers give N x classes logits; every other registered model is dense (N x classes x H x W)."""
    return name in CLASSIFIERS


def sizes_of(name: str) -> tuple[tuple[int, int], tuple[int, int]]:
    return SIZES.get(name, CLASSIFIER_SIZES if is_classifier(name) else SEGMENTATION_SIZES)


def names() -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(MODELS)]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a registered model must never download: any connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model builder tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def build(name: str, size: tuple[int, int], in_channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, in_channels, NUM_CLASSES, size, TINY.get(name))


def expected_shape(name: str, size: tuple[int, int]) -> tuple[int, ...]:
    return (BATCH, NUM_CLASSES) if is_classifier(name) else (BATCH, NUM_CLASSES, *size)


def inputs(size: tuple[int, int], in_channels: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(BATCH, in_channels, *size, generator=torch.Generator().manual_seed(seed))


def trained_once(name: str, size: tuple[int, int], x: torch.Tensor, seed: int = 0) -> nn.Module:
    """A model after one training-mode forward: BatchNorm running statistics are then not their initial values,
    so the eval-mode checks below see buffers that a state dict must carry."""
    model = build(name, size, x.shape[1], seed)
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def test_every_registered_model_is_swept_by_kind():
    """The tables above name only registered models (a renamed model must not leave a stale entry behind)."""
    for table in (TINY, SIZES, UNUSED):
        assert set(table) <= set(MODELS), set(table) - set(MODELS)
    assert SLOW <= set(MODELS)
    assert {n for n in MODELS if is_classifier(n)} == set(CLASSIFIERS)


@pytest.mark.parametrize("name", names())
def test_forward_and_backward_at_two_sizes(name: str):
    """Output shape of the task at both sizes, and a finite gradient in every trainable parameter (a random
    projection of the output is back-propagated: a plain sum would give zero gradients through BatchNorm)."""
    for size, in_channels in zip(sizes_of(name), (3, 1)):
        model = build(name, size, in_channels).train()
        out = model(inputs(size, in_channels))
        assert out.shape == expected_shape(name, size) and out.dtype == torch.float32, (size, in_channels)
        assert torch.isfinite(out).all()
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert trainable, "no trainable parameter"
        missing = {n for n, p in trainable.items() if p.grad is None} - UNUSED.get(name, set())
        assert not missing, f"{size}: no gradient for {sorted(missing)[:5]}"
        bad = [n for n, p in trainable.items() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"{size}: non-finite gradient in {bad[:5]}"
        assert any(p.grad.abs().sum() > 0 for p in trainable.values() if p.grad is not None)


@pytest.mark.parametrize("name", names())
def test_channels_last_input_computes_the_same_output(name: str):
    """The engine's train.channels_last puts model and input in channels-last memory: the same function, up to
    float32 summation order (other conv kernels): rtol and atol 1e-4 (measured: at most 7e-6 over the registry)."""
    size = sizes_of(name)[1]
    x = inputs(size)
    model = trained_once(name, size, x)
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
        out = fast(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", names())
def test_state_dict_round_trip_reproduces_the_outputs_bit_for_bit(name: str):
    """torch.save of the state dict into memory, loaded into a freshly built model (other seed, so other weights
    until loaded): eval-mode outputs identical, running statistics included."""
    size = sizes_of(name)[0]
    x = inputs(size)
    model = trained_once(name, size, x)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    fresh = build(name, size, seed=1).eval()
    with torch.no_grad():
        ref, before = model(x), fresh(x)
        assert not torch.equal(before, ref), "a fresh model computes the same outputs: the round trip proves nothing"
        buffer.seek(0)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        assert torch.equal(fresh(x), ref)
