"""Classification: one class per image. Labels stay put under augmentation, the metric is accuracy from a
confusion matrix, a prediction is a row of class probabilities."""
from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import torch

from cnnlab.config import AugmentConfig
from cnnlab.data.mask_encoding import MaskEncoding
from cnnlab.data.types import ClsData
from cnnlab.figures.classification import fit_note, plot_confusion_matrix, plot_misclassified
from cnnlab.losses.core import Loss
from cnnlab.metrics.confusion import ConfusionMatrix
from cnnlab.tasks.base import LabelTally, Norm, Placement, Task, label_batch

PROBABILITIES = "probabilities.csv"


class Classification(Task):
    name = "classification"
    losses = ("cross_entropy", "weighted_ce", "lovasz", "ohem_ce")  # one label per image: no soft Dice over pixels
    data_type = ClsData
    headline = "accuracy"
    ensembles = True
    study_metrics = ("accuracy",)
    conventions = "{accuracy} = `accuracy`: share of images whose argmax class is the label."
    conventions_tex = "Accuracy is the share of the {split} images whose argmax class equals the label."

    def reached(self, summary: dict) -> tuple[str, object, list[tuple[str, object]]]:
        """The accuracy, then the training accuracy (the fit note's) where the summary has it."""
        if summary.get("metrics", {}).get("accuracy") is None:
            return super().reached(summary)
        train = [("training accuracy", summary["train_accuracy"])] if "train_accuracy" in summary else []
        return "an accuracy of", summary["metrics"]["accuracy"], train

    def make_batch(self, data: ClsData, idx: torch.Tensor, rt: Placement, norm: Norm,
                   aug: AugmentConfig | None = None, g: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        return label_batch(data.images, data.labels, idx, rt, norm, aug, g, False)

    def tally(self, data: ClsData, loss_fn: Loss) -> LabelTally:
        return LabelTally(loss_fn, data.class_names, len(data))

    def selection_score(self, metrics: dict, select: str = "auto") -> float:
        return metrics["accuracy"]

    def fit_entries(self, val: dict, train_metrics: Callable[[], dict]) -> dict:
        """The over/under-fitting note needs the training accuracy."""
        train_accuracy = train_metrics()["accuracy"]
        return {"train_accuracy": train_accuracy, "fit_note": fit_note(train_accuracy, val["accuracy"])}

    def predicted_samples(self, split: ClsData) -> int:
        return len(split)

    def prediction_batch(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B x K)."""
        return logits.softmax(1)

    def test_entries(self, split: ClsData, cm: ConfusionMatrix | None, pred: torch.Tensor | None) -> dict:
        """Accuracy per class (the share of its images classified as it, i.e. its recall; null without images):
        the trackers log it as per-class Dice/IoU are logged for segmentation."""
        if cm is None:
            return {}
        rows = cm.mat.sum(1).tolist()
        return {"per_class_accuracy": {n: {"accuracy": hit / total if total else None, "images": total}
                                       for n, hit, total in zip(split.class_names, cm.mat.diag().tolist(), rows)}}

    def figures(self, fig_dir: Path, split: ClsData, pred: torch.Tensor | None,
                cm: ConfusionMatrix | None) -> list[Path]:
        """Confusion matrix and a gallery of the most confident mistakes."""
        names = split.class_names
        return [plot_confusion_matrix(cm.mat, names, fig_dir / "confusion_matrix.png"),
                plot_misclassified(split.images, split.labels, pred.argmax(1), names, fig_dir / "misclassified.png",
                                   probs=pred)]

    def planned_outputs(self, out: Path, stems: list[str], overlays: bool = True) -> list[Path]:
        return [out / PROBABILITIES]

    def write_prediction(self, out: Path, stem: str, path: Path, image: torch.Tensor, probs: torch.Tensor,
                         class_names: list[str], encoding: MaskEncoding, overlays: bool = True) -> dict:
        """A row of probabilities.csv: path, predicted class, one probability per class."""
        return {"image": str(path), "predicted": class_names[int(probs.argmax())],
                **{n: float(p) for n, p in zip(class_names, probs.tolist())}}

    def finish_predictions(self, out: Path, entries: list[dict], class_names: list[str]) -> None:
        """One row per image: path, predicted class, one probability column per class."""
        # a non-UTF-8 byte of a file or class name (a Latin-1 caf\xe9) is written as its \u escape, not an error
        with open(out / PROBABILITIES, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
            w = csv.DictWriter(f, fieldnames=["image", "predicted", *class_names])
            w.writeheader()
            w.writerows(entries)

    def predict_lines(self, result: dict, out: str, overlays: bool = True) -> list[str]:
        """Each image's predicted class and probabilities, then where they were written."""
        lines = [f"{row['image']}: {row['predicted']}  ("
                 + "  ".join(f"{n} {row[n]:.3f}" for n in result["class_names"]) + ")" for row in result["images"]]
        return [*lines, f"probabilities of {len(result['images'])} images in {Path(out) / PROBABILITIES}"]
