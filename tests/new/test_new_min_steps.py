"""Issue 23: the segmentation budget of `cnnlab new` guarantees a minimum number of optimizer steps, preferring
more epochs at a smaller size when a tiny data set would otherwise train for a few dozen steps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import cnnlab.new.budget as nb
import cnnlab.new.recipe as nr
from cnnlab.config import load_recipe
from cnnlab.new.estimate import Estimate, StepTimes

S_PER_PIXEL = 1e-3  # stand-in step time of a batch of 4: 64x64 -> 4.096 s per step


def _pairs(base: Path, n: int, side: int) -> tuple[Path, Path]:
    """n grey side x side images with binary masks (top half foreground)."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (base / sub).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(base / "images" / f"s{i}.png")
        mask = np.zeros((side, side), np.uint8)
        mask[: side // 2] = 255
        Image.fromarray(mask).save(base / "masks" / f"s{i}_mask.png")
    return base / "images", base / "masks"


def _fake_steps(monkeypatch) -> None:
    """A step costs S_PER_PIXEL per pixel per 4 images: an epoch costs the same at any batch."""
    def fake(r, channels, classes, batch):
        return StepTimes(S_PER_PIXEL * r.data.size[0] * r.data.size[1] * batch / 4, 0.0, batch, 1, "cpu, fp32")

    monkeypatch.setattr(nr, "measure_steps", fake)


def test_the_batch_is_halved_before_the_epochs_grow():
    assert (nb.MIN_STEPS, nb.MIN_EPOCHS, nb.MIN_BATCH) == (96, 12, 2)
    assert nb.batch_for_steps(16, 4) == 2    # DRIVE: 4 steps x 12 = 48 < 96; at 2: 8 x 12 = 96
    assert nb.batch_for_steps(64, 8) == 8    # 8 x 12 = 96 already
    assert nb.batch_for_steps(40, 8) == 4    # 5 x 12 = 60; at 4: 10 x 12 = 120
    assert nb.batch_for_steps(7, 4) == 2     # 1 x 12; at 2: 3 x 12 = 36, and 2 is the smallest
    assert nb.batch_for_steps(100, 4) == 4   # 25 x 12 = 300


def test_epoch_floor_guarantees_the_minimum_steps():
    assert nb.epoch_floor(8) == nb.MIN_EPOCHS  # 12 x 8 = 96
    assert nb.epoch_floor(7) == 14             # ceil(96 / 7): 98 steps
    assert nb.epoch_floor(3) == 32             # 96 steps
    assert nb.epoch_floor(0) == 96             # no full batch: one step per epoch at least


def test_sixteen_training_images_get_a_batch_of_2_at_the_same_size(tmp_path, monkeypatch):
    """23 pairs of 64x64: random split 17 / 3 / 3; U-Net from scratch (a single candidate size, 64x64). An epoch
    is 16 images x 1e-3 x 4096 / 4 = 16.4 s at either batch; 900 // 16.4 = 54 epochs."""
    _fake_steps(monkeypatch)
    images, masks = _pairs(tmp_path / "d", 23, 64)
    monkeypatch.setattr(nb, "MIN_STEPS", 0)
    before = load_recipe(nr.write_recipe("segmentation", images, masks, tmp_path / "a.yaml", encoder="none"))
    monkeypatch.setattr(nb, "MIN_STEPS", 96)
    after = load_recipe(nr.write_recipe("segmentation", images, masks, tmp_path / "b.yaml", encoder="none"))
    assert (before.train.batch_size, after.train.batch_size) == (4, 2)  # 17 // 4 = 4 steps x 12 = 48 < 96
    assert before.data.size == after.data.size == [64, 64] and before.train.epochs == after.train.epochs == 54


def test_a_tiny_data_set_gets_more_epochs_at_a_smaller_size(tmp_path, monkeypatch):
    """10 pairs, random split 6 / 2 / 2; U-Net from scratch, batch 2 (the smallest) -> 3 steps per epoch; epoch =
    3 x 2 / 4 x 1e-3 x pixels: 64x64 6.14 s, 96x96 13.8 s, 128x128 24.6 s. Budget 10 minutes."""
    _fake_steps(monkeypatch)
    images, masks = _pairs(tmp_path / "d", 10, 128)
    # Without the rule: limit 600 / 12 = 50 s, so the largest (128x128), 600 // 24.6 = 24 epochs = 72 steps.
    monkeypatch.setattr(nb, "MIN_STEPS", 0)
    before = load_recipe(nr.write_recipe("segmentation", images, masks, tmp_path / "a.yaml", encoder="none",
                                         minutes=10))
    assert before.data.size == [128, 128] and before.train.epochs == 24 and before.train.batch_size == 2
    # With it: floor ceil(96 / 3) = 32 epochs, limit 600 / 32 = 18.75 s: 96x96 (13.8 s) fits, 128x128 does not;
    # 600 // 13.8 = 43 epochs -> 129 steps.
    monkeypatch.setattr(nb, "MIN_STEPS", 96)
    out = nr.write_recipe("segmentation", images, masks, tmp_path / "b.yaml", encoder="none", minutes=10)
    r = load_recipe(out)
    assert r.data.size == [96, 96] and r.train.epochs == 43 and r.train.epochs * 3 >= nb.MIN_STEPS
    assert r.train.patience == 14  # a third of 43 epochs: early stopping does not undo the floor
    text = out.read_text()
    assert "whose 32 epochs fit 10 minutes (32 epochs x 3 steps = 96 >= 96 optimizer steps)" in text
    assert "129 optimizer steps (3 per epoch" in text


def test_choose_size_with_a_floor_lowers_the_per_epoch_limit():
    def est(size):  # epoch seconds = pixels / 512 (one step): 2, 8 and 32 s
        return Estimate(StepTimes(size[0] * size[1] / 512, 0.0, 1, 1, "cpu"), 1, 0, 1)

    sizes = [[32, 32], [64, 64], [128, 128]]
    assert nb.choose_size(sizes, est, budget_s=400.0).size == [128, 128]       # 12 x 32 s fits 400 s
    c = nb.choose_size(sizes, est, budget_s=400.0, floor=40)                    # limit 10 s: 64x64 (8 s)
    assert c.size == [64, 64] and c.estimate.epochs == 50 and c.floor == 40    # 400 // 8 = 50 <= max(60, 40)
    assert nb.choose_size(sizes, est, budget_s=4000.0, floor=80).estimate.epochs == 80  # capped at the floor
