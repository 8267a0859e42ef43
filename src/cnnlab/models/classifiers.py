"""Classifiers of the course: MLP, the MNIST-assignment CNN and its variants, a CIFAR net from scratch, transfer nets.

All return raw logits N x num_classes. Builders take (in_channels, num_classes, input_size, **params) with
explicit keyword params, so cnnlab.models.build_model can name an unknown key.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.transfer import build_transfer

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def _activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ConfigError(f"config key 'model.params.activation' must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def _check_dropout(p: float) -> float:
    if not 0 <= float(p) < 1:
        raise ConfigError(f"config key 'model.params.dropout' must be in [0, 1), got {p!r}")
    return float(p)


def build_mlp(in_channels: int, num_classes: int, input_size: tuple[int, int], hidden: list[int] | None = None,
              activation: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    """Fully connected baseline: flatten -> [Linear -> act (-> dropout)] per hidden size -> Linear."""
    sizes = [256, 128] if hidden is None else [int(h) for h in hidden]
    if any(h < 1 for h in sizes):
        raise ConfigError(f"config key 'model.params.hidden' must list positive sizes, got {hidden!r}")
    act, p = _activation(activation), _check_dropout(dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * input_size[0] * input_size[1]
    for h in sizes:
        layers += [nn.Linear(width, h), act()] + ([nn.Dropout(p)] if p else [])
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def build_course_cnn(in_channels: int, num_classes: int, input_size: tuple[int, int], pool_before_relu: bool = False,
                     activation: str = "relu", batchnorm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """The MNIST assignment's CNN: 8, 16, 32 3x3 convs (stride 1, pad 1), act, 2x2 max pool after the first two, FC."""
    act, p = _activation(activation), _check_dropout(dropout)
    h, w = input_size
    if h < 4 or w < 4:
        raise ConfigError(f"course_cnn needs inputs of at least 4x4 (two 2x2 pools), got {h}x{w}",
                          "set data.size to upsample")
    layers: list[nn.Module] = []
    cin = in_channels
    for i, cout in enumerate((8, 16, 32)):
        # BatchNorm cancels a conv bias, so the conv has none then (fewer, not different, functions).
        layers.append(nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(cout))
        pool = [nn.MaxPool2d(2)] if i < 2 else []
        # ReLU and tanh are monotonic, so max-pooling before them gives the same outputs on 4x fewer values:
        # the variant changes cost, not the function (a test checks this).
        layers += pool + [act()] if pool_before_relu else [act()] + pool
        cin = cout
    layers.append(nn.Flatten())
    if p:
        layers.append(nn.Dropout(p))
    layers.append(nn.Linear(32 * (h // 4) * (w // 4), num_classes))
    return nn.Sequential(*layers)


def _conv3x3(cin: int, cout: int, separable: bool) -> nn.Module:
    """A 3x3 conv, or its depthwise-separable factorisation (depthwise 3x3 then pointwise 1x1)."""
    if not separable:
        return nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False))


class ConvBlock(nn.Module):
    """Two conv-BN layers with ReLU; with residual=True the input is added back (1x1 projection if widths differ)."""

    def __init__(self, cin: int, cout: int, residual: bool, separable: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv3x3(cin, cout, separable), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                  _conv3x3(cout, cout, separable), nn.BatchNorm2d(cout))
        self.residual = residual
        self.skip = nn.Identity() if cin == cout or not residual else \
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.act(y + self.skip(x) if self.residual else y)


def build_cifar_net(in_channels: int, num_classes: int, input_size: tuple[int, int], width: int = 32,
                    depth: int = 2, stages: int = 3, residual: bool = True, separable: bool = False,
                    dropout: float = 0.0) -> nn.Sequential:
    """From-scratch CIFAR net: stem, `stages` stages of `depth` blocks (width doubling, max pool between), GAP, FC.

    Global average pooling makes the weights independent of the input size, so a net trained at 32x32 can be
    fine-tuned at a larger size from the same checkpoint.
    """
    if width < 1 or depth < 1 or stages < 1:
        raise ConfigError(f"cifar_net needs width, depth, stages >= 1, got {width}, {depth}, {stages}")
    p = _check_dropout(dropout)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                               nn.ReLU(inplace=True)]
    cin = width
    for s in range(stages):
        cout = width * 2 ** s
        for _ in range(depth):
            layers.append(ConvBlock(cin, cout, residual, separable))
            cin = cout
        if s < stages - 1:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()] + ([nn.Dropout(p)] if p else []) + [nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def _transfer_builder(arch: str):
    """A builder with the conventional signature for one torchvision architecture."""

    def build(in_channels: int, num_classes: int, input_size: tuple[int, int], weights: str | None = None,
              mode: str = "full", head: str = "torchvision", head_hidden: int = 256, head_dropout: float = 0.5,
              min_size: int = 32, normalize: bool = True, pretrained_lr_scale: float = 0.1) -> nn.Module:
        return build_transfer(arch, in_channels, num_classes, weights=weights, mode=mode, head=head,
                              head_hidden=head_hidden, head_dropout=head_dropout, min_size=min_size,
                              normalize=normalize, pretrained_lr_scale=pretrained_lr_scale)

    build.__name__ = f"build_{arch}"
    source = "timm" if arch == "efficientnet_lite0" else "torchvision"
    build.__doc__ = (f"{source} {arch}: weights none|imagenet|PATH; mode scratch|frozen|fc|top|full; "
                     "head torchvision|dense.")
    return build


CLASSIFIERS = {
    "mlp": build_mlp,
    "course_cnn": build_course_cnn,
    "cifar_net": build_cifar_net,
    "vgg16": _transfer_builder("vgg16"),
    "resnet18": _transfer_builder("resnet18"),
    "resnet34": _transfer_builder("resnet34"),
    "efficientnet_lite0": _transfer_builder("efficientnet_lite0"),  # timm; weights 'imagenet' = the pip package's file
}


def _unwrap_name(name: str) -> str:
    """Parameter names without torch.compile / DDP wrapper prefixes."""
    for prefix in ("_orig_mod.", "module."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _inner(model: nn.Module) -> nn.Module:
    while hasattr(model, "_orig_mod") or hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def param_groups(model: nn.Module, lr: float, encoder_lr_scale: float | None = None) -> list[dict]:
    """Optimizer groups: pre-trained trainable parameters at lr * scale, new ones at lr; frozen ones left out.

    The scale defaults to the model's `pretrained_lr_scale` (a transfer model param), else 1. Groups carry
    'lr_scale' so an LR schedule can set group['lr'] = lr_now * group['lr_scale'].
    """
    inner = _inner(model)
    pretrained = getattr(inner, "pretrained_param_names", set())
    scale = encoder_lr_scale if encoder_lr_scale is not None else getattr(inner, "pretrained_lr_scale", 1.0)
    old, new = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (old if _unwrap_name(name) in pretrained else new).append(p)
    # 'lr_scale' lets a schedule set each group's rate as schedule_lr * lr_scale without losing the ratio.
    groups = [{"params": new, "lr": lr, "lr_scale": 1.0, "name": "new"},
              {"params": old, "lr": lr * float(scale), "lr_scale": float(scale), "name": "pretrained"}]
    return [g for g in groups if g["params"]]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) learnable weights, as the assignments ask to report."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
