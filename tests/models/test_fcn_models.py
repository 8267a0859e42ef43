"""VOC segmentation models: shapes, gradients, fast-path inputs, param checks, encoder freezing, local weights."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models.fcn import SEGMENTATION_MODELS_FCN, encoder_parameters, set_encoder_trainable
from cnnlab.models.unet_paper import SEGMENTATION_MODELS_UNET_PAPER

BUILDERS = {**SEGMENTATION_MODELS_FCN, **SEGMENTATION_MODELS_UNET_PAPER}
TINY = {  # width 8 everywhere it is a parameter (the torchvision encoders have fixed widths)
    "fcn_baseline": ("fcn_baseline", {"width": 8, "depth": 4}),
    "fcn_custom": ("fcn_custom", {"width": 8}),
    "fcn_resnet34": ("fcn_resnet34", {"decoder_width": 8}),
    "fcn_vgg16": ("fcn_vgg16", {"decoder_width": 8}),
    "unet_transposed": ("unet_paper", {"base_width": 8, "upsampling": "transposed"}),
    "unet_bilinear": ("unet_paper", {"base_width": 8, "upsampling": "bilinear"}),
}


def build(key: str, in_channels: int = 3, num_classes: int = 21, size=(64, 64), **extra) -> nn.Module:
    name, params = TINY[key]
    return BUILDERS[name](in_channels, num_classes, size, **{**params, **extra})


@pytest.mark.parametrize("key", list(TINY))
def test_output_shape_and_backward(key: str):
    torch.manual_seed(0)
    model = build(key)
    x = torch.rand(2, 3, 64, 64)
    y = model(x)
    assert y.shape == (2, 21, 64, 64) and y.dtype == torch.float32
    nn.functional.cross_entropy(y, torch.randint(0, 21, (2, 64, 64))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in encoder_parameters(model))


@pytest.mark.parametrize("key", list(TINY))
def test_channels_last_bf16_and_odd_sizes(key: str):
    torch.manual_seed(0)
    model = build(key).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x.to(memory_format=torch.channels_last))
    assert y.shape == (1, 21, 64, 64) and torch.isfinite(y).all()
    with torch.no_grad():
        ref = model(x)
        assert (y.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.1  # same function, bf16 precision
        assert model(torch.rand(1, 3, 70, 90)).shape == (1, 21, 70, 90)  # not a multiple of the stride


def test_upsampling_choice_changes_the_layers():
    transposed, bilinear = build("unet_transposed"), build("unet_bilinear")
    kinds = lambda m: {type(x) for x in m.modules()}  # noqa: E731
    assert nn.ConvTranspose2d in kinds(transposed) and nn.Upsample not in kinds(transposed)
    assert nn.Upsample in kinds(bilinear) and nn.ConvTranspose2d not in kinds(bilinear)
    ups = [m for m in bilinear.ups]
    assert all(isinstance(u[0], nn.Upsample) and isinstance(u[1], nn.Conv2d) for u in ups)


def test_unet_paper_widths_follow_the_paper():
    model = BUILDERS["unet_paper"](3, 2, (224, 224))  # paper widths: 64 doubling to 1024
    first_convs = [stage[0].out_channels for stage in model.encoder]
    assert first_convs == [64, 128, 256, 512, 1024]
    assert [up.out_channels for up in model.ups] == [512, 256, 128, 64]
    assert model.classifier.in_channels == 64 and model.classifier.kernel_size == (1, 1)


def test_baseline_is_strided_convs_then_transposed_convs_with_xavier_init():
    model = BUILDERS["fcn_baseline"](3, 21, (224, 224), width=8, depth=5)
    enc = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    dec = [m for m in model.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.stride for c in enc] == [(2, 2)] * 5 and len(dec) == 5
    assert all(isinstance(s[1], nn.BatchNorm2d) and isinstance(s[2], nn.ReLU) for s in model.decoder)
    for conv in enc + dec + [model.classifier]:
        w = conv.weight
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        bound = math.sqrt(6 / (fan_in + fan_out))  # Xavier-uniform bound
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound


@pytest.mark.parametrize("name,params,match", [
    ("fcn_baseline", {"widht": 8}, "unknown model.params key 'widht' for fcn_baseline.*width"),
    ("fcn_baseline", {"width": "8"}, "model.params.width for fcn_baseline must be a int"),
    ("fcn_custom", {"rates": [2, 0]}, "rates for fcn_custom must be a list of integers >= 1"),
    ("fcn_resnet34", {"freeze_encoder": "yes"}, "freeze_encoder for fcn_resnet34 must be a bool"),
    ("unet_paper", {"upsampling": "nearest"}, "upsampling for unet_paper must be one of transposed, bilinear"),
    ("fcn_vgg16", {"encoder_mode": "half"}, "encoder_mode for fcn_vgg16 must be one of full, top, frozen, got 'half'"),
    ("fcn_resnet34", {"encoder_lr_scale": "low"}, "encoder_lr_scale for fcn_resnet34 must be a float"),
])
def test_bad_params_are_config_errors(name: str, params: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        BUILDERS[name](3, 21, (64, 64), **params)


def test_input_smaller_than_the_stride_is_refused():
    with pytest.raises(ConfigError, match="downsamples by 32"):
        BUILDERS["fcn_baseline"](3, 21, (16, 16), width=8)


def _encoder_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.encoder.state_dict().items()}  # weights and BN running stats


def test_frozen_encoder_is_unchanged_after_optimizer_steps():
    torch.manual_seed(0)
    model = build("fcn_resnet34", size=(32, 32), freeze_encoder=True)
    before = _encoder_snapshot(model)
    head = model.classifier.weight.clone()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)  # decay would move frozen weights too
    model.train()
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.rand(2, 3, 32, 32)), torch.randint(0, 21, (2, 32, 32))).backward()
        opt.step()
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics did not drift either
    assert not torch.equal(head, model.classifier.weight)
    assert model.encoder_modules() == []  # the engine's epoch schedule cannot unfreeze a locked encoder


def test_set_encoder_trainable_toggles_training_of_the_encoder():
    torch.manual_seed(0)
    model = build("fcn_baseline", size=(32, 32))
    set_encoder_trainable(model, False)
    assert not any(p.requires_grad for p in encoder_parameters(model))
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("encoder."))
    model.train()
    assert not model.encoder.training and model.decoder.training
    before = _encoder_snapshot(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x, t = torch.rand(2, 3, 32, 32), torch.randint(0, 21, (2, 32, 32))
    nn.functional.cross_entropy(model(x), t).backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    set_encoder_trainable(model, True)
    assert model.encoder.training
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), t).backward()
    opt.step()
    assert not torch.equal(before["0.0.weight"], model.encoder.state_dict()["0.0.weight"])
    assert model.encoder_modules() == [model.encoder]


def test_resnet34_weights_from_a_local_state_dict(tmp_path: Path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet34()
    path = tmp_path / "resnet34.pt"
    torch.save(reference.state_dict(), path)  # full torchvision dict, fc included
    model = build("fcn_resnet34", weights=str(path))
    assert torch.equal(model.encoder.stages[0][0].weight, reference.conv1.weight)
    assert torch.equal(model.encoder.stages[4][2].conv2.weight, reference.layer4[2].conv2.weight)
    assert torch.equal(model.encoder.stages[1][1][0].bn1.running_var, reference.layer1[0].bn1.running_var)
    # the encoder computes what torchvision's resnet34 computes up to layer4
    r = reference.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))))
        assert torch.allclose(model.encoder.eval()(x)[-1], ref, atol=1e-5)
    # one input channel: a grey image is R = G = B, so the summed RGB filters give the pretrained response
    grey = build("fcn_resnet34", in_channels=1, weights=str(path))
    assert torch.allclose(grey.encoder.stages[0][0].weight, reference.conv1.weight.sum(1, keepdim=True), atol=1e-6)
    with torch.no_grad():
        g = torch.rand(1, 1, 64, 64)
        assert torch.allclose(grey.encoder.eval()(g)[0], model.encoder(g.expand(-1, 3, -1, -1))[0], atol=1e-5)
    assert grey(torch.rand(1, 1, 64, 64)).shape == (1, 21, 64, 64)


def test_vgg16_weights_from_a_local_features_file(tmp_path: Path):
    torch.manual_seed(2)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])  # torchvision's VGG16 convs
    state = {f"features.{k}": v for k, v in features.state_dict().items()}  # a dict without the classifier
    torch.save(state, tmp_path / "vgg16.pt")
    model = build("fcn_vgg16", weights=str(tmp_path / "vgg16.pt"))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.encoder(x)[-1], features(x), atol=1e-5)  # 5 poolings: /32, 512 channels


def test_wrong_weights_file_is_refused_naming_it(tmp_path: Path):
    torch.save({"0.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "other.pt")  # not torchvision's keys
    with pytest.raises(CnnlabError, match="other.pt: not a torchvision resnet34 state dict"):
        build("fcn_resnet34", weights=str(tmp_path / "other.pt"))
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "r18.pt")
    with pytest.raises(CnnlabError, match="r18.pt: .*not a torchvision resnet34"):
        build("fcn_resnet34", weights=str(tmp_path / "r18.pt"))
