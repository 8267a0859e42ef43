"""`cnnlab boundary`: several trained binary runs applied to one split, compared at the boundary."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from cnnlab.data.loading import load_split
from cnnlab.engine.steps import iter_logits
from cnnlab.errors import CnnlabError
from cnnlab.figures.boundary import boundary_figure
from cnnlab.inference.predict import load_run
from cnnlab.metrics.argmax import class_argmax
from cnnlab.metrics.boundary import binary_summary


def compare_boundaries(run_dirs: Sequence[str | Path], out: str | Path, split: str | None = None,
                       width: int = 3) -> tuple[Path, dict[str, dict[str, float]]]:
    """Boundary figure and boundary metrics of several binary runs (e.g. no skip vs skip) on one shared split."""
    runs = [load_run(d) for d in run_dirs]
    if any(len(r.class_names) != 2 for r in runs):
        raise CnnlabError("boundary comparison needs binary segmentation runs (2 classes)")
    data = load_split(runs[0].recipe.data, split or runs[0].recipe.data.test, runs[0].recipe.out)
    preds, metrics = {}, {}
    for d, r in zip(run_dirs, runs):
        label = Path(d).name.split("-20")[0]  # run name without its timestamp
        logits = iter_logits(r.scorer(16), data)  # patch runs: sliding windows
        preds[label] = torch.cat([class_argmax(b, 1) for b in logits])
        metrics[label] = binary_summary(preds[label], data.masks, data.ignore_index, band_width=width)
    path = boundary_figure(data.images, data.masks == 1, preds, out, names=data.names, width=width)
    return path, metrics
