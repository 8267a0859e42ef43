"""train.tta auto (engine/summary.py choose_flips): the run scores validation in one pass and with its flips, keeps
the flips only where they win, and evaluate, predict and the report follow what it chose.

Oracles: models that answer every image with a fixed map, so both outcomes of the choice are built by hand (a
template right only the way up loses under the flips; one wrong on a column its mirror has right gains); strict
Dice counted by hand from softmax maps computed pass by pass with torch for a trained run."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from cnnlab.config import DataConfig, recipe_from_dict
from cnnlab.data.loading import load_split
from cnnlab.data.types import SegData
from cnnlab.engine import summary
from cnnlab.engine.flips import ALL_FLIPS
from cnnlab.engine.run import train
from cnnlab.engine.runtime import resolve_runtime
from cnnlab.engine.steps import Normalizer, Scorer
from cnnlab.engine.summary import choose_flips
from cnnlab.errors import ConfigError
from cnnlab.inference.evaluate import evaluate_run
from cnnlab.inference.predict import load_run, predict_paths, run_flips
from cnnlab.losses.core import build_loss
from cnnlab.tasks import task_for
from conftest import tiny_recipe

FP32 = resolve_runtime("cpu", "fp32", False)
PASSES = [(), (-1,), (-2,), (-2, -1)]


class _Template(nn.Module):
    """Answers every image with the same logits: a flipped image's answer flipped back is the mirrored template,
    so the flips average the template with its mirror images."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1, -1, -1)


def _split(mask: torch.Tensor) -> SegData:
    n, h, w = 2, *mask.shape
    return SegData(torch.zeros(n, 3, h, w, dtype=torch.uint8), mask.expand(n, h, w).to(torch.uint8).clone(),
                   ["a", "b"], ["background", "thing"])


def _scorer(logits: torch.Tensor) -> Scorer:
    return Scorer(task_for("segmentation"), _Template(logits), FP32, Normalizer((0.0,) * 3, (1.0,) * 3), 2,
                  build_loss("cross_entropy", {}), flips=ALL_FLIPS)


def test_tta_auto_drops_flips_that_lose_on_validation():
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:, :4] = 1  # the thing on the left: a template right this way round is wrong in the mirror
    logits = torch.stack([(mask == 0) * 2, (mask == 1) * 4]).float()[None]  # surer of the thing than of the rest
    chosen, choice, val = choose_flips(_scorer(logits), _split(mask))
    # one pass: every pixel right (Dice 1). Flips: each pixel averages softmax(2, 0) and softmax(0, 4) (the
    # mirror), 'thing' at 0.55 everywhere: 'thing' Dice 2 * 32 / (64 + 32), background 0; strict mean 1/3
    assert choice["one_pass"] == pytest.approx(1.0) and choice["flips"] == pytest.approx(1 / 3)
    assert choice["chose"] == "one pass" and chosen.flips == () and val["dice_mean"] == pytest.approx(1.0)
    assert choice["flips_tried"] == ["horizontal", "vertical", "both"] and choice["score"] == "dice_mean"


def test_tta_auto_keeps_flips_that_win_on_validation(monkeypatch):
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:, 2:6] = 1  # symmetric: the mirror of a right answer is right
    logits = torch.stack([mask == 0, mask == 1]).float()[None] * 4
    logits[0, :, :, 2] = torch.tensor([1.0, 0.0])[:, None]  # column 2 wrong, barely; its mirror (5) is right
    chosen, choice, val = choose_flips(_scorer(logits), _split(mask))
    thing_one_pass = 2 * 24 / (24 + 32)  # 24 of the 32 'thing' pixels found, none wrongly
    background = 2 * 32 / (32 + 40)  # all 32 background pixels found, 40 predicted
    assert choice["one_pass"] == pytest.approx((thing_one_pass + background) / 2)
    # flips: column 2 averages softmax(1, 0) and softmax(0, 4) (its mirror), 0.63 for 'thing': every pixel right
    assert choice["flips"] == pytest.approx(1.0) and choice["chose"] == "flips"
    assert chosen.flips == ALL_FLIPS and val["dice_mean"] == pytest.approx(1.0)
    monkeypatch.setattr(summary, "AUTO_MIN_GAIN", 0.2)  # a gain of 0.127 is now too small to pay for four passes
    chosen, choice, _ = choose_flips(_scorer(logits), _split(mask))
    assert 1 - choice["one_pass"] == pytest.approx(0.127, abs=1e-3) and choice["chose"] == "one pass"
    assert chosen.flips == ()


def test_train_tta_takes_true_false_or_auto(tmp_path):
    flips = {"hflip": True}
    assert recipe_from_dict(tiny_recipe(tmp_path, tmp_path, train={"tta": "auto"}, augment=flips)).train.tta == "auto"
    assert recipe_from_dict(tiny_recipe(tmp_path, tmp_path, train={"tta": True}, augment=flips)).train.tta is True
    with pytest.raises(ConfigError, match="'train.tta' must be true, false or auto, got 'sometimes'"):
        recipe_from_dict(tiny_recipe(tmp_path, tmp_path, train={"tta": "sometimes"}, augment=flips))
    with pytest.raises(ConfigError, match="train.tta.*needs augment.hflip"):  # auto too needs flips to try
        recipe_from_dict(tiny_recipe(tmp_path, tmp_path, train={"tta": "auto"}))


def _strict_dice(probs: torch.Tensor, truth: torch.Tensor) -> float:
    pred, scores = probs.argmax(1), []
    for c in range(probs.shape[1]):
        p, t = pred == c, truth == c
        if t.any():
            scores.append(2 * (p & t).sum().item() / (p.sum().item() + t.sum().item()))
    return sum(scores) / len(scores)


def _by_hand(model: nn.Module, norm: Normalizer, split: SegData) -> tuple[float, float]:
    """Strict mean Dice of one pass and of the four passes averaged, each softmax computed with torch."""
    x = norm(split.images.float() / 255)
    with torch.no_grad():
        maps = [model(x.flip(d)).flip(d).softmax(1) if d else model(x).softmax(1) for d in PASSES]
    truth = split.masks.long()
    return _strict_dice(maps[0], truth), _strict_dice(sum(maps) / 4, truth)


@pytest.fixture(scope="module")
def auto_run(endovis_root, tmp_path_factory):
    raw = tiny_recipe(endovis_root, tmp_path_factory.mktemp("runs"), augment={"hflip": True, "vflip": True},
                      train={"tta": "auto", "precision": "fp32", "channels_last": False})
    return train(recipe_from_dict(raw))


def test_a_tta_auto_run_tests_and_is_followed_with_what_validation_chose(auto_run, endovis_root, tmp_path):
    run = load_run(auto_run, device="cpu")
    cfg = DataConfig(format="endovis", root=str(endovis_root))
    val_one, val_flips = _by_hand(run.model, run.norm, load_split(cfg, cfg.val))
    test_one, test_flips = _by_hand(run.model, run.norm, load_split(cfg, cfg.test))
    s = json.loads((auto_run / "summary.json").read_text())
    c = s["tta_choice"]
    assert c["one_pass"] == pytest.approx(val_one, abs=1e-6) and c["flips"] == pytest.approx(val_flips, abs=1e-6)
    kept = val_flips > val_one + summary.AUTO_MIN_GAIN
    assert c["chose"] == ("flips" if kept else "one pass")
    assert s["test_time_flips"] == (["horizontal", "vertical", "both"] if kept else [])
    assert s["metrics"]["dice_mean"] == pytest.approx(test_flips if kept else test_one, abs=1e-6)
    assert s["validation"]["dice_mean"] == pytest.approx(val_flips if kept else val_one, abs=1e-6)
    again, _ = evaluate_run(auto_run, out=tmp_path / "e", device="cpu", progress=False)  # default: as the run
    assert again["metrics"]["dice_mean"] == pytest.approx(s["metrics"]["dice_mean"], abs=1e-6)
    forced, _ = evaluate_run(auto_run, out=tmp_path / "f", device="cpu", progress=False, tta=not kept)
    assert forced["metrics"]["dice_mean"] == pytest.approx(test_one if kept else test_flips, abs=1e-6)
    index = predict_paths(run, [endovis_root / "segmentation" / "test"], tmp_path / "p", progress=False)
    assert index["tta_flips"] == s["test_time_flips"] and any("train.tta auto" in n for n in index["notes"])
    from cnnlab.report.build import write_run_report

    write_run_report(auto_run)
    assert f", chosen by train.tta auto on validation (dice_mean {val_one:.4f} in one pass, {val_flips:.4f} with " \
           "the flips)" in \
        (auto_run / "report.md").read_text()


def test_inference_follows_the_choice_in_summary_json_either_way(auto_run, tmp_path):
    """Whichever way the run chose, a run dir whose summary.json says the other is followed the other way: the
    choice is read from the run, not made again."""
    for chose, names in (("flips", ["horizontal", "vertical", "both"]), ("one pass", [])):
        copy = tmp_path / chose.replace(" ", "_")
        shutil.copytree(auto_run, copy)
        s = json.loads((copy / "summary.json").read_text())
        s["tta_choice"]["chose"], s["test_time_flips"] = chose, names
        (copy / "summary.json").write_text(json.dumps(s))
        run = load_run(copy, device="cpu")
        assert run_flips(run, None) == (ALL_FLIPS if names else ())
        assert run_flips(run, True) == ALL_FLIPS and run_flips(run, False) == ()
        assert any(f"validation chose {chose}" in n for n in run.notes)
    (copy / "summary.json").unlink()  # not finished: nothing chosen yet, one pass
    unfinished = load_run(copy, device="cpu")
    assert run_flips(unfinished, None) == () and any("has not chosen" in n for n in unfinished.notes)
