"""A finished run from Python: its metrics, predictions on arrays, evaluations and report (`cnnlab.load_run`).

Why a class over the run dir rather than the loaded model: the run dir is what `cnnlab train` leaves and what every
command reads, so a Run made from a path in a notebook, from `cnnlab.train`, or from a colleague's folder is the
same object; the model is rebuilt from best.pt only when something is predicted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image

from cnnlab.config import Recipe
from cnnlab.data.formats.common import image_array, read_input, scale_wide, to_chw
from cnnlab.engine.run_files import has_config, has_summary, read_metrics, read_recipe, read_summary
from cnnlab.errors import CnnlabError
from cnnlab.inference.evaluate import evaluate_run
from cnnlab.inference.predict import TrainedRun, image_probabilities, list_inputs
from cnnlab.inference.predict import load_run as load_trained
from cnnlab.metrics.argmax import class_argmax
from cnnlab.report.build import write_run_report
from cnnlab.tasks import task_for

ImageLike = Union[str, Path, Image.Image, np.ndarray]


@dataclass(frozen=True)
class Prediction:
    """One image's prediction, at the image's own size.

    probabilities: K x H x W (segmentation) or K (classification) float32, in class order (`class_names`).
    labels: segmentation: H x W class indices (int64); classification: the class index.
    mask: segmentation: the mask as the data set stores masks (grey levels, palette indices, RGB colours ...), the
    pixels of the PNG `cnnlab predict` writes; None for classification.
    label: the predicted class name (classification); None for segmentation.
    """

    probabilities: np.ndarray
    class_names: list[str]
    labels: np.ndarray | int
    mask: np.ndarray | None = None
    label: str | None = None


class Run:
    """A run dir written by `cnnlab train` or `cnnlab.train`: metrics, history, predictions, evaluation, report."""

    def __init__(self, run_dir: str | Path, device: str = "auto") -> None:
        self.dir = Path(run_dir)
        if not has_config(self.dir):
            raise CnnlabError(f"{self.dir}: no config.yaml here", "give a run folder written by `cnnlab train`")
        self.device = device
        self._trained: TrainedRun | None = None

    def __repr__(self) -> str:
        done = "finished" if has_summary(self.dir) else "not finished"
        return f"Run('{self.dir}', {done})"

    @property
    def name(self) -> str:
        """The run dir's name: the recipe's name and the time the run started."""
        return self.dir.name

    @property
    def recipe(self) -> Recipe:
        """The resolved recipe the run trained with (its config.yaml)."""
        return read_recipe(self.dir)

    @property
    def summary(self) -> dict:
        """summary.json: test metrics, validation metrics, best epoch, timing, environment, notes."""
        s = read_summary(self.dir)
        if s is None:
            raise CnnlabError(f"{self.dir}: no summary.json (the run has not finished)",
                              f"resume it: cnnlab.resume('{self.dir}')")
        return s

    @property
    def metrics(self) -> dict[str, float]:
        """The best checkpoint's metrics on the test split (on validation where the data has no test split)."""
        return dict(self.summary["metrics"])

    @property
    def history(self) -> list[dict[str, float]]:
        """metrics.csv: one row per epoch (train loss, validation metrics, learning rate, speed)."""
        return [{k: float(v) for k, v in row.items() if v != ""} for row in read_metrics(self.dir)]

    def model(self) -> TrainedRun:
        """The best model rebuilt from best.pt (loaded once, then kept), with its preprocessing and classes."""
        if self._trained is None:
            self._trained = load_trained(self.dir, self.device)
        return self._trained

    def predict(self, images: ImageLike | Sequence[ImageLike], tta: bool | None = None,
                window: tuple[int, int] | None = None, overlap: float = 0.25,
                batch_size: int = 8) -> Prediction | list[Prediction]:
        """Predict images given as file paths (a folder: every image in it), PIL images or numpy arrays (H x W
        grey, H x W x 3 RGB or H x W x 4 RGBA; uint8, or uint16 scaled as 16-bit files are). Images are prepared as
        `cnnlab predict` prepares files, through the same function, so the masks are the same.

        One image gives one Prediction; a list (or a folder) gives a list. tta, window, overlap and batch_size
        are `cnnlab predict`'s --tta (None: as the run's test, train.tta), --window, --overlap and --batch-size."""
        run = self.model()
        task = task_for(run.task)
        task.require_inference("predict")
        single = isinstance(images, (str, Path, Image.Image, np.ndarray)) and not (
            isinstance(images, (str, Path)) and Path(images).is_dir())
        tensors = _tensors(run, [images] if single else images)
        if not tensors:
            raise CnnlabError("no images given to predict", "give a path, a PIL image or a numpy array, or a list")
        out: list[Prediction] = []
        for i in range(0, len(tensors), batch_size):
            chunk = tensors[i: i + batch_size]
            for probs in image_probabilities(run, chunk, tta, window, overlap, batch_size):
                out.append(_prediction(run, probs))
        return out[0] if single else out

    def evaluate(self, data: str | Path | None = None, split: str | None = None, images: str | Path | None = None,
                 masks: str | Path | None = None, fov: str | Path | None = None, native: bool = False,
                 out: str | Path | None = None, progress: bool = False, tta: bool | None = None) -> dict[str, Any]:
        """`cnnlab evaluate`: metrics on a split of the run's data (default its test split), on another data set of
        the same format (data), or on another labelled folder (images, masks, fov). Writes evaluate_<split>.json
        (into out, default the run dir) and returns its content. tta: --tta / --no-tta (None: as the run's test)."""
        folders = {"images": images, "masks": masks, "fov": fov} if (images or masks or fov) else None
        result, _ = evaluate_run(self.dir, data, split, out, device=self.device, native=native, folders=folders,
                                 progress=progress, tta=tta)
        return result

    def report(self) -> Path:
        """Write report.md and the self-contained report.html into the run dir; returns the HTML's path."""
        return write_run_report(self.dir)


def load_run(run_dir: str | Path, device: str = "auto") -> Run:
    """A run dir as a Run (its model is loaded on the first predict); device: auto | cpu | cuda."""
    return Run(run_dir, device)


def _tensors(run: TrainedRun, images: Sequence[ImageLike]) -> list[torch.Tensor]:
    """C x H x W uint8 tensors in the run's colour mode (grey or RGB) from paths, folders, PIL images and arrays."""
    channels = 1 if run.in_channels == 1 else 3
    out: list[torch.Tensor] = []
    for item in images:
        if isinstance(item, (str, Path)):
            files, _ = list_inputs([Path(item)])
            out += [to_chw(read_input(f, channels)) for f in files]  # as predict reads files
        elif isinstance(item, Image.Image):
            out.append(to_chw(image_array(item, channels)))
        elif isinstance(item, np.ndarray):
            out.append(_array_tensor(item))
        else:
            raise CnnlabError(f"cannot predict a {type(item).__name__}",
                              "give file paths, PIL images or numpy arrays (H x W or H x W x 3, uint8)")
    return out


def _array_tensor(a: np.ndarray) -> torch.Tensor:
    """H x W / H x W x C numpy image -> C x H x W uint8 (the channels are converted later, as for files)."""
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise CnnlabError(f"an image array of shape {a.shape}", "give H x W (grey), H x W x 3 (RGB) or H x W x 4")
    if a.dtype == np.uint16:
        a = scale_wide(a)  # as 16-bit files are read: scaled by the image's own maximum
    elif a.dtype != np.uint8:
        raise CnnlabError(f"an image array of dtype {a.dtype}: cnnlab predicts 8-bit images",
                          "convert it, e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1]")
    return to_chw(a)


def _prediction(run: TrainedRun, probs: torch.Tensor) -> Prediction:
    names = list(run.class_names)
    if probs.ndim == 1:  # classification
        k = int(probs.argmax())
        return Prediction(probs.numpy(), names, k, label=names[k])
    labels = class_argmax(probs, 0)  # as the written mask (tasks.segmentation.write_prediction)
    mask = np.asarray(run.encoding.image(labels.numpy()))
    return Prediction(probs.numpy(), names, labels.numpy(), mask=mask)
