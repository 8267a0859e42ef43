"""Ensembles: average the softmax outputs of several models (or checkpoints) and compare with each member."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from cnnlab.data.loading import load_split
from cnnlab.engine.steps import predict_logits
from cnnlab.errors import CnnlabError
from cnnlab.inference.predict import load_run


def scale_uint8(images: torch.Tensor) -> torch.Tensor:
    """The default input preparation: uint8 0..255 -> float 0..1."""
    return images.float() / 255.0


@torch.no_grad()
def predict_probs(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                  prepare: Callable[[torch.Tensor], torch.Tensor] = scale_uint8,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Softmax probabilities N x K (float32, on the CPU) in eval mode; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = prepare(images[start:start + batch_size]).to(device)
            out.append(torch.softmax(model(x).float(), dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


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

    def table(self) -> str:
        """Markdown table, members first, ensemble last, with the gain over the best member."""
        rows = ["| model | accuracy |", "|---|---|"]
        rows += [f"| {n} | {a:.4f} |" for n, a in zip(self.member_names, self.member_accuracy)]
        best = max(self.member_accuracy)
        rows.append(f"| **ensemble of {len(self.member_names)}** | **{self.ensemble_accuracy:.4f}** "
                    f"({self.ensemble_accuracy - best:+.4f} vs best member) |")
        return "\n".join(rows)


def ensemble_report(members: Mapping[str, nn.Module] | Sequence[nn.Module], images: torch.Tensor,
                    labels: torch.Tensor, batch_size: int = 256,
                    prepare: Callable[[torch.Tensor], torch.Tensor] = scale_uint8,
                    device: str | torch.device = "cpu") -> EnsembleReport:
    """Evaluate each member and the soft-voting ensemble on the same images."""
    named = dict(members) if isinstance(members, Mapping) else {f"member {i + 1}": m for i, m in enumerate(members)}
    probs = [predict_probs(m, images, batch_size, prepare, device) for m in named.values()]
    mean = average_probs(probs)
    return EnsembleReport(list(named), [accuracy(p, labels) for p in probs], accuracy(mean, labels), mean)


def load_members(paths: Sequence[str | Path], build: Callable[[Path], nn.Module]) -> dict[str, nn.Module]:
    """Members from checkpoints; `build` turns one checkpoint path into a model (the engine knows the recipe)."""
    members = {}
    for p in map(Path, paths):
        if not p.is_file():
            raise CnnlabError(f"ensemble member not found: {p}", "pass checkpoint files (e.g. runs/<name>/best.pt)")
        name = p.parent.name + "/" + p.name if p.parent.name else p.name
        members[name] = build(p)
    return members


def ensemble_runs(run_dirs: Sequence[str | Path], split: str | None = None) -> EnsembleReport:
    """Soft-voting ensemble of trained classification runs on one split of the first run's data set.

    Each member keeps its own input normalisation (read from its run dir), so runs with different
    preprocessing can be combined; they must share the data set and classes.
    """
    runs = [load_run(d) for d in run_dirs]
    if len(runs) < 2 or any(r.task != "classification" for r in runs):
        raise CnnlabError("an ensemble needs two or more classification run dirs")
    if any(r.class_names != runs[0].class_names for r in runs):
        raise CnnlabError("ensemble members disagree on the classes", "combine runs trained on the same data set")
    cfg = runs[0].recipe.data
    data = load_split(cfg, split or cfg.test)
    probs = [predict_logits(r.model, data, r.rt, r.norm, 256).softmax(1) for r in runs]
    mean = average_probs(probs)
    names = [Path(d).name for d in run_dirs]
    return EnsembleReport(names, [accuracy(p, data.labels) for p in probs], accuracy(mean, data.labels), mean)
