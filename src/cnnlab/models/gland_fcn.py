"""The MNIST-course CNN turned into a fully convolutional network for gland segmentation, with skip and residual
variants.

Encoder (the course CNN without its fully connected layers): 3x3 convolutions (padding 1) + ReLU with 8, 16, 32
channels (times `width`), 2x2 max pooling after every stage but the last; `depth` adds stages (64, 128, ...).
Decoder: transposed convolutions back to full size. Their kernel must be an integer multiple of their stride, so
every output pixel receives the same number of kernel taps (no checkerboard artefacts). Each up step is followed
by one 3x3 conv unit; with `skip` that unit also sees the encoder features of the same resolution (concatenated),
so the skip and no-skip networks differ only in that unit's input channels. A 1x1 convolution gives the logits.
`residual`: every 3x3 conv + ReLU unit becomes a block of `block_convs` conv + ReLU pairs with a residual bridge
(identity, or a 1x1 projection where the channel count changes); `residual: false` with `block_convs` 2 or 3 is
the same network without the bridges (the plain baseline for learning-speed comparisons).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.errors import ConfigError, did_you_mean

BASE_CHANNELS = 8
DEFAULTS = {"width": 1.0, "dropout": 0.0, "up_kernel": 4, "up_stride": 2, "skip": False,
            "residual": False, "block_convs": None, "depth": 3}


class ConvUnit(nn.Module):
    """`n` (3x3 conv + ReLU) pairs; with `residual` the input is added back before the last ReLU."""

    def __init__(self, cin: int, cout: int, n: int = 1, residual: bool = False) -> None:
        super().__init__()
        convs = [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(n)]
        self.convs = nn.ModuleList(convs)
        self.residual = residual
        # the bridge: identity where shapes agree, else a 1x1 projection (ResNet's option B)
        self.bridge = (nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, conv in enumerate(self.convs):
            y = conv(y)
            last = i == len(self.convs) - 1
            if last and self.bridge is not None:
                y = y + self.bridge(x)
            y = F.relu(y)
        return y


def up_padding(kernel: int, stride: int) -> tuple[int, int]:
    """(padding, output_padding) making ConvTranspose2d(kernel, stride) map H -> stride * H exactly."""
    extra = kernel - stride  # (H-1)*s - 2p + k + op = s*H  <=>  2p - op = k - s
    padding = (extra + 1) // 2
    return padding, 2 * padding - extra


class CourseFCN(nn.Module):
    """Encoder-decoder FCN; inputs of any size are zero-padded to a multiple of the total stride, then cropped."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, width: float, dropout: float,
                 up_kernel: int, up_stride: int, skip: bool, residual: bool, block_convs: int) -> None:
        super().__init__()
        chans = [max(1, round(BASE_CHANNELS * width * 2 ** i)) for i in range(depth)]
        unit = lambda cin, cout: ConvUnit(cin, cout, block_convs, residual)  # noqa: E731
        self.encoder = nn.ModuleList([unit(in_channels if i == 0 else chans[i - 1], chans[i]) for i in range(depth)])
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.levels_per_up = int(round(math.log2(up_stride)))
        self.factor = 2 ** (depth - 1)
        self.skip = skip
        pad, out_pad = up_padding(up_kernel, up_stride)
        self.ups, self.fuse = nn.ModuleList(), nn.ModuleList()
        level = depth - 1
        while level > 0:
            target = level - self.levels_per_up
            self.ups.append(nn.ConvTranspose2d(chans[level], chans[target], up_kernel, up_stride, pad, out_pad))
            self.fuse.append(unit(2 * chans[target] if skip else chans[target], chans[target]))
            level = target
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.factor, (-w) % self.factor
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        features = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            features.append(x)
            if i < len(self.encoder) - 1:
                x = self.drop(F.max_pool2d(x, 2))
        x = self.drop(x)
        level = len(self.encoder) - 1
        for up, fuse in zip(self.ups, self.fuse):
            level -= self.levels_per_up
            x = F.relu(up(x))
            if self.skip:
                x = torch.cat([x, features[level]], dim=1)
            x = fuse(x)
        return self.head(x)[..., :h, :w]


def _params(params: dict) -> dict:
    """Merge with defaults, refusing unknown keys and values the architecture cannot honour."""
    for key in params:
        if key not in DEFAULTS:
            raise ConfigError(f"unknown course_fcn parameter 'model.params.{key}'", did_you_mean(key, DEFAULTS))
    p = {**DEFAULTS, **params}
    if p["block_convs"] is None:
        p["block_convs"] = 2 if p["residual"] else 1
    checks = [
        (isinstance(p["width"], (int, float)) and p["width"] > 0, "width", "must be > 0"),
        (isinstance(p["dropout"], (int, float)) and 0 <= p["dropout"] < 1, "dropout", "must be in [0, 1)"),
        (isinstance(p["depth"], int) and 2 <= p["depth"] <= 7, "depth", "must be an integer 2..7"),
        (isinstance(p["skip"], bool), "skip", "must be true or false"),
        (isinstance(p["residual"], bool), "residual", "must be true or false"),
        (p["block_convs"] in ((2, 3) if p["residual"] else (1, 2, 3)), "block_convs",
         "must be 2 or 3 with residual (a bridge around one conv is not a block), else 1, 2 or 3"),
        (isinstance(p["up_stride"], int) and p["up_stride"] >= 2 and p["up_stride"] & (p["up_stride"] - 1) == 0,
         "up_stride", "must be a power of two >= 2 (the encoder halves the size at each pooling)"),
        (isinstance(p["up_kernel"], int) and p["up_kernel"] >= 1, "up_kernel", "must be a positive integer"),
    ]
    for ok, key, msg in checks:
        if not ok:
            raise ConfigError(f"config key 'model.params.{key}' {msg}, got {p[key]!r}")
    k, s = p["up_kernel"], p["up_stride"]
    if k % s:
        raise ConfigError(f"config key 'model.params.up_kernel' must be an integer multiple of "
                          f"model.params.up_stride, got up_kernel={k}, up_stride={s}",
                          f"use {s}, {2 * s} or {3 * s} (unequal overlap of transposed-conv taps makes "
                          "checkerboard artefacts)")
    levels = int(math.log2(s))
    if (p["depth"] - 1) % levels:
        raise ConfigError(f"config key 'model.params.up_stride' ({s}) cannot undo the encoder's "
                          f"{2 ** (p['depth'] - 1)}x downsampling (depth={p['depth']}) in whole steps",
                          f"pick up_stride 2, or a depth with (depth - 1) a multiple of {levels}")
    return p


def build_course_fcn(in_channels: int, num_classes: int, input_size: tuple[int, int], **params) -> nn.Module:
    """The course CNN as an FCN; params: width, dropout, up_kernel, up_stride, skip, residual, block_convs, depth."""
    p = _params(params)
    return CourseFCN(in_channels, num_classes, p["depth"], float(p["width"]), float(p["dropout"]),
                     p["up_kernel"], p["up_stride"], p["skip"], p["residual"], p["block_convs"])


GLAND_MODELS = {"course_fcn": build_course_fcn}
