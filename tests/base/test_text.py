"""cnnlab.text: the one markdown-table writer and the one AxB size reader (issue 32), as their callers print them."""
from __future__ import annotations

import pytest
import torch

from cnnlab.inference.ensemble import EnsembleReport
from cnnlab.text import markdown_table, parse_size


@pytest.mark.parametrize(("text", "n", "size"), [
    ("256x256", 2, (256, 256)), (" 64 X 32 ", 2, (64, 32)), ("3x64x64", 3, (3, 64, 64)),
    ("256x256", 3, None), ("256x", 2, None), ("0x5", 2, None), ("ax5", 2, None), ("-1x5", 2, None),
    ("2.5x4", 2, None), ("²x2", 2, None), ("", 2, None)])
def test_parse_size_reads_n_positive_numbers_or_says_none(text, n, size):
    assert parse_size(text, n) == size


def test_the_ensemble_table_is_the_markdown_table_it_always_printed():
    labels = torch.tensor([0, 1, 1])
    probs = [torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8]]), torch.tensor([[0.6, 0.4], [0.1, 0.9], [0.7, 0.3]])]
    assert EnsembleReport.of(["a", "b"], probs, labels).table() == (
        "| model | accuracy |\n|---|---|\n| a | 0.6667 |\n| b | 0.6667 |\n"
        "| **ensemble of 2** | **1.0000** (+0.3333 vs best member) |")


def test_markdown_table_escapes_pipes_and_markup_in_every_cell():
    assert markdown_table(["a|b"], [["<i>x</i>"]]) == "| a\\|b |\n|---|\n| &lt;i&gt;x&lt;/i&gt; |"
