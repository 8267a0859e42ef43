"""Transfer-learning classifiers on torchvision's VGG16 / ResNet and timm's EfficientNet-Lite0, with freezing policies.

Modes (which parameters train):
  scratch  random initialisation, everything trains (weights must be none)
  frozen   everything frozen except the freshly initialised last layer (or dense head): feature extraction
  fc       every fully connected layer trains (VGG: the whole classifier; ResNet: only fc exists)
  top      the top convolutional block (VGG block 5, ResNet layer4, EfficientNet's stride-32 blocks and head conv)
           plus the fully connected layers
  full     everything trains (fine-tuning when weights are given)
The last layer is always new (sized for num_classes). Parameters that came from a weights file are listed
in `pretrained_param_names`, so param_groups() can give them a lower learning rate than the new head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.errors import CnnlabError, ConfigError, did_you_mean
from cnnlab.models import efficientnet
from cnnlab.models.encoders import keep_frozen_batchnorm_in_eval
from cnnlab.models.weights import pretrained_state

MODES = ("scratch", "frozen", "fc", "top", "full")
HEADS = ("torchvision", "dense")


@dataclass(frozen=True)
class Arch:
    """Where the parts of a torchvision classifier live, by state-dict prefix."""

    last: str        # the final Linear, replaced for num_classes
    fc_region: str   # all fully connected layers
    head_attr: str   # the attribute a dense head replaces
    head_in: int     # features entering the head after global pooling


ARCHS = {
    "vgg16": Arch(last="classifier.6", fc_region="classifier", head_attr="classifier", head_in=512),
    "resnet18": Arch(last="fc", fc_region="fc", head_attr="fc", head_in=512),
    "resnet34": Arch(last="fc", fc_region="fc", head_attr="fc", head_in=512),
    "efficientnet_lite0": Arch(last="classifier", fc_region="classifier", head_attr="classifier", head_in=1280),
}


class InputAdapter(nn.Module):
    """Makes course-sized inputs fit an ImageNet network: grey -> 3 channels, the weights' mean/std, upsampling."""

    def __init__(self, in_channels: int, min_size: int, mean: list[float] | None, std: list[float] | None) -> None:
        super().__init__()
        self.grey = in_channels == 1
        self.min_size = int(min_size)
        self.normalize = mean is not None
        # Not persistent: checkpoints stay loadable whatever the normalisation setting.
        self.register_buffer("mean", torch.tensor(mean or [0.0] * 3).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or [1.0] * 3).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grey:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize:
            # Before upsampling: per-channel affine maps commute with bilinear interpolation, and it is cheaper.
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            scale = self.min_size / min(h, w)
            x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)
        return x


class TransferClassifier(nn.Module):
    """adapter -> torchvision network; frozen BatchNorm layers stay in eval mode while training."""

    def __init__(self, adapter: InputAdapter, net: nn.Module, pretrained_names: set[str], lr_scale: float) -> None:
        super().__init__()
        self.adapter = adapter
        self.net = net
        self.pretrained_param_names = {f"net.{n}" for n in pretrained_names}
        self.pretrained_lr_scale = float(lr_scale)
        # The adapter applies the weights' own mean/std: the engine must feed plain [0, 1] images.
        self.normalizes_input = adapter.normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapter(x))

    def train(self, mode: bool = True) -> "TransferClassifier":
        """Frozen BatchNorm keeps its (pre-trained) running statistics: feature extraction must not drift."""
        super().train(mode)
        if mode:
            keep_frozen_batchnorm_in_eval(self)
        return self


def _dense_head(in_features: int, hidden: int, dropout: float, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


def _skeleton(arch: str, head: str, num_classes: int, hidden: int, dropout: float) -> nn.Module:
    """The network on the meta device (no memory, no init cost), last layer / head already replaced."""
    import torchvision

    spec = ARCHS[arch]
    with torch.device("meta"):
        net = efficientnet.reference_network() if arch == "efficientnet_lite0" else \
            getattr(torchvision.models, arch)(weights=None)
        if head == "dense":
            if arch == "vgg16":
                net.avgpool = nn.AdaptiveAvgPool2d(1)  # 512 features, not VGG's 7x7x512 copies
            setattr(net, spec.head_attr, _dense_head(spec.head_in, hidden, dropout, num_classes))
        else:
            parent_name, _, child = spec.last.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            old = getattr(parent, child) if not child.isdigit() else parent[int(child)]
            new = nn.Linear(old.in_features, num_classes)
            if child.isdigit():
                parent[int(child)] = new
            else:
                setattr(parent, child, new)
    return net


def _init_module(m: nn.Module, arch: str) -> None:
    """torchvision's own initialisation for these architectures (meta-built modules have none)."""
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.reset_parameters()  # weight 1, bias 0, running statistics reset
    elif isinstance(m, nn.Linear):
        if arch == "vgg16":
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
        else:
            m.reset_parameters()


def _load_pretrained(net: nn.Module, state: dict[str, torch.Tensor], fresh: str, source: str, arch: str) -> set[str]:
    """Copy every non-fresh tensor from state (strictly: all present, all shapes equal); return their names."""
    if state and all(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items()}  # a TransferClassifier's own state dict
    own = net.state_dict()
    needed = [k for k in own if not k.startswith(fresh + ".")]
    missing = [k for k in needed if k not in state]
    if missing:
        raise CnnlabError(f"{source}: lacks {len(missing)} of the {len(needed)} tensors {arch} needs "
                          f"(e.g. '{missing[0]}')",
                          f"pass a {arch} state dict in torchvision's naming")
    for k in needed:
        if state[k].shape != own[k].shape:
            raise CnnlabError(f"{source}: '{k}' has shape {tuple(state[k].shape)}, {arch} needs {tuple(own[k].shape)}")
    net.load_state_dict({k: state[k] for k in needed}, strict=False)
    params = {n for n, _ in net.named_parameters()}
    return {k for k in needed if k in params}


def _top_block_prefixes(net: nn.Module, arch: str) -> list[str]:
    """VGG: layers after the fourth max pool (block 5); ResNet: layer4; EfficientNet: stride-32 blocks, head conv."""
    if arch == "efficientnet_lite0":
        a, b = efficientnet.stage_bounds(net)[-1]
        return [f"blocks.{i}." for i in range(a, b)] + ["conv_head.", "bn2."]
    if arch != "vgg16":
        return ["layer4."]
    pools = [i for i, m in enumerate(net.features) if isinstance(m, nn.MaxPool2d)]
    return [f"features.{i}." for i in range(pools[-2] + 1, len(net.features))]


def trainable_prefixes(net: nn.Module, arch: str, mode: str, head: str) -> list[str]:
    """State-dict prefixes (inside the torchvision net) whose parameters train in this mode."""
    spec = ARCHS[arch]
    fresh = [(spec.head_attr if head == "dense" else spec.last) + "."]
    if mode in ("scratch", "full"):
        return [""]
    if mode == "frozen":
        return fresh
    if mode == "fc":
        return fresh + [spec.fc_region + "."]
    return fresh + [spec.fc_region + "."] + _top_block_prefixes(net, arch)


def apply_mode(model: TransferClassifier, arch: str, mode: str, head: str = "torchvision") -> None:
    """Set requires_grad for a mode; callable again to switch modes (e.g. unfreeze after some epochs)."""
    if mode not in MODES:
        raise ConfigError(f"config key 'model.params.mode' got unknown mode {mode!r}", did_you_mean(mode, MODES))
    prefixes = trainable_prefixes(model.net, arch, mode, head)
    for name, p in model.net.named_parameters():
        p.requires_grad_(any(name.startswith(pre) for pre in prefixes))
    model.train(model.training)  # re-apply the frozen-BatchNorm rule


def build_transfer(arch: str, in_channels: int, num_classes: int, weights: str | None = None, mode: str = "full",
                   head: str = "torchvision", head_hidden: int = 256, head_dropout: float = 0.5,
                   min_size: int = 32, normalize: bool = True, pretrained_lr_scale: float = 0.1) -> TransferClassifier:
    """A torchvision classifier with new last layer, input adapter and a freezing mode."""
    import torchvision

    if mode not in MODES:
        raise ConfigError(f"config key 'model.params.mode' got unknown mode {mode!r}", did_you_mean(mode, MODES))
    if head not in HEADS:
        raise ConfigError(f"config key 'model.params.head' must be one of {', '.join(HEADS)}, got {head!r}")
    if in_channels not in (1, 3):
        raise ConfigError(f"{arch} takes 1 (grey, repeated) or 3 input channels, the data have {in_channels}")
    no_weights = weights in (None, "", "none", "random")
    if mode == "scratch" and not no_weights:
        raise ConfigError(f"model.params.mode 'scratch' trains from random weights, but weights is {weights!r}",
                          "set weights: none, or mode: full to fine-tune the weights")
    lite0 = arch == "efficientnet_lite0"
    state = None if no_weights else efficientnet.imagenet_state(weights) if lite0 else pretrained_state(arch, weights)
    net = _skeleton(arch, head, num_classes, head_hidden, head_dropout).to_empty(device="cpu")
    fresh = ARCHS[arch].head_attr if head == "dense" else ARCHS[arch].last
    loaded = set() if state is None else _load_pretrained(net, state, fresh, str(weights), arch)
    for name, m in net.named_modules():
        if state is None or name == fresh or name.startswith(fresh + "."):
            _init_module(m, arch)
    if state is None:
        for m in net.modules():  # running stats live in buffers, which to_empty left uninitialised
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
    if lite0:
        mean, std = list(efficientnet.MEAN), list(efficientnet.STD)
    else:
        stats = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        mean, std = list(stats.mean), list(stats.std)
    adapter = InputAdapter(in_channels, min_size, mean if normalize else None, std if normalize else None)
    model = TransferClassifier(adapter, net, loaded, pretrained_lr_scale)
    apply_mode(model, arch, mode, head)
    return model
