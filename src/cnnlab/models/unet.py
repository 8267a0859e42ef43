"""The course's simplified U-Net: configurable width, depth and BatchNorm; 1x1 head, one channel per class."""
from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.blocks import DoubleConv, Up


class UNet(nn.Module):
    """Encoder of DoubleConv + max-pool levels, symmetric decoder with skip concatenation."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, depth: int = 4, batchnorm: bool = True,
                 upsampling: str = "transposed", dropout: float = 0.0) -> None:
        super().__init__()
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, chans[0], batchnorm)
        self.down = nn.ModuleList(DoubleConv(chans[i], chans[i + 1], batchnorm, dropout if i == depth - 1 else 0.0)
                                  for i in range(depth))
        self.up = nn.ModuleList(Up(chans[i + 1], chans[i], chans[i], upsampling, batchnorm)
                                for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def encoder_modules(self) -> list[nn.Module]:
        """The layers colorization pre-training shapes most (frozen first when fine-tuning)."""
        return [self.stem, *self.down]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(self.pool(skips[-1])))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)


def build_unet(in_channels: int, num_classes: int, input_size: tuple[int, int] = (256, 256), width: int = 16,
               depth: int = 4, batchnorm: bool = True, upsampling: str = "transposed",
               dropout: float = 0.0) -> UNet:
    """Course U-Net; input sides should be divisible by 2**depth (odd sizes are padded in the decoder)."""
    if upsampling not in ("transposed", "bilinear"):
        raise ConfigError(f"model.params.upsampling must be 'transposed' or 'bilinear', got {upsampling!r}")
    if width < 1 or not 1 <= depth <= 6:
        raise ConfigError(f"model.params width={width}, depth={depth}: need width >= 1 and depth in 1..6")
    if min(input_size) < 2 ** depth:
        raise ConfigError(f"model.params.depth={depth} halves the input {depth} times; "
                          f"input {input_size[0]}x{input_size[1]} is too small", "lower depth or enlarge data.size")
    return UNet(in_channels, num_classes, width, depth, batchnorm, upsampling, dropout)


UNET_MODELS = {"unet": build_unet}
