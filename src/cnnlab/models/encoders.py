"""torchvision backbones as encoders (image -> feature maps at strides 2..32), and encoder freezing shared by models.

Final pooling and fully connected layers are dropped: a segmentation decoder needs spatial maps, and the
classifier head of ImageNet is of no use for pixels. Weights (none | imagenet | a local file) are checked key by
key against torchvision's model; fc./classifier. entries of a full torchvision state dict are accepted and dropped.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from cnnlab.errors import CnnlabError, ConfigError, did_you_mean
from cnnlab.models.backbone import IMAGENET_MEAN, IMAGENET_STD, BackboneEncoder
from cnnlab.models.efficientnet import lite0_encoder, lite1_encoder, lite2_encoder
from cnnlab.models.weights import pretrained_state

HEAD_PREFIXES = ("fc.", "classifier.")  # classification heads: optional in a weights file, never used


def _type_ok(value: Any, default: Any) -> bool:
    """Whether a recipe value fits the type of a builder default (bools are not ints; ints are floats)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def check_params(model: str, params: dict, defaults: dict[str, Any]) -> dict[str, Any]:
    """Builder params over defaults; an unknown key or a wrong type is a ConfigError naming model.params.<key>."""
    for key in params:
        if key not in defaults:
            raise ConfigError(f"unknown model.params key '{key}' for {model}", did_you_mean(key, defaults))
    out = dict(defaults)
    for key, value in params.items():
        if not _type_ok(value, defaults[key]):
            want = type(defaults[key]).__name__
            raise ConfigError(f"model.params.{key} for {model} must be a {want}, got {value!r}")
        out[key] = float(value) if isinstance(defaults[key], float) else value
    return out


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """First conv for other than 3 input channels: RGB filters averaged, then spread evenly over the new inputs."""
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.mean(1, keepdim=True).repeat(1, in_channels, 1, 1) * 3 / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _load_backbone_state(model: nn.Module, arch: str, weights: str | None) -> None:
    """Pretrained weights into a torchvision model; mismatched files fail with one line naming what differs."""
    state = pretrained_state(arch, weights)
    if state is None:
        return
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}  # heads are never used
    own = model.state_dict()
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            raise CnnlabError(f"{weights}: '{key}' has shape {tuple(tensor.shape)}, expected {tuple(own[key].shape)}",
                              f"the file is not for torchvision's {arch}")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(HEAD_PREFIXES)]
    if missing or result.unexpected_keys:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {result.unexpected_keys[:3]}"
        raise CnnlabError(f"{weights}: not a torchvision {arch} state dict ({detail})",
                          f"save torchvision.models.{arch}().state_dict()")


def resnet34_encoder(in_channels: int = 3, weights: str | None = None) -> BackboneEncoder:
    """ResNet34 without avgpool/fc: stem /2 64, layer1 /4 64, layer2 /8 128, layer3 /16 256, layer4 /32 512."""
    import torchvision

    net = torchvision.models.resnet34(weights=None)
    _load_backbone_state(net, "resnet34", weights)
    conv1 = net.conv1 if in_channels == 3 else _adapt_first_conv(net.conv1, in_channels)
    stages = [nn.Sequential(conv1, net.bn1, net.relu), nn.Sequential(net.maxpool, net.layer1),
              net.layer2, net.layer3, net.layer4]
    return BackboneEncoder(stages, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32])


def vgg16_encoder(in_channels: int = 3, weights: str | None = None) -> BackboneEncoder:
    """VGG16 features without avgpool/classifier, cut after each max pool: /2 64, /4 128, /8 256, /16 512, /32 512."""
    from torchvision.models.vgg import cfgs, make_layers

    # only the conv part is built: torchvision's 120M-parameter classifier would be made and thrown away;
    # a holder with a 'features' attribute keeps torchvision's state-dict keys (features.0.weight ...)
    net = nn.Module()
    net.features = make_layers(cfgs["D"], batch_norm=False)
    for m in net.features.modules():
        if isinstance(m, nn.Conv2d):  # torchvision's VGG init
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    _load_backbone_state(net, "vgg16", weights)
    layers = list(net.features)
    if in_channels != 3:
        layers[0] = _adapt_first_conv(layers[0], in_channels)
    cuts = [i + 1 for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    stages = [nn.Sequential(*layers[a:b]) for a, b in zip([0, *cuts[:-1]], cuts)]
    return BackboneEncoder(stages, [64, 128, 256, 512, 512], [2, 4, 8, 16, 32])


ENCODERS = {"resnet34": resnet34_encoder, "vgg16": vgg16_encoder, "efficientnet_lite0": lite0_encoder,
            "efficientnet_lite1": lite1_encoder, "efficientnet_lite2": lite2_encoder}


def keep_frozen_batchnorm_in_eval(module: nn.Module) -> None:
    """BatchNorm layers whose parameters are all frozen stop updating their running statistics too."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


class EncoderDecoder(nn.Module):
    """Base of the segmentation models here: an `encoder` submodule that can be frozen (weights and BN statistics)."""

    encoder: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.encoder_locked = False  # frozen for the whole run by the builder's freeze_encoder param

    def encoder_frozen(self) -> bool:
        """True when no encoder parameter is trained (by set_encoder_trainable or the engine's schedule)."""
        params = list(self.encoder.parameters())
        return bool(params) and not any(p.requires_grad for p in params)

    def encoder_modules(self) -> list[nn.Module]:
        """What the engine may freeze and unfreeze on its schedule (model.freeze_encoder_epochs).

        A locked encoder is not offered: the engine sets trainability every epoch (trainable once the
        schedule's epochs are over, i.e. at once when it is 0), which would silently undo freeze_encoder.
        """
        return [] if self.encoder_locked else [self.encoder]

    def train(self, mode: bool = True) -> "EncoderDecoder":
        """Frozen encoder parts stay in eval mode, so their BatchNorm running statistics do not drift either."""
        super().train(mode)
        if mode and self.encoder_frozen():
            self.encoder.eval()
        elif mode:
            keep_frozen_batchnorm_in_eval(self.encoder)
        return self


def encoder_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The encoder's parameters (e.g. for a smaller learning rate or freezing)."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ConfigError(f"model {type(model).__name__} has no separate encoder to freeze",
                          "use an encoder-decoder model (fcn_*, unet_paper)")
    return encoder.parameters()


def set_encoder_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (False) or unfreeze the encoder: requires_grad, and BatchNorm in eval mode while frozen."""
    for p in encoder_parameters(model):
        p.requires_grad_(trainable)
    model.train(model.training)  # EncoderDecoder.train re-applies the BatchNorm rule
    if not trainable and not isinstance(model, EncoderDecoder) and model.training:
        model.encoder.eval()


def weights_normalize(x: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN,
                      std: tuple[float, ...] = IMAGENET_STD) -> torch.Tensor:
    """[0, 1] input -> what pretrained filters expect; a grey channel gets the channel-averaged statistics."""
    if x.shape[1] != len(mean):
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


ENCODER_MODES = ("full", "top", "frozen")  # as the classifiers' transfer modes: all, the stride-32 stage, none


def encoder_mode(name: str, p: dict) -> str:
    """The checked encoder policy of an encoder-decoder's params (freeze_encoder: true is the old word for frozen)."""
    mode = "frozen" if p["freeze_encoder"] else p["encoder_mode"]
    if mode not in ENCODER_MODES:
        raise ConfigError(f"model.params.encoder_mode for {name} must be one of {', '.join(ENCODER_MODES)}, "
                          f"got {mode!r}")
    return mode


def apply_encoder_policy(model: nn.Module, encoder: BackboneEncoder, mode: str, lr_scale: float) -> nn.Module:
    """One rule for every encoder-decoder: which encoder weights train (full | top | frozen) and at what LR scale."""
    # the encoder learns at lr * encoder_lr_scale (engine.fit.param_groups), the new decoder at lr
    model.pretrained_param_names = {f"encoder.{n}" for n, _ in encoder.named_parameters()}
    model.pretrained_lr_scale = lr_scale
    if mode != "full":
        set_encoder_trainable(model, False)
        if mode == "top":
            encoder.top_stage().requires_grad_(True)
        model.encoder_locked = True
        model.train(model.training)
    return model
