"""The U-Net of Ronneberger, Fischer & Brox (2015), adapted to 224x224 inputs.

Kept from the paper: the contracting path of double 3x3 conv + ReLU stages with 2x2 max pooling, channels
doubling from the base width (64 in the paper) to 16x at the bottom, dropout at the end of the contracting
path, an expanding path that halves channels on each upsampling step and concatenates the matching
contracting features, and a final 1x1 conv to the classes.
Adapted: 3x3 convs are padded, so the output has the input's size and no cropping of skips or overlap-tile
input is needed (the paper's valid convs turn 572 px into 388 px); BatchNorm after each conv (optional,
on by default: it makes from-scratch training with Adam reliable at small batch sizes; the paper had none);
upsampling is either the paper's 'up-convolution' (a 2x2 transposed conv, stride 2) or bilinear upsampling
followed by a 3x3 conv (the paper's 2x2 conv after upsampling is asymmetric once padded; 3x3 is centred).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.encoders import EncoderDecoder, check_params
from cnnlab.models.fcn import check_input_size

UPSAMPLING = ("transposed", "bilinear")


def double_conv(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    """Two padded 3x3 conv + (BatchNorm) + ReLU: one U-Net stage."""
    layers: list[nn.Module] = []
    for c in (cin, cout):
        layers += [nn.Conv2d(c, cout, 3, padding=1, bias=not batch_norm)]
        layers += [nn.BatchNorm2d(cout)] if batch_norm else []
        layers += [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def up_step(cin: int, cout: int, upsampling: str) -> nn.Module:
    """x2 upsampling that halves channels: transposed 2x2 conv, or bilinear + 3x3 conv."""
    if upsampling == "transposed":
        return nn.ConvTranspose2d(cin, cout, 2, stride=2)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(cin, cout, 3, padding=1))


class UNetPaper(EncoderDecoder):
    """Contracting path (the `encoder`: stages plus bottom) and expanding path with concatenated skips."""

    def __init__(self, in_channels: int, num_classes: int, base_width: int, depth: int, upsampling: str,
                 batch_norm: bool, dropout: float) -> None:
        super().__init__()
        chans = [base_width * 2 ** i for i in range(depth + 1)]  # paper: 64, 128, 256, 512, 1024
        self.encoder = nn.ModuleList([double_conv(cin, cout, batch_norm)
                                      for cin, cout in zip([in_channels, *chans[:-1]], chans)])
        self.dropout = nn.Dropout2d(dropout)  # paper: 'drop-out layers at the end of the contracting path'
        self.ups = nn.ModuleList([up_step(chans[i + 1], chans[i], upsampling) for i in reversed(range(depth))])
        self.decoder = nn.ModuleList([double_conv(2 * chans[i], chans[i], batch_norm) for i in reversed(range(depth))])
        self.classifier = nn.Conv2d(chans[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):  # the paper's init: He-normal
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = self.dropout(skips.pop())
        for up, stage in zip(self.ups, self.decoder):
            skip = skips.pop()
            x = up(x)
            # pooling floors odd sizes: pad the upsampled map back to its skip (a no-op for 224 = 14 * 2^4)
            dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            if dh or dw:
                x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
            x = stage(torch.cat([skip, x], dim=1))
        return self.classifier(x)


def build_unet_paper(in_channels: int, num_classes: int, input_size: tuple[int, int], **params) -> nn.Module:
    """U-Net 2015; params: base_width (64 in the paper), depth (4 poolings), upsampling (transposed|bilinear),
    batch_norm, dropout (0.5 at the bottom in the paper)."""
    defaults = {"base_width": 64, "depth": 4, "upsampling": "transposed", "batch_norm": True, "dropout": 0.5}
    p = check_params("unet_paper", params, defaults)
    if p["upsampling"] not in UPSAMPLING:
        raise ConfigError(f"model.params.upsampling for unet_paper must be one of {', '.join(UPSAMPLING)}, "
                          f"got {p['upsampling']!r}")
    if not 0 <= p["dropout"] < 1:
        raise ConfigError(f"model.params.dropout for unet_paper must be in [0, 1), got {p['dropout']!r}")
    if p["depth"] < 1 or p["base_width"] < 1:
        raise ConfigError("model.params.depth and base_width for unet_paper must be >= 1")
    check_input_size("unet_paper", input_size, 2 ** p["depth"])
    return UNetPaper(in_channels, num_classes, p["base_width"], p["depth"], p["upsampling"], p["batch_norm"],
                     p["dropout"])


SEGMENTATION_MODELS_UNET_PAPER = {"unet_paper": build_unet_paper}
