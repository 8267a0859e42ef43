"""What every task answers, and the answers two or more tasks share.

A task (segmentation, classification, colorization) is one object owning everything that differs between them:
how a batch is made from a split, how metrics accumulate over a split, what a prediction is, which end-of-run
figures and summary.json entries a run gets, and what predict and export write. The engine, inference and the
report call these methods instead of asking which data type they hold, so a task is changed (or added) in one
module. The engine keeps the loops, the devices and the processes; a task never runs a model itself: where it
needs the model's output, the engine hands it a function that computes it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from cnnlab.config import AugmentConfig, Recipe
from cnnlab.data.augment import augment_batch, is_identity
from cnnlab.data.mask_encoding import MaskEncoding
from cnnlab.errors import CnnlabError
from cnnlab.losses.core import Loss
from cnnlab.metrics.argmax import class_argmax
from cnnlab.metrics.confusion import ConfusionMatrix
from cnnlab.metrics.names import labelled

Reduce = Callable[[torch.Tensor], torch.Tensor]       # sums a tensor over processes (identity in one process)
Norm = Callable[[torch.Tensor], torch.Tensor]         # per-channel normalisation of [0, 1] images


class Placement(Protocol):
    """Where a batch goes: the engine's Runtime (device, memory format) seen from below the engine."""

    device: torch.device

    def to_input(self, x: torch.Tensor) -> torch.Tensor: ...


class Tally(Protocol):
    """Metrics accumulated batch by batch over a split (each process its shard), then summed over processes."""

    def add(self, out: torch.Tensor, target: torch.Tensor) -> None: ...

    def result(self, reduce: Reduce) -> tuple[dict, ConfusionMatrix | None]: ...


class NativeScores(Protocol):
    """`cnnlab evaluate --native`'s hook (Task.native_keeper): handed each batch of trained-size logits, it scores
    them at the native split's size (HxW) and keeps the prediction there."""

    size: tuple[int, int]

    def __call__(self, out: torch.Tensor, idx: torch.Tensor) -> None: ...

    def prediction(self) -> torch.Tensor | None: ...

    def result(self) -> tuple[dict, ConfusionMatrix]: ...


class Task:
    """Defaults shared by the tasks; each task module overrides what differs (one level of inheritance)."""

    name: str = ""
    data_type: type = object
    headline: str | None = None  # the validation metric shown on each epoch's line
    selects: tuple[str, ...] = ("auto",)  # train.select values: auto picks best.pt by the task's own score
    dense: bool = False          # one output per pixel: tiled where training crops leave part of an image unseen
    losses: tuple[str, ...] = ()  # the loss.name values its outputs and targets fit (soft Dice needs a map per class)
    predicts: bool = True        # predict, evaluate and export handle runs of this task
    class_scores: bool = True    # outputs are class scores: test-time flips (train.tta) average their softmax
    ensembles: bool = False      # `cnnlab ensemble` soft-votes its runs: one class-probability row per image, whose
    #                              mean over members is scored against the split's labels (accuracy)
    # the metrics a study compares, its headline first (the study table and report, the check of a study file's
    # `metric:`); (): every number its runs' summaries hold
    study_metrics: tuple[str, ...] = ()
    # how its numbers are computed, one paragraph (table.md, report.md/html, the terminal): backticks name
    # summary.json keys, {KEY} is that metric's label (conventions_text fills them from metrics.names)
    conventions: str = ""
    # the same for a paper, in LaTeX, {split} filled in by the report; "": the plain paragraph, escaped
    conventions_tex: str = ""

    def conventions_text(self) -> str:
        """The conventions paragraph, each metric named by its label (metrics.names)."""
        return labelled(self.conventions)

    def reached(self, summary: dict) -> tuple[str, object, list[tuple[str, object]]]:
        """What a paper's results sentence says a run reached (report/latex.py), from its summary.json: its headline
        number in words and its value, then further (words, value) pairs; the loss where the task's own number is
        missing."""
        return "a loss of", summary.get("metrics", {}).get("loss"), []

    def fits(self, data: object) -> bool:
        """Whether a split holds this task's kind of samples."""
        return isinstance(data, self.data_type)

    def num_outputs(self, class_names: list[str]) -> int:
        """Output channels of the model: one per class (per colour channel for colorization)."""
        return len(class_names)

    def ignore_index(self, data: object) -> int | None:
        """Target value excluded from loss and metrics."""
        return None

    def make_batch(self, data, idx: torch.Tensor, rt: Placement, norm: Norm, aug: AugmentConfig | None = None,
                   g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 samples -> normalised float inputs on the device (augmented when aug is given) and targets."""
        raise NotImplementedError

    def patches(self, data, idx: torch.Tensor, patch: tuple[int, int], foreground: float, g: torch.Generator):
        """A split of one random patch per sample in idx (data.patch); only dense tasks cut patches."""
        raise CnnlabError(f"data.patch is for segmentation runs, not '{self.name}'", "remove data.patch")

    def shrink_batch(self, x: torch.Tensor, y: torch.Tensor, size: tuple[int, int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch at a smaller size (train.size_schedule): inputs area-averaged (each output pixel the
        mean of the pixels it covers), targets kept as they are (one label per image); dense tasks resize their
        targets too."""
        return shrink_images(x, size), y

    def tally(self, data, loss_fn: Loss) -> Tally:
        """A fresh accumulator of this task's metrics over a split."""
        raise NotImplementedError

    def selection_score(self, metrics: dict, select: str = "auto") -> float:
        """The validation number that picks the best epoch (higher is better); select: train.select (auto: the
        task's own; segmentation also takes miou)."""
        return -metrics["loss"]

    def checkpoint_entries(self, recipe: Recipe, train) -> dict:
        """What a checkpoint keeps beyond weights, recipe and normalisation to read the outputs later."""
        return {}

    def fit_entries(self, val: dict, train_metrics: Callable[[], dict]) -> dict:
        """summary.json entries that need another evaluation (run by every process under DDP)."""
        return {}

    def predicted_samples(self, split) -> int:
        """How many leading samples of the evaluated split the end of a run keeps a prediction of, for its summary
        entries and figures (0: none)."""
        return 0

    def prediction_batch(self, logits: torch.Tensor) -> torch.Tensor:
        """What is kept of one batch's logits (float32, CPU): the prediction is these pieces concatenated. Kept
        per batch so that a large test split never holds its N x K x H x W logits at once."""
        return logits

    def test_entries(self, split, cm: ConfusionMatrix | None, pred: torch.Tensor | None) -> dict:
        """summary.json (and evaluate_*.json) entries beyond the metrics, from the tested split."""
        return {}

    def keeper(self, split) -> "PredictionKeeper":
        """What an evaluation of split keeps of each batch of logits (the hook evaluate hands them to): the task's
        prediction of its first predicted_samples."""
        return PredictionKeeper(self, self.predicted_samples(split))

    def native_keeper(self, native) -> NativeScores:
        """`cnnlab evaluate --native`'s hook: the trained-size logits scored against `native`, the split decoded at
        the images' own size; its result() replaces the trained-size metrics. Per-pixel tasks only."""
        raise CnnlabError(f"--native applies to segmentation runs; this is a {self.name} run")

    def evaluate_entries(self, split, pred: torch.Tensor | None, entries: dict, at: str) -> dict:
        """evaluate_*.json entries beyond test_entries (entries: those written so far; at: the size the outputs
        were scored at, in words)."""
        return {}

    def figures(self, fig_dir: Path, split, pred: torch.Tensor | None, cm: ConfusionMatrix | None) -> list[Path]:
        """The task's end-of-run figures, drawn by cnnlab.figures into fig_dir."""
        return []

    def require_inference(self, command: str) -> None:
        """One line for a command (predict, evaluate, export) that does not handle this task."""
        if not self.predicts:
            raise CnnlabError(f"{command} handles segmentation and classification runs, not '{self.name}'")

    def mask_encoding(self, encoding: MaskEncoding) -> dict | None:
        """How written masks encode classes (predict.json, the export's preprocess JSON); None without masks."""
        return None

    def export_output(self) -> str:
        """How an application reads the exported model's output (the export's preprocess JSON)."""
        return "logits N x K; softmax over dim 1 gives class probabilities"

    def planned_outputs(self, out: Path, stems: list[str], overlays: bool = True) -> list[Path]:
        """The files predict will write for these images (checked before anything is written); overlays: False
        where the user asked for the masks alone (no picture per image, the slow part for a fast model)."""
        return []

    def write_prediction(self, out: Path, stem: str, path: Path, image: torch.Tensor, probs: torch.Tensor,
                         class_names: list[str], encoding: MaskEncoding, overlays: bool = True) -> dict:
        """Write what predict makes of one image; returns its entry of predict.json's "images"."""
        raise NotImplementedError

    def finish_predictions(self, out: Path, entries: list[dict], class_names: list[str]) -> None:
        """Files predict writes once all images are done."""

    def predict_lines(self, result: dict, out: str, overlays: bool = True) -> list[str]:
        """What `cnnlab predict` prints of its result (predict.json's content) once every image is written; out:
        the output folder as the user wrote it."""
        return []


class PredictionKeeper:
    """The task's prediction of samples [0, n) of an evaluated split, kept batch by batch while evaluate scores the
    split (its on_logits hook): one pass of the model gives the metrics and the prediction."""

    def __init__(self, task: Task, n: int) -> None:
        self.task, self.n, self.parts = task, n, []

    def __call__(self, out: torch.Tensor, idx: torch.Tensor) -> None:
        take = idx < self.n
        if bool(take.any()):
            self.keep(out[take])

    def keep(self, logits: torch.Tensor) -> None:
        """Keep the prediction of a batch of logits of kept samples."""
        self.parts.append(self.task.prediction_batch(logits.float().cpu()))

    def prediction(self) -> torch.Tensor | None:
        """The pieces in order, concatenated; None where nothing was kept."""
        return torch.cat(self.parts) if self.parts else None


def label_batch(images: torch.Tensor, targets: torch.Tensor, idx: torch.Tensor, rt: Placement, norm: Norm,
                aug: AugmentConfig | None, g: torch.Generator | None, dense: bool,
                fill: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and class targets (labels, or masks warped with their images when dense) as a batch."""
    x = images[idx].to(rt.device, non_blocking=True).float().div_(255)
    y = targets[idx].to(rt.device, non_blocking=True)
    if aug is not None and not is_identity(aug):
        x, m = augment_batch(x, y if dense else None, aug, g, fill)
        y = m if dense else y
    return rt.to_input(norm(x)), y.long()


class LabelTally:
    """Loss and confusion matrix over a split of class targets; segmentation adds the course's soft Dice."""

    def __init__(self, loss_fn: Loss, class_names: list[str], size: int, ignore_index: int | None = None) -> None:
        self.loss_fn, self.class_names, self.size, self.ignore = loss_fn, class_names, size, ignore_index
        self.cm = ConfusionMatrix(len(class_names), ignore_index)
        self.loss_sum, self.soft_sum, self.n_batches = 0.0, 0.0, 0

    def add(self, out: torch.Tensor, target: torch.Tensor) -> None:
        out = out.float()
        self.loss_sum += float(self.loss_fn(out, target)) * len(target)
        self.cm.update(class_argmax(out, 1), target)
        self.soft_sum += self.soft_dice(out, target)
        self.n_batches += 1

    def soft_dice(self, out: torch.Tensor, target: torch.Tensor) -> float:
        """A batch's soft Dice (segmentation only; 0 here)."""
        return 0.0

    def result(self, reduce: Reduce) -> tuple[dict, ConfusionMatrix]:
        """Counts from every process's shard summed: the metrics of the whole split."""
        self.cm.mat = reduce(self.cm.mat)  # under DDP: counts from every rank's shard = the single-process matrix
        sums = reduce(torch.tensor([self.loss_sum, self.soft_sum, self.n_batches], dtype=torch.float64))
        loss_sum, soft_sum, n_batches = sums.tolist()
        metrics = {"loss": loss_sum / max(self.size, 1)}
        metrics.update(self.metrics(soft_sum, n_batches))
        return metrics, self.cm

    def metrics(self, soft_sum: float, n_batches: float) -> dict:
        """Metrics beyond the loss, from the summed counts."""
        return {"accuracy": self.cm.accuracy()}


def shrink_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float images N x C x H x W downscaled to size, in the memory format they came in."""
    out = torch.nn.functional.interpolate(x, size=size, mode="area")
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
