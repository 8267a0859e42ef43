"""Building blocks shared by the course networks."""
from __future__ import annotations

import torch
from torch import nn


def conv_bn_act(cin: int, cout: int, batchnorm: bool = True, k: int = 3, dilation: int = 1) -> nn.Sequential:
    """conv -> (BatchNorm) -> ReLU; the conv has no bias when BatchNorm follows (it would be cancelled)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation,
                                         bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU layers: the U-Net's unit at every level."""

    def __init__(self, cin: int, cout: int, batchnorm: bool = True, dropout: float = 0.0) -> None:
        layers = [conv_bn_act(cin, cout, batchnorm), conv_bn_act(cout, cout, batchnorm)]
        if dropout:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class Up(nn.Module):
    """Upsample x2 (transposed conv or bilinear + 1x1 conv), concatenate the skip, DoubleConv."""

    def __init__(self, cin: int, cskip: int, cout: int, mode: str, batchnorm: bool, dropout: float = 0.0) -> None:
        super().__init__()
        if mode == "transposed":
            self.up: nn.Module = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        else:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(cin, cin // 2, 1))
        self.conv = DoubleConv(cin // 2 + cskip, cout, batchnorm, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:  # odd input sizes: pad up to the skip's size
            dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            x = nn.functional.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))
