"""Model registry: plain dict of builders; build_model() checks names and parameters with clear errors."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from cnnlab.errors import ConfigError, did_you_mean, lookup
from cnnlab.models.classifiers import CLASSIFIERS
from cnnlab.models.fcn import SEGMENTATION_MODELS_FCN
from cnnlab.models.gland_fcn import GLAND_MODELS
from cnnlab.models.unet import UNET_MODELS
from cnnlab.models.unet_lite0 import UNET_LITE0_MODELS
from cnnlab.models.unet_paper import SEGMENTATION_MODELS_UNET_PAPER

MODELS: dict[str, Callable[..., nn.Module]] = {**UNET_MODELS, **SEGMENTATION_MODELS_UNET_PAPER,
                                              **SEGMENTATION_MODELS_FCN, **UNET_LITE0_MODELS,
                                                 **GLAND_MODELS, **CLASSIFIERS}


def check_model_params(name: str, params: dict | None) -> Callable[..., nn.Module]:
    """The registered builder, after checking that it takes every key of params (without building anything)."""
    builder = lookup(MODELS, name, "model")
    sig = inspect.signature(builder)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    valid = [k for k in sig.parameters if k not in ("in_channels", "num_classes", "input_size")]
    for key in params or {}:
        if not accepts_any and key not in valid:
            raise ConfigError(f"unknown config key 'model.params.{key}' for model '{name}'",
                              did_you_mean(key, valid))
    return builder


def build_model(name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
                params: dict | None = None) -> nn.Module:
    """Build a registered model; unknown parameters fail naming the key and the valid ones."""
    builder = check_model_params(name, params)
    try:
        return builder(in_channels=in_channels, num_classes=num_classes, input_size=tuple(input_size),
                       **dict(params or {}))
    except TypeError as e:
        raise ConfigError(f"model '{name}': bad parameter ({e})") from None
