"""Issue 30, scene-aware augmentation: vertical flips and quarter turns only for imagery without an up; photographs
with an up get horizontal flips, small rotations and zoom; --scene upright|any overrides (new/scene.py)."""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.config import load_recipe
from cnnlab.data.formats import folders
from cnnlab.new.own import OwnData
from cnnlab.new.recipe import write_recipe
from cnnlab.new.scene import UP_MIN, decide, measure_layout
from conftest import SHARED
from own_standins import camvid_like


@pytest.fixture(autouse=True)
def _no_step_timing(monkeypatch):
    import cnnlab.new.recipe as nr
    from cnnlab.new.estimate import StepTimes

    monkeypatch.setattr(nr, "measure_steps", lambda r, c, k, batch: StepTimes(0.5, 0.05, batch, 1, "cpu, fp32"))


def test_the_layout_measure_by_hand():
    sky_road = np.zeros((6, 6), np.uint8)
    sky_road[3:] = 1                      # top third all class 0, bottom third all class 1: up 1; sides equal: 0
    assert measure_layout([sky_road], 2) == pytest.approx((1.0, 0.0))
    left_right = sky_road.T.copy()        # the same turned: an image lit from one side, no up
    assert measure_layout([left_right], 2) == pytest.approx((0.0, 1.0))
    mixed = [sky_road, sky_road[::-1].copy()]  # an object above in one image and below in the other cancels out
    assert measure_layout(mixed, 2) == pytest.approx((0.0, 0.0))


def _cells(root: Path, n: int = 8, side: int = 32) -> None:
    """Microscopy-like: round cells anywhere on a plain background, no up."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:side, :side]
    for i in range(n):
        rng = np.random.default_rng(i)
        mask = np.zeros((side, side), np.uint8)
        for _ in range(6):
            cy, cx = rng.integers(0, side, 2)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = 255
        Image.fromarray(mask).save(root / "masks" / f"cell{i}.png")
        Image.fromarray((mask // 2 + rng.integers(0, 60, mask.shape)).astype(np.uint8)).save(
            root / "images" / f"cell{i}.png")


def test_street_frames_are_upright_and_get_no_vertical_flips(tmp_path):
    camvid_like(tmp_path / "CamVid", frames=3)
    out = write_recipe("segmentation", tmp_path / "CamVid" / "train", tmp_path / "CamVid" / "trainannot",
                       tmp_path / "r.yaml", own=OwnData(void=(11,)))
    a = load_recipe(out).augment
    assert a.hflip and not a.vflip and not a.rot90 and a.rotate == 10 and a.crop_scale == 0.8
    assert "measured from the masks: class layout top vs bottom 1.00" in out.read_text()
    forced = write_recipe("segmentation", tmp_path / "CamVid" / "train", tmp_path / "CamVid" / "trainannot",
                          tmp_path / "any.yaml", own=OwnData(void=(11,), scene="any"))
    assert load_recipe(forced).augment.vflip and "--scene any" in forced.read_text()


def test_cells_have_no_up_and_keep_flips_both_ways_and_quarter_turns(tmp_path):
    _cells(tmp_path / "d")
    out = write_recipe("segmentation", tmp_path / "d" / "images", tmp_path / "d" / "masks", tmp_path / "r.yaml",
                       encoder="none")
    a = load_recipe(out).augment
    assert a.hflip and a.vflip and a.rot90 and a.rotate == 0
    forced = write_recipe("segmentation", tmp_path / "d" / "images", tmp_path / "d" / "masks", tmp_path / "u.yaml",
                          encoder="none", own=OwnData(scene="upright"))
    assert not load_recipe(forced).augment.vflip


@pytest.mark.parametrize("name,pattern", [("drive", "drive/training/1st_manual/*"),
                                          ("isbi", "isbi2012_em/train/label/*"),
                                          ("endovis", "endovis2017_hw/segmentation/train/*/*_mask.png")])
def test_real_imagery_without_an_up_is_measured_so(name, pattern):
    paths = [Path(p) for p in sorted(glob.glob(str(SHARED / pattern)))]
    paths = paths[:: max(1, len(paths) // 30)]  # about 30 masks: the encoding and the layout, quickly
    if not paths:
        pytest.skip(f"shared {name} data absent")
    scene = decide(paths, folders.discover(paths, [None] * len(paths), None))
    assert not scene.upright and scene.up < UP_MIN / 2  # measured: DRIVE 0.001, ISBI 0.010, EndoVis 0.024
