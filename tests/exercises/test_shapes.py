"""Layer-list arithmetic (exercises.shapes) and hook summaries (exercises.inspect_model), checked against torch."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.cli import exercises as cli
from cnnlab.errors import CnnlabError
from cnnlab.exercises.inspect_model import render_summary, summarize, summary_totals
from cnnlab.exercises.shapes import LayerSpec, analyze, parse_layers, render_shapes, report_dict, shapes
from test_arithmetic import run_cli  # the exercise commands run as `cnnlab` parses them

EXAMPLE = "conv(5x5,5) -> conv(7x7,10) -> maxpool(3,s2) -> conv(13x13,1,s10) -> fc(512) -> fc(10)"
# Worked by hand for a 256x256x3 input (side = floor((n - k)/s) + 1; rf += (k-1)*jump; jump *= s):
#   conv 5x5:   252x252x5,  weights 5*5*3*5 = 375,   rf 5,   mult-adds 252*252*5*75 = 23,814,000
#   conv 7x7:   246x246x10, weights 7*7*5*10 = 2450, rf 11,  mult-adds 246*246*10*245 = 148,264,200
#   maxpool 3/2: 122x122x10 (floor(243/2)+1),        rf 13,  jump 2
#   conv 13/10: 11x11x1 (floor(109/10)+1), weights 1690, rf 13+12*2 = 37, jump 20, mult-adds 121*1690
#   fc 512: 121 inputs, rf 37 + (11-1)*20 = 237;  fc 10: 512 inputs
EXPECTED = [  # output, weights, biases, receptive field, mult-adds
    ((252, 252, 5), 375, 5, 5, 23_814_000),
    ((246, 246, 10), 2_450, 10, 11, 148_264_200),
    ((122, 122, 10), 0, 0, 13, 0),
    ((11, 11, 1), 1_690, 1, 37, 204_490),
    ((512,), 61_952, 512, 237, 61_952),
    ((10,), 5_120, 10, 237, 5_120),
]


def build_torch(layers: list[LayerSpec], input_shape: tuple[int, int, int], relu: bool = True) -> nn.Sequential:
    """The oracle: nn.Sequential matching the layer list (ReLU between layers), whose shapes, parameters and
    multiply-adds torch measures to check the hand arithmetic (the product never builds these networks)."""
    rows = analyze(layers, input_shape).rows
    modules: list[nn.Module] = []
    prev: tuple[int, ...] = input_shape
    for i, layer in enumerate(layers):
        if i and relu:
            modules.append(nn.ReLU())
        if layer.kind == "conv":
            modules.append(nn.Conv2d(prev[2], layer.out, layer.kernel, layer.stride, layer.padding, layer.dilation))
        elif layer.kind == "maxpool":
            modules.append(nn.MaxPool2d(layer.kernel, layer.stride, layer.padding, layer.dilation))
        elif layer.kind == "avgpool":
            modules.append(nn.AvgPool2d(layer.kernel, layer.stride, layer.padding))
        else:
            if len(prev) == 3:
                # torch flattens C x H x W, the table H x W x C: same count, so the same Linear shape
                modules.append(nn.Flatten())
            modules.append(nn.Linear(prev[0] * prev[1] * prev[2] if len(prev) == 3 else prev[0], layer.out))
        prev = rows[i].output
    return nn.Sequential(*modules)


def per_module_torch(model: nn.Sequential, x: torch.Tensor) -> list[tuple[tuple[int, ...], int, int]]:
    """(per-sample output shape, parameter count, mult-adds from torch's FlopCounterMode) of each
    non-ReLU module, taking the Flatten+Linear pair as one fc layer."""
    out = []
    with torch.no_grad():
        for m in model:
            with FlopCounterMode(display=False) as counter:
                y = m(x)
            if not isinstance(m, (nn.ReLU, nn.Flatten)):
                out.append((tuple(y.shape[1:]), sum(p.numel() for p in m.parameters()),
                            counter.get_total_flops() // 2))  # torch counts a multiply-add as 2 flops
            x = y
    return out


def chw_to_hwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape


def receptive_fields(layers: list[LayerSpec], hwc: tuple[int, int, int], central: bool) -> list[tuple[int, int]]:
    """Measured: the input extent with non-zero gradient for one unit of each layer (a max pool routes gradient
    to one pixel, so it is swapped for a depthwise conv of the same geometry; positive weights, no ReLU)."""
    model = build_torch(layers, hwc, relu=False)
    channels = hwc[2]
    for i, m in enumerate(model):
        if isinstance(m, nn.MaxPool2d):
            model[i] = nn.Conv2d(channels, channels, m.kernel_size, m.stride, m.padding, m.dilation, groups=channels)
        channels = m.out_channels if isinstance(m, nn.Conv2d) else channels
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
    x = torch.ones(1, hwc[2], hwc[0], hwc[1], dtype=torch.float64, requires_grad=True)
    found, y = [], x
    for m in model:
        y = m(y)
        if isinstance(m, nn.Flatten):
            continue
        unit = y[0, 0, y.shape[2] // 2, y.shape[3] // 2] if y.dim() == 4 and central else y.flatten()[0]
        (grad,) = torch.autograd.grad(unit, x, retain_graph=True)
        rows, cols = grad[0].abs().sum(0).nonzero(as_tuple=True)
        found.append((int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1))
    return found


# ----------------------------------------------------------------------------- the assignment's example

def test_example_by_hand():
    report = shapes(EXAMPLE, "256x256x3")
    got = [(r.output, r.weights, r.biases, r.receptive_field[0], r.mult_adds) for r in report.rows]
    assert got == EXPECTED
    assert all(r.receptive_field[0] == r.receptive_field[1] for r in report.rows)
    assert report.totals() == {"weights": 71_587, "biases": 538, "params": 72_125, "mult_adds": 172_349_762}


def test_example_matches_torch():
    layers = parse_layers(EXAMPLE)
    model = build_torch(layers, (256, 256, 3))
    assert sum(p.numel() for p in model.parameters()) == 72_125
    measured = per_module_torch(model, torch.zeros(1, 3, 256, 256))
    report = analyze(layers, (256, 256, 3))
    assert [(chw_to_hwc(s), n, macs) for s, n, macs in measured] == \
        [(r.output, r.params, r.mult_adds) for r in report.rows]
    assert receptive_fields(layers, (256, 256, 3), central=False) == [r.receptive_field for r in report.rows]


def test_example_text_and_json():
    report = shapes(EXAMPLE, "256x256x3")
    text = render_shapes(report)
    total = next(line for line in text.splitlines() if line.strip().startswith("total"))
    assert total.split()[1:] == ["71,587", "538", "72,125", "172,349,762"]
    assert "height and width floor((122 + 2*0 - 1*(13-1) - 1)/10) + 1 = 11" in text
    assert "receptive field 13 + (13-1)*2 = 37" in text
    assert "receptive field 37 + (11-1)*20 = 237: the whole map" in text
    data = report_dict(report)
    assert data["layers"][3]["output"] == [11, 11, 1] and data["totals"]["params"] == 72_125


# ----------------------------------------------------------------------------- padding, stride, dilation, pools

VARIANTS = [
    ("conv(3x3,4,p1) -> conv(5x3,6,s2,p2) -> avgpool(2) -> fc(7)", (21, 17, 2)),
    ("conv(3,3,d2) -> maxpool(3,s1,p1) -> conv(2x2,5,s2,d3) -> fc(8) -> fc(3)", (24, 20, 3)),
    ("conv(1x1,3) -> maxpool(2,s2,d2) -> conv(4x4,2,s3,p1)", (19, 23, 1)),
]


@pytest.mark.parametrize("spec,hwc", VARIANTS)
def test_variants_match_torch(spec, hwc):
    layers = parse_layers(spec)
    report = analyze(layers, hwc)
    model = build_torch(layers, hwc)
    measured = per_module_torch(model, torch.randn(1, hwc[2], hwc[0], hwc[1]))
    assert [(chw_to_hwc(s), n, macs) for s, n, macs in measured] == \
        [(r.output, r.params, r.mult_adds) for r in report.rows]
    assert sum(p.numel() for p in model.parameters()) == report.totals()["params"]
    spatial = [r.receptive_field for r in report.rows if len(r.output) == 3]
    assert receptive_fields(layers, hwc, central=True)[:len(spatial)] == spatial


def test_pool_stride_defaults_to_kernel_like_torch():
    (pool,) = parse_layers("maxpool(3)")
    assert pool.stride == 3 and nn.MaxPool2d(3).stride == 3
    assert shapes("maxpool(3)", "10x10x1").rows[0].output == (3, 3, 1)


def test_relu_and_flatten_tokens_are_skipped():
    assert len(parse_layers("conv(3x3,2) -> relu -> flatten -> fc(4)")) == 2


# ----------------------------------------------------------------------------- errors

def test_non_positive_shape_names_the_layer():
    with pytest.raises(CnnlabError, match=r"layer 4 'conv\(13x13,1,s10\)': output height is 0"):
        shapes(EXAMPLE, "32x32x3")
    with pytest.raises(RuntimeError):  # torch agrees the network does not fit a 32x32 input
        nn.Sequential(*list(build_torch(parse_layers(EXAMPLE)[:3], (32, 32, 3))),
                      nn.Conv2d(10, 1, 13, stride=10))(torch.zeros(1, 3, 32, 32))
    with pytest.raises(CnnlabError, match=r"layer 2 'conv\(3x3,1\)' comes after fc"):
        shapes("fc(10) -> conv(3x3,1)", "8x8x1")


@pytest.mark.parametrize("spec,token", [
    ("conv(5x5) -> fc(2)", "conv needs a kernel and a filter count"),
    ("conv(5y5,3)", "'5y5' is not a kernel size"),
    ("conv(3x3,8) -> maxpol(3)", "unknown layer 'maxpol'.*did you mean 'maxpool'"),
    ("conv(3x3,8,q1)", "option 'q1' not understood"),
    ("conv(3x3,8) -> -> fc(2)", "empty layer"),
    ("conv[3x3,8]", "'conv\\[3x3,8\\]' is not name\\(arguments\\)"),
    ("fc(0)", "'0' is not a positive unit count"),
    ("maxpool(2,p2)", "padding 2 exceeds half the kernel"),
])
def test_bad_syntax_names_the_token(spec, token):
    with pytest.raises(CnnlabError, match=token):
        shapes(spec, "16x16x3")


def test_bad_input_shape():
    with pytest.raises(CnnlabError, match="input '256x256' is not HxWxC"):
        shapes("fc(2)", "256x256")


# ----------------------------------------------------------------------------- summary from hooks

def test_summarize_agrees_with_the_layer_list():
    layers = parse_layers(EXAMPLE)
    model = build_torch(layers, (64, 64, 3))
    rows = [r for r in summarize(model, (3, 64, 64)) if r.kind in ("Conv2d", "MaxPool2d", "Linear")]
    report = analyze(layers, (64, 64, 3))
    assert [(chw_to_hwc(r.output), r.weights, r.biases, r.mult_adds) for r in rows] == \
        [(r.output, r.weights, r.biases, r.mult_adds) for r in report.rows]


class Odd(nn.Module):
    """Grouped conv, transposed conv, a module called twice, a non-leaf parameter and an unused layer."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 3, 2, stride=2)
        self.shared = nn.Conv2d(3, 3, 1)
        self.unused = nn.Linear(2, 2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shared(self.shared(self.up(torch.relu(self.bn(self.conv(x))))))
        return self.head(x) * self.scale


def test_summarize_counts_match_torch():
    model = Odd().train()
    rows = summarize(model, (4, 6, 6))
    assert model.training and int(model.bn.num_batches_tracked) == 0  # eval pass, mode restored
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 4, 6, 6))
    totals = summary_totals(rows)
    assert totals["params"] == sum(p.numel() for p in model.parameters())
    assert totals["mult_adds"] == counter.get_total_flops() // 2
    by_name = {r.name: r for r in rows}
    assert by_name["conv"].output == (8, 6, 6) and by_name["conv"].filter == "8x2x3x3"
    assert by_name["up"].output == (3, 12, 12) and by_name["head.2"].output == (5,)
    assert by_name["shared (again)"].params == 0 and by_name["shared"].params == 12
    assert by_name["(model) (own parameters)"].params == 1 and by_name["unused (not called)"].params == 6
    text = render_summary(rows, "odd")
    assert text.startswith("odd\n") and f"{totals['params']:,}" in text.splitlines()[-3]


def test_summarize_failure_names_the_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 5))
    with pytest.raises(CnnlabError, match="input 1x8x8 near layer '2'"):
        summarize(model, (1, 8, 8))


# ----------------------------------------------------------------------------- CLI

def test_cli_shapes(capsys):
    data = json.loads(run_cli(["shapes", EXAMPLE, "--input", "256x256x3", "--json"], capsys))
    assert [tuple(layer["output"]) for layer in data["layers"]] == [e[0] for e in EXPECTED]
    assert "Working:" not in run_cli(["shapes", EXAMPLE, "--input", "256x256x3", "--no-work"], capsys)


def registry_model() -> str:
    models = pytest.importorskip("cnnlab.models")
    if not getattr(models, "MODELS", None):
        pytest.skip("no models registered yet")
    return sorted(models.MODELS)[0]


def test_cli_summary_of_a_registered_model(tmp_path, capsys):
    from cnnlab.models import build_model

    name = registry_model()
    data = json.loads(run_cli(["summary", name, "--input", "3x32x32", "--classes", "3", "--json"], capsys))
    model = build_model(name, 3, 3, (32, 32), {})
    assert data["totals"]["params"] == sum(p.numel() for p in model.parameters())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: {name}}}\ndata: {{size: [32, 32]}}\n")
    text = run_cli(["summary", str(recipe), "--classes", "3"], capsys)
    assert text.startswith(f"{name} on input 3x32x32, 3 classes")
    assert f"{data['totals']['params']:,}" in text


def test_cli_summary_errors():
    with pytest.raises(CnnlabError, match="'3x32' is not CxHxW"):
        cli.parse_chw("3x32")
    with pytest.raises(CnnlabError, match="no input shape"):
        cli.summarize_model("anything", None, 2, {})
    with pytest.raises(CnnlabError, match="'depth' is not key=value"):
        cli.parse_params(["depth"])
    assert cli.parse_params(["depth=3", "bilinear=true", "name=x"]) == {"depth": 3, "bilinear": True, "name": "x"}
