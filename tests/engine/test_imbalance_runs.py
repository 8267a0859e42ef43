"""Runs trained with class-weighted losses: evaluated with the weights their checkpoint stores (issue 39)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cnnlab.config import recipe_from_dict
from cnnlab.data.loading import load_run_data
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.run import train
from cnnlab.inference.evaluate import evaluate_run
from cnnlab.losses.class_weights import weights_for
from conftest import tiny_recipe


@pytest.fixture(scope="module")
def weighted_run(endovis_root: Path, tmp_path_factory) -> Path:
    """One short weighted_ce run (median-frequency weights) on the tiny EndoVis stand-in."""
    out = tmp_path_factory.mktemp("wce")
    raw = tiny_recipe(endovis_root, out, loss={"name": "weighted_ce", "params": {"scheme": "median"}},
                      train={"epochs": 1, "threads": 1})
    return train(recipe_from_dict(raw))


def test_weighted_ce_run_stores_its_weights_and_evaluates(weighted_run: Path):
    """Regression: evaluate on a weighted_ce run crashed ('Tensor' object has no attribute 'masks'); the weights
    are now those training computed from its masks, stored in the checkpoint."""
    ck = load_checkpoint(weighted_run / "best.pt")
    recipe = recipe_from_dict(ck["recipe"])
    expected = weights_for(load_run_data(recipe.data, recipe.train.seed, recipe.out).train, "median")
    assert torch.allclose(torch.tensor(ck["class_weights"]), expected)
    result, path = evaluate_run(weighted_run, progress=False)
    summary = json.loads((weighted_run / "summary.json").read_text())
    assert result["metrics"]["loss"] == pytest.approx(summary["metrics"]["loss"], rel=1e-4)
    assert path.is_file()


def test_evaluate_does_not_need_the_training_data(weighted_run: Path, tmp_path: Path, monkeypatch):
    """The stored weights are used as they are: the training split is never read again for them."""
    from cnnlab.inference import evaluate as ev

    def no_training_data(*args, **kwargs):
        raise AssertionError("evaluate re-read the training split for class weights")

    monkeypatch.setattr(ev, "load_run_data", no_training_data)
    copy = tmp_path / "run"
    shutil.copytree(weighted_run, copy)
    result, _ = evaluate_run(copy, progress=False)
    assert result["metrics"]["loss"] > 0


def test_run_saved_before_weights_were_stored_recomputes_them(weighted_run: Path, tmp_path: Path):
    """A checkpoint without class_weights (runs trained before they were stored): the weights come from its
    training split again, the crash of issue 39 (the weights were passed where the split was expected) gone."""
    copy = tmp_path / "old"
    shutil.copytree(weighted_run, copy)
    ck = torch.load(copy / "best.pt", weights_only=False)
    del ck["class_weights"]
    torch.save(ck, copy / "best.pt")
    first, _ = evaluate_run(weighted_run, progress=False)
    result, _ = evaluate_run(copy, progress=False)
    assert result["metrics"]["loss"] == pytest.approx(first["metrics"]["loss"], rel=1e-5)

