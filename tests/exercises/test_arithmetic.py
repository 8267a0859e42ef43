"""Convolution by hand (cnnlab.exercises.arithmetic, `cnnlab conv`): hand-computed answers, and torch as the oracle."""
from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.cli import exercises as cli
from cnnlab.errors import CnnlabError
from cnnlab.exercises import arithmetic as ar

# The assignment's exercise: two 5x5 input maps, two 3x3 filter slices (one per input channel).
INPUT_1 = "1 2 0 1 3; 0 1 2 3 1; 1 0 1 2 2; 2 1 0 1 0; 3 0 1 1 2"
INPUT_2 = "0 1 1 0 2; 2 0 1 1 0; 1 2 0 0 1; 0 1 2 1 1; 1 1 0 2 0"
FILTER_1 = "1 0 -1; 1 0 -1; 1 0 -1"   # vertical edges: left column minus right column
FILTER_2 = "0 1 0; 1 -1 1; 0 1 0"     # the four neighbours minus the centre
# Worked on paper: map1(i,j) = sum over 3 rows of (x[r,j] - x[r,j+2]); map2 = up+left+right+down-centre.
MAP_1 = [[-1, -3, -3], [0, -4, 0], [4, -3, -2]]
MAP_2 = [[6, 1, 0], [0, 5, 3], [4, 0, 4]]
COMBINED = [[5, -2, -3], [0, 1, 3], [8, -3, 2]]


def golden_stacks() -> tuple[np.ndarray, np.ndarray]:
    return ar.as_stack([INPUT_1, INPUT_2], "input"), ar.as_stack([FILTER_1, FILTER_2], "filter")


def torch_conv(inputs: np.ndarray, filters: np.ndarray, bias: float = 0.0, **kw) -> np.ndarray:
    """The oracle: torch.nn.Conv2d with one output channel whose weight slices are the filters."""
    conv = torch.nn.Conv2d(inputs.shape[0], 1, filters.shape[1:], dtype=torch.float64, **kw)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(filters.copy())[None])
        conv.bias.fill_(bias)
        return conv(torch.from_numpy(inputs)[None])[0, 0].numpy()


# ----------------------------------------------------------------------------- golden exercise

def test_golden_two_maps_two_filters_by_hand_and_torch():
    inputs, filters = golden_stacks()
    work = ar.convolve(inputs, filters)
    assert work.channels[0].output.tolist() == MAP_1
    assert work.channels[1].output.tolist() == MAP_2
    assert work.combined.tolist() == COMBINED
    np.testing.assert_array_equal(torch_conv(inputs, filters), np.array(COMBINED, dtype=float))
    # each filtered input alone is a 1-channel torch conv too
    for c, expected in enumerate((MAP_1, MAP_2)):
        np.testing.assert_array_equal(torch_conv(inputs[c:c + 1], filters[c:c + 1]), np.array(expected, dtype=float))


def test_golden_text_reads_like_a_worked_answer():
    inputs, filters = golden_stacks()
    text = cli.render_solution(cli.solve(cli.Problem(inputs, filters)))
    assert "height: floor((5 + 2*0 - 1*(3-1) - 1) / 1) + 1 = floor(2/1) + 1 = 3" in text
    assert "map1(0,0) = 1*1 + 2*0 + 0*(-1) + 0*1 + 1*0 + 2*(-1) + 1*1 + 0*0 + 1*(-1) = -1" in text
    assert "map2(1,1) = 0*0 + 1*1 + 1*0 + 2*1 + 0*(-1) + 0*1 + 1*0 + 2*1 + 1*0 = 5" in text
    assert "out(2,0) = 4 + 4 + 0 = 8" in text
    assert "Largest response 8 at (2,0), from input rows 2-4, cols 0-2." in text
    assert "agrees (largest difference 0)" in text
    # the combined map printed as a right-aligned matrix
    assert " 5 -2 -3\n   0  1  3\n   8 -3  2" in text


def test_golden_max_pool_of_combined_map():
    inputs, filters = golden_stacks()
    sol = cli.solve(cli.Problem(inputs, filters, pool=2, pool_stride=1))
    # windows by hand: max(5,-2,0,1)=5, max(-2,-3,1,3)=3, max(0,1,8,-3)=8, max(1,3,-3,2)=3
    assert sol.pool.outputs[0].tolist() == [[5, 3], [8, 3]]
    expected = F.max_pool2d(torch.tensor(COMBINED, dtype=torch.float64)[None, None], 2, stride=1)[0, 0]
    np.testing.assert_array_equal(sol.pool.outputs[0], expected.numpy())
    assert "pool1(1,0) = max(0, 1, 8, -3) = 8   [at row 2, col 0]" in cli.render_solution(sol)


def test_golden_max_activating_patch():
    _, filters = golden_stacks()
    work = ar.max_patch(filters)
    star = np.nan
    np.testing.assert_array_equal(work.patch[0], [[1, star, -1]] * 3)
    np.testing.assert_array_equal(work.patch[1], [[star, 1, star], [1, -1, 1], [star, 1, star]])
    assert work.value == 11  # sum |w| = 6 + 5
    text = "\n".join(ar.render_patch(work))
    assert "1  * -1" in text and "total = 6 + 5 + 0 (bias) = 11" in text


# ----------------------------------------------------------------------------- convolution against torch

CASES = list(itertools.product((1, 3), (0, 1, 2), (1, 2), (1, 2)))  # channels, padding, stride, dilation


@pytest.mark.parametrize("channels,padding,stride,dilation", CASES)
def test_convolve_matches_torch(channels, padding, stride, dilation):
    rng = np.random.default_rng(channels * 100 + padding * 10 + stride + dilation)
    inputs = rng.integers(-4, 5, (channels, 7, 6)).astype(float)
    filters = rng.integers(-3, 4, (channels, 3, 2)).astype(float)
    work = ar.convolve(inputs, filters, bias=0.5, padding=padding, stride=stride, dilation=dilation)
    expected = torch_conv(inputs, filters, 0.5, padding=padding, stride=stride, dilation=dilation)
    assert work.combined.shape == expected.shape
    np.testing.assert_allclose(work.combined, expected, atol=1e-12)
    for n, k, axis in ((7, 3, 0), (6, 2, 1)):
        assert ar.output_size(n, k, padding, stride, dilation) == expected.shape[axis]


def test_dilated_convolution_by_hand():
    x = np.arange(25, dtype=float).reshape(1, 5, 5)
    w = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    work = ar.convolve(x, w, dilation=2)
    # taps at (0,0), (0,2), (2,0), (2,2): 0*1 + 2*2 + 10*3 + 12*4 = 82; output is 3x3 (effective kernel 3x3)
    assert work.combined.shape == (3, 3)
    assert work.combined[0, 0] == 82
    assert "map1(0,0) = 0*1 + 2*2 + 10*3 + 12*4 = 82" in work.channels[0].steps[0]
    np.testing.assert_array_equal(ar.dilate(w[0], 2), [[1, 0, 2], [0, 0, 0], [3, 0, 4]])
    np.testing.assert_array_equal(work.combined, torch_conv(x, w, dilation=2))


def test_flip_gives_true_convolution():
    # a unit impulse convolved (true convolution) reproduces the kernel; cross-correlation rotates it
    impulse = np.zeros((1, 3, 3))
    impulse[0, 1, 1] = 1
    k = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    np.testing.assert_array_equal(ar.convolve(impulse, k, padding=1, flip=True).combined, k[0])
    np.testing.assert_array_equal(ar.convolve(impulse, k, padding=1).combined, k[0][::-1, ::-1])
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(2, 6, 6)), rng.normal(size=(2, 3, 3))
    expected = F.conv2d(torch.from_numpy(x)[None], torch.flip(torch.from_numpy(w), dims=(1, 2))[None])[0, 0]
    np.testing.assert_allclose(ar.convolve(x, w, flip=True).combined, expected.numpy(), atol=1e-12)


def test_padding_shown_and_large_maps_abbreviated():
    x = np.ones((1, 7, 7))
    work = ar.convolve(x, np.ones((1, 2, 2)), padding=1)
    np.testing.assert_array_equal(work.channels[0].padded[0], np.zeros(9))
    assert work.combined.shape == (8, 8) and work.combined[0, 0] == 1 and work.combined[3, 3] == 4
    assert len(work.channels[0].steps) == ar.MAX_STEPS + 1
    assert work.channels[0].steps[-1] == f"... the other {64 - ar.MAX_STEPS} cells the same way"


# ----------------------------------------------------------------------------- pooling and patch against torch

@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 1, 1), (3, 2, 0), (2, 1, 1)])
def test_max_pool_matches_torch(kernel, stride, padding):
    maps = np.random.default_rng(kernel + padding).integers(-9, 10, (2, 6, 5)).astype(float)
    work = ar.max_pool(maps, kernel, stride, padding)
    expected = F.max_pool2d(torch.from_numpy(maps)[None], kernel, stride=stride, padding=padding)[0].numpy()
    np.testing.assert_array_equal(work.outputs, expected)


def test_patch_beats_every_input_in_bounds():
    w = np.array([[[2.0, -1.0], [0.0, 0.5]]])
    work = ar.max_patch(w, bias=-0.25)
    assert work.value == pytest.approx(2 + 1 + 0.5 - 0.25)
    assert np.isnan(work.patch[0, 1, 0]) and work.patch[0, 0, 1] == -1
    weight = torch.from_numpy(w)[None]
    corners = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=4)), dtype=torch.float64).view(-1, 1, 2, 2)
    inside = torch.rand(500, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    responses = F.conv2d(torch.cat([corners, inside]), weight, torch.tensor([-0.25], dtype=torch.float64))
    assert responses.max().item() == pytest.approx(work.value)
    for fill in (-1.0, 0.3, 1.0):  # the * cell really does not matter
        patch = torch.from_numpy(np.nan_to_num(work.patch, nan=fill))[None]
        assert F.conv2d(patch, weight, torch.tensor([-0.25], dtype=torch.float64)).item() == pytest.approx(work.value)


def test_dilated_patch_marks_gaps_and_other_bounds():
    w = np.array([[[1.0, -2.0], [3.0, 0.0]]])
    work = ar.max_patch(w, low=0.0, high=2.0, dilation=2)
    assert work.patch.shape == (1, 3, 3)
    expected = np.full((3, 3), np.nan)
    expected[0, 0], expected[0, 2], expected[2, 0] = 2, 0, 2
    np.testing.assert_array_equal(work.patch[0], expected)
    assert work.value == 8  # 1*2 + (-2)*0 + 3*2
    desc, diff = ar.torch_check_patch(work)
    assert diff < 1e-12 and "dilation=2" in desc


# ----------------------------------------------------------------------------- parsing and errors

def test_parse_matrix_forms():
    np.testing.assert_array_equal(ar.parse_matrix("1, 2;3 -4.5"), [[1, 2], [3, -4.5]])
    np.testing.assert_array_equal(ar.parse_matrix("1 2\n3 4\n"), [[1, 2], [3, 4]])


@pytest.mark.parametrize("text,fragment", [("1 2; 3", "row 2 has 1 values, row 1 has 2"),
                                           ("1 x; 3 4", "'x' is not a number"), (" ; ", "no values")])
def test_parse_matrix_errors(text, fragment):
    with pytest.raises(CnnlabError, match=fragment):
        ar.parse_matrix(text, "input 1")


def test_shape_errors():
    with pytest.raises(CnnlabError, match="input 2 is 2x2 but input 1 is 3x3"):
        ar.as_stack(["1 2 3; 4 5 6; 7 8 9", "1 2; 3 4"], "input")
    x, w = np.ones((2, 3, 3)), np.ones((1, 2, 2))
    with pytest.raises(CnnlabError, match="2 input channels but 1 filter channels"):
        ar.convolve(x, w)
    with pytest.raises(CnnlabError, match="does not fit"):
        ar.convolve(np.ones((1, 3, 3)), np.ones((1, 2, 2)), dilation=3)
    with pytest.raises(CnnlabError, match="padding <= kernel/2"):
        ar.max_pool(np.ones((1, 4, 4)), 2, padding=2)
    with pytest.raises(CnnlabError, match="empty"):
        ar.max_patch(np.ones((1, 2, 2)), low=1, high=1)


# ----------------------------------------------------------------------------- CLI

def run_cli(argv: list[str], capsys) -> str:
    parser = argparse.ArgumentParser(prog="cnnlab")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_cli_conv_text_and_json(capsys):
    base = ["conv", "--input", INPUT_1, "--input", INPUT_2, "--filter", FILTER_1, "--filter", FILTER_2]
    text = run_cli(base + ["--pool", "2", "--pool-stride", "1", "--patch"], capsys)
    assert "(a) Convolution of 2 input map(s) of 5x5" in text
    assert "(b) Max pooling of the output" in text and "(c) Maximally activating input patch" in text
    data = json.loads(run_cli(base + ["--bias", "1", "--patch", "--json"], capsys))
    assert data["conv"]["combined"] == [[v + 1 for v in row] for row in COMBINED]
    assert data["conv"]["channels"][0]["output"] == MAP_1
    assert data["patch"]["patch"][0][0] == [1, None, -1] and data["patch"]["max_response"] == 12
    assert data["torch_check"]["conv"]["max_abs_difference"] == 0


def test_cli_conv_from_yaml_and_json_files(tmp_path, capsys):
    yml = tmp_path / "ex.yaml"
    yml.write_text(f"inputs: ['{INPUT_1}', '{INPUT_2}']\nfilters:\n  - [[1, 0, -1], [1, 0, -1], [1, 0, -1]]\n"
                   f"  - '{FILTER_2}'\npool: {{kernel: 3, stride: 1}}\n")
    data = json.loads(run_cli(["conv", "--file", str(yml), "--json"], capsys))
    assert data["conv"]["combined"] == COMBINED and data["pool"]["outputs"] == [[[8]]]
    js = tmp_path / "ex.json"
    js.write_text(json.dumps({"inputs": [INPUT_1], "pool": 2}))
    data = json.loads(run_cli(["conv", "--file", str(js), "--json", "--pool-stride", "3"], capsys))
    # windows at rows/cols 0-1 and 3-4 of input 1: max(1,2,0,1), max(1,3,3,1), max(2,1,3,0), max(1,0,1,2)
    assert data["pool"]["source"] == "input" and data["pool"]["outputs"] == [[[2, 3], [3, 2]]]


def test_cli_conv_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: ['1 2; 3 4']\npaddng: 1\n")
    with pytest.raises(CnnlabError, match="unknown key 'paddng'.*did you mean 'padding'"):
        cli.read_problem_file(bad)
    with pytest.raises(CnnlabError, match="problem file not found"):
        cli.read_problem_file(tmp_path / "missing.json")
    with pytest.raises(CnnlabError, match="nothing to do"):
        cli.solve(cli.problem_from_mapping({"inputs": ["1 2; 3 4"]}))
    with pytest.raises(CnnlabError, match="'stride' must be a whole number"):
        cli.problem_from_mapping({"inputs": ["1 2; 3 4"], "filters": ["1"], "stride": 1.5})
