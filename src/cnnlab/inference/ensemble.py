"""Ensembles: average the softmax outputs of several trained runs and compare with each member."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from cnnlab.data.loading import load_split
from cnnlab.engine.steps import predict_logits
from cnnlab.errors import CnnlabError
from cnnlab.inference.predict import load_run
from cnnlab.tasks import task_for
from cnnlab.text import markdown_table


def average_probs(probs: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """The (weighted) mean of members' probabilities: soft voting."""
    if not probs:
        raise CnnlabError("an ensemble needs at least one member")
    shapes = {tuple(p.shape) for p in probs}
    if len(shapes) != 1:
        raise CnnlabError(f"ensemble members disagree on output shape: {sorted(shapes)}",
                          "all members must be trained on the same classes and evaluated on the same images")
    w = torch.ones(len(probs)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    stacked = torch.stack([p.float() for p in probs])
    return (stacked * (w / w.sum()).view(-1, 1, 1)).sum(0)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of argmax predictions equal to the labels."""
    return float((probs.argmax(1) == labels).float().mean()) if labels.numel() else float("nan")


@dataclass
class EnsembleReport:
    """Accuracy of every member and of their averaged prediction on one split."""

    member_names: list[str]
    member_accuracy: list[float]
    ensemble_accuracy: float
    probs: torch.Tensor  # the ensemble's N x K probabilities (for a confusion matrix)

    @classmethod
    def of(cls, names: list[str], probs: Sequence[torch.Tensor], labels: torch.Tensor) -> EnsembleReport:
        """Score each member's N x K probabilities and their soft vote (the unweighted mean) against the labels."""
        mean = average_probs(probs)
        return cls(names, [accuracy(p, labels) for p in probs], accuracy(mean, labels), mean)

    def table(self) -> str:
        """Markdown table, members first, ensemble last, with the gain over the best member."""
        rows = [[n, f"{a:.4f}"] for n, a in zip(self.member_names, self.member_accuracy)]
        best = max(self.member_accuracy)
        rows.append([f"**ensemble of {len(self.member_names)}**",
                     f"**{self.ensemble_accuracy:.4f}** ({self.ensemble_accuracy - best:+.4f} vs best member)"])
        return markdown_table(["model", "accuracy"], rows)


def ensemble_runs(run_dirs: Sequence[str | Path], split: str | None = None) -> EnsembleReport:
    """Soft-voting ensemble of trained classification runs on one split of the first run's data set.

    Each member keeps its own input normalisation (read from its run dir), so runs with different
    preprocessing can be combined; they must share the data set and classes.
    """
    runs = [load_run(d) for d in run_dirs]
    if len(runs) < 2:
        raise CnnlabError("an ensemble needs two or more classification run dirs")
    for d, r in zip(run_dirs, runs):
        if not task_for(r.task).ensembles:  # the task says whether its outputs can be soft-voted
            raise CnnlabError(f"{d}: a {r.task} run; an ensemble averages the class probabilities of "
                              "classification runs", f"compare the runs instead: cnnlab compare "
                              f"{shlex.join(map(str, run_dirs))}")
    if any(r.class_names != runs[0].class_names for r in runs):
        raise CnnlabError("ensemble members disagree on the classes", "combine runs trained on the same data set")
    cfg = runs[0].recipe.data
    data = load_split(cfg, split or cfg.test, runs[0].recipe.out)
    probs = [predict_logits(r.scorer(256), data).softmax(1) for r in runs]
    return EnsembleReport.of([Path(d).name for d in run_dirs], probs, data.labels)
