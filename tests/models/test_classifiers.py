"""Classifiers: hand-computed sizes, equivalences, transfer-learning modes with local weights, ensembles."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.inference.ensemble import EnsembleReport, average_probs
from cnnlab.models.classifiers import CLASSIFIERS, count_parameters, param_groups
from cnnlab.models.transfer import InputAdapter, apply_mode


def build(name: str, c: int = 1, k: int = 10, size=(28, 28), **params) -> nn.Module:
    return CLASSIFIERS[name](c, k, size, **params)


# ---------------------------------------------------------------- course CNN and MLP

def test_course_cnn_parameter_count_by_hand():
    conv = (1 * 9 * 8 + 8) + (8 * 9 * 16 + 16) + (16 * 9 * 32 + 32)  # weights + biases of the three convs
    assert count_parameters(build("course_cnn")) == (conv + 32 * 7 * 7 * 10 + 10,) * 2 == (21578, 21578)
    # 8x8 digits: 8 -> 4 -> 2 after the two pools.
    assert count_parameters(build("course_cnn", size=(8, 8)))[1] == conv + 32 * 2 * 2 * 10 + 10
    # BatchNorm: convs lose their biases, each BN adds a scale and a shift per channel.
    bn = conv - (8 + 16 + 32) + 2 * (8 + 16 + 32)
    assert count_parameters(build("course_cnn", batchnorm=True))[1] == bn + 15690


def test_course_cnn_computes_the_course_network():
    torch.manual_seed(0)
    model = build("course_cnn").eval()
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    fc = [m for m in model if isinstance(m, nn.Linear)][0]
    x = torch.rand(3, 1, 28, 28)
    h = x
    for i, conv in enumerate(convs):  # functional re-statement of the assignment
        h = F.relu(F.conv2d(h, conv.weight, conv.bias, stride=1, padding=1))
        if i < 2:
            h = F.max_pool2d(h, 2)
    assert h.shape == (3, 32, 7, 7)
    torch.testing.assert_close(model(x), F.linear(h.flatten(1), fc.weight, fc.bias))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_pool_before_activation_is_the_same_function(activation):
    torch.manual_seed(1)
    a = build("course_cnn", activation=activation).eval()
    b = build("course_cnn", activation=activation, pool_before_relu=True).eval()
    b.load_state_dict(a.state_dict())
    assert [type(m) for m in a][1:3] != [type(m) for m in b][1:3]  # the order really differs
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(a(x), b(x))
    assert any(isinstance(m, nn.Tanh) for m in a) == (activation == "tanh")


def test_mlp_parameter_count_and_bad_params():
    assert count_parameters(build("mlp", hidden=[256, 128]))[1] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    with pytest.raises(ConfigError, match="activation"):
        build("mlp", activation="gelu")
    with pytest.raises(ConfigError, match="dropout"):
        build("course_cnn", dropout=1.5)


def test_course_cnn_channels_last_bf16_matches_fp32():
    torch.manual_seed(2)
    model = build("course_cnn", batchnorm=True, dropout=0.3).eval()
    x = torch.rand(2, 1, 28, 28)
    ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


# ---------------------------------------------------------------- CIFAR net from scratch

def test_cifar_net_separable_and_residual():
    plain = build("cifar_net", 3, 100, (32, 32), width=8, depth=1, stages=2)
    sep = build("cifar_net", 3, 100, (32, 32), width=8, depth=1, stages=2, separable=True)
    depthwise = [m for m in sep.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert count_parameters(sep)[1] < count_parameters(plain)[1]
    # With the block's last BN scale at 0 the body outputs its bias (0): a residual block passes relu(skip(x)).
    block = [m for m in plain.modules() if type(m).__name__ == "ConvBlock"][1].eval()
    nn.init.zeros_(block.body[-1].weight)
    x = torch.randn(2, block.body[0].in_channels, 8, 8)
    torch.testing.assert_close(block(x), F.relu(block.skip(x)))


def test_cifar_net_weights_fit_any_input_size():
    model = build("cifar_net", 3, 10, (32, 32), width=4, depth=1, stages=3).eval()
    bigger = build("cifar_net", 3, 10, (64, 64), width=4, depth=1, stages=3)
    bigger.load_state_dict(model.state_dict())  # small-size weights fine-tune at a larger size
    assert bigger.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 10)


# ---------------------------------------------------------------- transfer learning

@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory) -> Path:
    """A resnet18 state dict in torchvision's naming (random, seeded): stands in for ImageNet weights offline."""
    torch.manual_seed(3)
    net = torchvision.models.resnet18()
    for m in net.modules():  # non-trivial BN statistics, so a reset would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "resnet18.pt"
    torch.save(net.state_dict(), path)
    return path


def _trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("mode", ["frozen", "fc", "top", "full"])
def test_resnet_modes_train_exactly_the_intended_parameters(resnet_file, mode):
    model = build("resnet18", 1, 10, (32, 32), weights=str(resnet_file), mode=mode)
    names = {n for n, _ in model.named_parameters()}
    expected = {
        "frozen": {"net.fc.weight", "net.fc.bias"},
        "fc": {"net.fc.weight", "net.fc.bias"},
        "top": {n for n in names if n.startswith(("net.layer4.", "net.fc."))},
        "full": names,
    }[mode]
    assert _trainable(model) == expected
    state = torch.load(resnet_file, weights_only=True)
    assert torch.equal(model.net.conv1.weight, state["conv1.weight"])  # the local file was loaded
    assert torch.equal(model.net.layer1[0].bn1.running_var, state["layer1.0.bn1.running_var"])
    assert model.net.fc.out_features == 10

    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(param_groups(model, lr=0.5), lr=0.5)
    model.train()
    F.cross_entropy(model(torch.rand(4, 1, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    after = model.state_dict()
    for name in names:
        changed = not torch.equal(before[name], after[name])
        assert changed == (name in expected), name
    if mode == "frozen":  # frozen BatchNorm keeps its statistics in train mode too
        assert torch.equal(before["net.layer1.0.bn1.running_mean"], after["net.layer1.0.bn1.running_mean"])


def test_param_groups_give_pretrained_layers_a_lower_lr(resnet_file):
    model = build("resnet18", 3, 10, (32, 32), weights=str(resnet_file), mode="top", pretrained_lr_scale=0.1)
    groups = {g["name"]: g for g in param_groups(model, lr=0.01)}
    new = {id(p) for p in groups["new"]["params"]}
    assert new == {id(model.net.fc.weight), id(model.net.fc.bias)} and groups["new"]["lr"] == 0.01
    assert len(groups["pretrained"]["params"]) == sum(1 for _ in model.net.layer4.parameters())
    assert groups["pretrained"]["lr"] == pytest.approx(0.001) and groups["pretrained"]["lr_scale"] == 0.1
    assert model.normalizes_input  # the engine must not normalise again
    assert param_groups(model, 0.01, encoder_lr_scale=0.5)[1]["lr"] == pytest.approx(0.005)
    scratch = build("resnet18", 3, 10, (32, 32))
    assert [g["name"] for g in param_groups(scratch, 0.01)] == ["new"]  # nothing pre-trained


def test_vgg16_modes_select_the_right_layers():
    model = build("vgg16", 1, 10, (28, 28), mode="full")  # random weights: only the structure matters here
    names = {n for n, _ in model.named_parameters()}
    block5 = {f"net.features.{i}.{w}" for i in (24, 26, 28) for w in ("weight", "bias")}
    classifier = {n for n in names if n.startswith("net.classifier.")}
    assert len(classifier) == 6 and block5 <= names
    cases = {"frozen": {"net.classifier.6.weight", "net.classifier.6.bias"}, "fc": classifier,
             "top": classifier | block5, "full": names}
    for mode, expected in cases.items():
        apply_mode(model, "vgg16", mode)
        assert _trainable(model) == expected, mode
    apply_mode(model, "vgg16", "frozen")
    assert count_parameters(model)[0] == 4096 * 10 + 10


def test_vgg16_dense_head_loads_local_features_and_steps(tmp_path):
    torch.manual_seed(4)
    donor = build("vgg16", 3, 10, (32, 32), head="dense")
    path = tmp_path / "vgg_features.pt"
    torch.save({k: v for k, v in donor.net.state_dict().items() if k.startswith("features.")}, path)
    model = build("vgg16", 1, 100, (32, 32), weights=str(path), mode="top", head="dense", head_hidden=32)
    assert torch.equal(model.net.features[0].weight, donor.net.features[0].weight)
    assert _trainable(model) == {n for n, _ in model.named_parameters()
                                 if n.startswith(("net.classifier.", "net.features.24.", "net.features.26.",
                                                  "net.features.28."))}
    frozen = model.net.features[0].weight.clone()
    top = model.net.features[28].weight.clone()
    opt = torch.optim.SGD(param_groups(model, lr=0.5), lr=0.5)
    F.cross_entropy(model(torch.rand(2, 1, 32, 32)), torch.tensor([1, 2])).backward()
    opt.step()
    assert torch.equal(model.net.features[0].weight, frozen) and not torch.equal(model.net.features[28].weight, top)


def test_transfer_weight_errors(tmp_path, resnet_file):
    with pytest.raises(ConfigError, match="scratch"):
        build("resnet18", 3, 10, (32, 32), weights=str(resnet_file), mode="scratch")
    with pytest.raises(CnnlabError, match="weights file not found"):
        build("resnet18", 3, 10, (32, 32), weights=str(tmp_path / "nope.pt"), mode="frozen")
    with pytest.raises(CnnlabError, match="lacks .* resnet34 needs"):
        build("resnet34", 3, 10, (32, 32), weights=str(resnet_file), mode="frozen")
    with pytest.raises(ConfigError, match="did you mean 'frozen'"):
        build("resnet18", 3, 10, (32, 32), mode="frozn")
    with pytest.raises(ConfigError, match="1 \\(grey"):
        build("resnet18", 4, 10, (32, 32))


def test_input_adapter_matches_torchvision_transforms():
    from torchvision.transforms.v2 import functional as TF

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = torch.rand(2, 1, 28, 28)
    out = InputAdapter(1, 56, mean, std)(x)
    # The usual order (grey -> RGB, resize, normalise) must agree with ours (normalise first, then resize).
    ref = TF.normalize(TF.resize(x.repeat(1, 3, 1, 1), [56, 56], antialias=False), mean, std)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert InputAdapter(3, 32, None, None)(torch.rand(1, 3, 40, 40)).shape == (1, 3, 40, 40)


# ---------------------------------------------------------------- ensembles

def test_ensemble_averages_softmax_by_hand():
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 0.0]]).softmax(1)  # member logits per sample
    b = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 2.0]]).softmax(1)
    labels = torch.tensor([0, 1, 1])
    rep = EnsembleReport.of(["a", "b"], [a, b], labels)
    s = lambda u, v: torch.tensor([1.0, torch.e ** (v - u)]) / (1 + torch.e ** (v - u))  # softmax of (u, v)
    expect = (torch.stack([s(2, 0), s(0, 1), s(0.5, 0)]) + torch.stack([s(0, 1), s(0, 3), s(0, 2)])) / 2
    torch.testing.assert_close(rep.probs, expect)
    # a predicts [0, 1, 0], b [1, 1, 1]: 2/3 each. Mean p(class 0): sample 0 (0.881 + 0.269) / 2 = 0.575 -> 0,
    # sample 2 (0.622 + 0.119) / 2 = 0.371 -> 1: the ensemble gets all 3 right.
    assert rep.member_accuracy == pytest.approx([2 / 3, 2 / 3]) and rep.ensemble_accuracy == 1.0
    assert "ensemble of 2" in rep.table() and "+0.3333" in rep.table()
    torch.testing.assert_close(average_probs([expect, expect], weights=[3, 1]), expect)
    torch.testing.assert_close(average_probs([a, b], weights=[3, 1]), (3 * a + b) / 4)
    with pytest.raises(CnnlabError, match="disagree"):
        average_probs([expect, expect[:, :1]])


def test_unknown_param_is_named_through_the_model_registry(monkeypatch):
    import cnnlab.models as registry

    monkeypatch.setitem(registry.MODELS, "vgg16", CLASSIFIERS["vgg16"])
    with pytest.raises(ConfigError, match="model.params.mdoe.*did you mean 'mode'"):
        registry.build_model("vgg16", 1, 10, (28, 28), {"mdoe": "frozen"})
