"""The course FCN: kernel rule, shapes and gradients for every variant, skip and residual wiring."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import ConfigError
from cnnlab.models.gland_fcn import GLAND_MODELS, ConvUnit, build_course_fcn, up_padding

VARIANTS = [
    {},
    {"skip": True},
    {"residual": True},
    {"residual": True, "block_convs": 3, "skip": True},
    {"block_convs": 2},
    {"depth": 4, "residual": True},
    {"up_kernel": 2},
    {"up_kernel": 6, "skip": True},
    {"up_stride": 4, "up_kernel": 8, "skip": True},
    {"width": 0.5, "dropout": 0.3},
]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("params", VARIANTS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "base")
def test_every_variant_shapes_and_backward(params):
    torch.manual_seed(0)
    model = GLAND_MODELS["course_fcn"](2, 2, (18, 22), **params)
    x = torch.randn(2, 2, 18, 22)  # not a multiple of the total stride: padded and cropped back
    out = model(x)
    assert out.shape == (2, 2, 18, 22)
    F.cross_entropy(out, torch.randint(0, 2, (2, 18, 22))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_kernel_must_be_a_multiple_of_the_stride():
    with pytest.raises(ConfigError, match=r"up_kernel' must be an integer multiple of model.params.up_stride, "
                                          r"got up_kernel=3, up_stride=2"):
        build_course_fcn(1, 2, (16, 16), up_kernel=3)
    with pytest.raises(ConfigError, match="up_kernel=6, up_stride=4"):
        build_course_fcn(1, 2, (16, 16), up_kernel=6, up_stride=4)


def test_other_parameter_errors():
    with pytest.raises(ConfigError, match=r"model.params.skp.*did you mean 'skip'"):
        build_course_fcn(1, 2, (16, 16), skp=True)
    with pytest.raises(ConfigError, match="block_convs"):
        build_course_fcn(1, 2, (16, 16), residual=True, block_convs=1)
    with pytest.raises(ConfigError, match="up_stride"):
        build_course_fcn(1, 2, (16, 16), up_stride=3, up_kernel=6)
    with pytest.raises(ConfigError, match=r"up_stride' \(4\) cannot undo"):
        build_course_fcn(1, 2, (16, 16), up_stride=4, up_kernel=4, depth=4)


@pytest.mark.parametrize("kernel,stride", [(2, 2), (4, 2), (6, 2), (4, 4), (8, 4), (16, 8)])
def test_up_padding_doubles_exactly(kernel, stride):
    pad, out_pad = up_padding(kernel, stride)
    up = torch.nn.ConvTranspose2d(1, 1, kernel, stride, pad, out_pad)
    assert up(torch.zeros(1, 1, 5, 7)).shape[-2:] == (5 * stride, 7 * stride)


def test_parameter_count_hand_computed():
    # depth 2, in 1, classes 2, up_kernel 2: enc 1->8 (8*9+8=80), 8->16 (16*8*9+16=1168),
    # up 16->8 k2 (16*8*4+8=520), fuse 8->8 (8*8*9+8=584), head 8->2 (16+2=18)
    base = dict(depth=2, up_kernel=2)
    assert n_params(build_course_fcn(1, 2, (8, 8), **base)) == 2370
    # skip: the fuse conv sees 16 channels: 8*16*9+8 = 1160 instead of 584
    assert n_params(build_course_fcn(1, 2, (8, 8), skip=True, **base)) == 2370 - 584 + 1160
    # two convs per unit without bridges: +8->8 (584), +16->16 (2320), +8->8 (584) in the decoder
    plain = 2370 + 584 + 2320 + 584
    assert n_params(build_course_fcn(1, 2, (8, 8), block_convs=2, **base)) == plain
    # residual bridges: 1x1 projections 1->8 (16) and 8->16 (144); the decoder unit keeps 8 channels: identity
    assert n_params(build_course_fcn(1, 2, (8, 8), residual=True, block_convs=2, **base)) == plain + 16 + 144


def test_skip_with_zeroed_skip_weights_equals_the_no_skip_network():
    torch.manual_seed(0)
    skip = build_course_fcn(2, 2, (16, 16), skip=True).eval()
    plain = build_course_fcn(2, 2, (16, 16), skip=False).eval()
    x = torch.randn(1, 2, 16, 16)
    before = skip(x)
    state = skip.state_dict()
    for name, value in state.items():
        if name.startswith("fuse.") and name.endswith("convs.0.weight"):
            half = value.shape[1] // 2
            value[:, half:] = 0  # cut the encoder features off
            state[name] = value
    skip.load_state_dict(state)
    after = skip(x)
    assert not torch.allclose(before, after, atol=1e-4)  # the skip path was carrying information
    plain.load_state_dict({k: (v[:, : v.shape[1] // 2] if k.startswith("fuse.") and k.endswith("convs.0.weight")
                               else v) for k, v in state.items()})
    assert torch.allclose(plain(x), after, atol=1e-6)


def test_residual_unit_adds_its_input_back():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 6)
    same = ConvUnit(4, 4, n=2, residual=True)
    c1, c2 = same.convs
    expected = F.relu(c2(F.relu(c1(x))) + x)
    assert torch.allclose(same(x), expected, atol=1e-6)
    proj = ConvUnit(4, 6, n=3, residual=True)
    c1, c2, c3 = proj.convs
    expected = F.relu(c3(F.relu(c2(F.relu(c1(x))))) + proj.bridge(x))
    assert torch.allclose(proj(x), expected, atol=1e-6)
    plain = ConvUnit(4, 4, n=2, residual=False)
    plain.load_state_dict(same.state_dict())
    assert not torch.allclose(plain(x), same(x))


def test_channels_last_autocast_and_dropout_modes():
    torch.manual_seed(0)
    model = build_course_fcn(2, 2, (16, 16), skip=True, residual=True, dropout=0.5).eval()
    x = torch.randn(2, 2, 16, 16)
    ref = model(x)
    assert torch.allclose(model(x.to(memory_format=torch.channels_last)), ref, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)
    assert torch.allclose(low.float(), ref, atol=0.1)
    model.train()
    assert not torch.allclose(model(x), model(x))  # Dropout2d active only in training
