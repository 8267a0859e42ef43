"""Ensembles of trained runs: soft voting over members that each keep their own normalisation."""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import train
from cnnlab.errors import CnnlabError


@pytest.fixture(scope="module")
def digit_runs(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("ens")
    base = {"name": "d", "task": "classification", "out": str(out),
            "data": {"format": "digits", "root": ".", "val": "test"},
            "model": {"name": "mlp", "params": {"hidden": [16]}}, "loss": {"name": "cross_entropy"},
            "train": {"epochs": 2, "batch_size": 64, "progress": False}}
    return [train(recipe_from_dict(base, [f"train.seed={s}", f"name=d{s}"])) for s in (0, 1)]


def test_ensemble_is_the_mean_of_member_probabilities(digit_runs, capsys):
    from cnnlab.data.loading import load_split
    from cnnlab.engine.steps import predict_logits
    from cnnlab.inference.ensemble import ensemble_runs
    from cnnlab.inference.predict import load_run

    report = ensemble_runs(digit_runs)
    runs = [load_run(d) for d in digit_runs]
    data = load_split(runs[0].recipe.data, "test")
    by_hand = sum(predict_logits(r.scorer(64), data).softmax(1) for r in runs) / 2
    assert torch.allclose(report.probs, by_hand, atol=1e-6)
    assert report.ensemble_accuracy == pytest.approx(float((by_hand.argmax(1) == data.labels).float().mean()))
    assert main(["ensemble", *map(str, digit_runs)]) == 0
    assert "ensemble of 2" in capsys.readouterr().out


def test_ensemble_needs_two_classification_runs(digit_runs):
    from cnnlab.inference.ensemble import ensemble_runs

    with pytest.raises(CnnlabError, match="two or more"):
        ensemble_runs(digit_runs[:1])


def test_ensemble_refuses_a_run_whose_task_it_cannot_vote_on(digit_runs, monkeypatch, capsys):
    """The task object says whether its runs can be soft-voted (no check of task names in ensemble.py); the
    refusal names the run dir and hints at a command that works for any runs."""
    from cnnlab.inference import ensemble

    real = ensemble.load_run
    seg_dir = digit_runs[1]
    monkeypatch.setattr(ensemble, "load_run",
                        lambda d: dataclasses.replace(real(d), task="segmentation") if d == seg_dir else real(d))
    with pytest.raises(CnnlabError, match=f"^{seg_dir}: a segmentation run; an ensemble averages") as e:
        ensemble.ensemble_runs(digit_runs)
    command = e.value.hint.removeprefix("compare the runs instead: ")
    assert shlex.split(command) == ["cnnlab", "compare", *map(str, digit_runs)]
    assert main(shlex.split(command)[1:]) == 0  # the hint is a working command
    assert "d0" in capsys.readouterr().out
