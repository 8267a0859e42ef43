"""The encoder interface every pretrained backbone implements: stages whose outputs are the feature maps."""
from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneEncoder(nn.Module):
    """A torchvision backbone cut into stages; forward returns one feature map per stage (strides 2, 4, ..., 32)."""

    def __init__(self, stages: list[nn.Module], channels: list[int], strides: list[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.channels = channels
        self.strides = strides
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD  # the input statistics of the weights

    def top_stage(self) -> nn.Module:
        """The deepest stage (stride 32): what 'top' fine-tuning trains."""
        return self.stages[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
