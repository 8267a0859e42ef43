"""Classification figures and the fit note: the confusion matrix's counts against torchmetrics, selection and
wording by hand."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.figures.classification import fit_note, plot_confusion_matrix, plot_misclassified, select_misclassified
from cnnlab.metrics.confusion import ConfusionMatrix


def confusion_counts(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The counts the product draws: cnnlab's one confusion matrix (rows true, columns predicted)."""
    cm = ConfusionMatrix(num_classes)
    cm.update(preds, labels)
    return cm.mat


def test_confusion_counts_match_torchmetrics():
    from torchmetrics.classification import MulticlassConfusionMatrix

    g = torch.Generator().manual_seed(0)
    labels, preds = torch.randint(0, 5, (300,), generator=g), torch.randint(0, 5, (300,), generator=g)
    expect = MulticlassConfusionMatrix(num_classes=5)(preds, labels)
    assert torch.equal(confusion_counts(labels, preds, 5), expect)
    assert confusion_counts(torch.tensor([2]), torch.tensor([0]), 3).tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]


def test_select_misclassified_orders_by_confidence():
    labels = torch.tensor([0, 1, 2, 0, 1])
    preds = torch.tensor([0, 0, 1, 2, 1])  # wrong: samples 1, 2, 3
    probs = torch.tensor([[.9, .1, 0], [.6, .4, 0], [.1, .8, .1], [.2, .1, .7], [0, 1, 0]])
    assert select_misclassified(labels, preds).tolist() == [1, 2, 3]
    assert select_misclassified(labels, preds, probs).tolist() == [2, 3, 1]  # 0.8, 0.7, 0.6
    assert select_misclassified(labels, preds, probs, max_items=1).tolist() == [2]


def test_figures_are_written_as_png(tmp_path):
    labels, preds = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 1])
    cm = plot_confusion_matrix(confusion_counts(labels, preds, 3), ["a", "b", "c"], tmp_path / "f" / "cm.png")
    images = torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8)
    gal = plot_misclassified(images, labels, preds, ["a", "b", "c"], tmp_path / "gal.png")
    none = plot_misclassified(images, labels, labels, ["a", "b", "c"], tmp_path / "none.png")
    for path in (cm, gal, none):
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) > 100
    with pytest.raises(CnnlabError, match="2 class names"):
        plot_confusion_matrix(confusion_counts(labels, preds, 3), ["a", "b"], tmp_path / "x.png")


@pytest.mark.parametrize("train, val, start", [
    (0.99, 0.80, "Overfitting"), (0.97, 0.92, "Mild overfitting"), (0.60, 0.59, "Underfitting"),
    (0.90, 0.96, "Validation above training"), (0.95, 0.94, "Good fit"),
])
def test_fit_note_reads_the_gap(train, val, start):
    note = fit_note(train, val)
    assert note.startswith(start + ":") and f"gap {100 * (train - val):+.1f} points" in note


def test_fit_note_refuses_percentages():
    with pytest.raises(CnnlabError, match="train accuracy must be in"):
        fit_note(95.0, 0.9)
