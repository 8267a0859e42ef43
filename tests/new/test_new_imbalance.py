"""`cnnlab new` on a multi-class set writes Dice + CE with class weights (the rule measured in docs/results.md),
naming the smallest classes' pixel shares; a binary set keeps its loss (issue 39)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.config import load_recipe
from cnnlab.data.synthetic import street
from cnnlab.losses.core import build_loss, needs_weights
from cnnlab.new.imbalance import MULTI_CLASS_PARAMS, dominant, multi_class_loss
from cnnlab.new.recipe import write_recipe


@pytest.fixture(autouse=True)
def _no_step_timing(monkeypatch):
    """A fixed step time stands in for `new`'s measurement (as in test_new_recipe.py): these tests are about the
    loss it writes."""
    import cnnlab.new.recipe as nr
    from cnnlab.new.estimate import StepTimes

    monkeypatch.setattr(nr, "measure_steps", lambda r, c, k, batch: StepTimes(0.5, 0.05, batch, 1, "cpu, fp32"))


def test_rule_names_the_smallest_shares_and_leaves_binary_sets_alone():
    names, shares = ["sky", "road", "pole", "sign"], [0.4, 0.587, 0.01, 0.003]
    params, why = multi_class_loss(names, shares)
    assert params == MULTI_CLASS_PARAMS and needs_weights("dice_ce", params)
    assert "sign 0.3%, pole 1.0%, sky 40.0%, road 58.7%" in why and "ENet" in why
    assert multi_class_loss(["background", "polyp"], [0.9, 0.1]) is None
    # a multi-class set on a dominant background (the course data: 85%) keeps Dice + CE unweighted, and says why
    course = [0.854, 0.017, 0.035, 0.056, 0.011, 0.002, 0.005, 0.019]
    names = [f"class_{i}" for i in range(8)]
    assert multi_class_loss(names, course) is None
    assert dominant(names, course).startswith("; no class weights: class_0 covers 85% of pixels")
    assert dominant(names, shares) == "" and dominant(["background", "polyp"], [0.9, 0.1]) == ""


def test_street_stand_in_has_large_regions_and_small_classes():
    # 12 frames here; the 240 measured on: pole 1.0%, sign 0.3%, pedestrian 0.3% (docs/results.md)
    masks = np.stack([street.render(np.random.default_rng([0, i]), 120, 160)[1] for i in range(1, 13)])
    s = street.shares(masks)
    assert 0.0015 <= s["sign"] < 0.01 and 0.002 <= s["pedestrian"] < 0.01 and 0.005 <= s["pole"] < 0.02
    assert min(s["sky"], s["building"], s["road"], s["pavement"], s["tree"]) > 0.05


def test_new_writes_weighted_dice_ce_for_a_multi_class_set(tmp_path: Path):
    data = street.write(tmp_path / "street", n=12, height=48, width=64)
    out = write_recipe("segmentation", data / "images", data / "masks", tmp_path / "r.yaml", encoder="none")
    r = load_recipe(out)
    assert r.loss.name == "dice_ce" and r.loss.params == MULTI_CLASS_PARAMS
    assert "ENet class weights" in out.read_text()
    build_loss(r.loss.name, r.loss.params, weights=np.ones(9))  # the written params build


def test_new_keeps_the_binary_loss(tmp_path: Path):
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (tmp_path / "d" / folder).mkdir(parents=True)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (42, 70), dtype=np.uint8)).save(tmp_path / "d" / "images" / f"s{i}.png")
        mask = np.zeros((42, 70), np.uint8)
        mask[:20] = 255
        Image.fromarray(mask).save(tmp_path / "d" / "masks" / f"s{i}.png")
    r = load_recipe(write_recipe("segmentation", tmp_path / "d" / "images", tmp_path / "d" / "masks",
                                 tmp_path / "b.yaml", encoder="none"))
    assert r.loss.name == "dice" and r.loss.params == {}
