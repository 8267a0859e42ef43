"""`cnnlab new`: the recipe it writes loads, reads the folders it names, and reflects the data."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnlab.cli.data import register
from cnnlab.config import load_recipe
from cnnlab.data.formats import folders
from cnnlab.errors import CnnlabError, ConfigError, DataError
from cnnlab.new.own import OwnData
from cnnlab.new.recipe import write_recipe

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(autouse=True)
def _no_step_timing(monkeypatch):
    """`new` times real training steps (tens of seconds for a 256x256 U-Net on a busy CPU); these tests are about
    the recipe's content, so a fixed measurement stands in. The measurement itself: test_new_own_folders.py."""
    import cnnlab.new.recipe as nr
    from cnnlab.new.estimate import StepTimes

    monkeypatch.setattr(nr, "measure_steps", lambda r, c, k, batch: StepTimes(0.5, 0.05, batch, 1, "cpu, fp32"))


def _write_set(base: Path, n: int, h: int, w: int, fg_rows: int, stems: str = "s{}") -> None:
    """n grey images with binary masks whose foreground is the top fg_rows rows (share fg_rows / h)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(base / "images" / f"{stems.format(i)}.png")
        mask = np.zeros((h, w), np.uint8)
        mask[:fg_rows] = 255
        Image.fromarray(mask).save(base / "masks" / f"{stems.format(i)}_mask.png")


def test_recipe_for_a_rare_class_loads_and_reads_its_data(tmp_path):
    _write_set(tmp_path / "data", 10, 42, 70, fg_rows=1)  # foreground 1/42 = 2.4% of pixels: rare
    out = write_recipe("segmentation", tmp_path / "data" / "images", tmp_path / "data" / "masks",
                       tmp_path / "r.yaml")
    r = load_recipe(out)
    assert r.task == "segmentation" and r.data.format == "folders" and r.name == "r"
    assert r.loss.name == "dice_ce"
    assert r.data.size == [40, 72]  # median 42x70 -> multiples of 8 (depth 3 for a 42-pixel side)
    assert r.model.name == "unet" and r.model.params == {"width": 32, "depth": 3}
    assert r.data.options["classes"] == ["background", "class_1"]
    assert r.data.options["split"] == "random" and not r.augment.rot90
    text = out.read_text()
    assert "class_1 under 5% of pixels" in text and "class_1 2.4%" in text
    d = folders.load(Path(r.data.root), r.data.val, r.data.size, **r.data.options)
    assert d.images.shape[1:] == (1, 40, 72) and len(d) == 2  # round(0.15 * 10) = 2 validation pairs
    assert folders.list_splits(Path(r.data.root), **r.data.options) == ["train", "val", "test"]


def test_balanced_square_data_get_dice_and_quarter_turns(tmp_path):
    _write_set(tmp_path, 6, 512, 512, fg_rows=200)
    # the from-scratch U-Net's rules (the pretrained default: test_new_defaults.py); the fixed step time fits every
    # candidate size in the budget, so the largest, the median 512x512, is chosen
    # every mask's foreground is its top rows, which the scene rule reads as an up: --scene any keeps the turns
    r = load_recipe(write_recipe("segmentation", tmp_path / "images", tmp_path / "masks", tmp_path / "b.yaml",
                                 encoder="none", own=OwnData(scene="any")))
    assert r.loss.name == "dice" and r.data.size == [512, 512] and r.augment.rot90
    assert r.model.params["depth"] == 4 and r.train.batch_size == 2  # 4 training pairs: batches of 2


def test_refuses_to_overwrite(tmp_path):
    _write_set(tmp_path, 3, 16, 16, fg_rows=8)
    out = tmp_path / "r.yaml"
    out.write_text("name: mine\n")
    with pytest.raises(CnnlabError, match="already exists") as e:
        write_recipe("segmentation", tmp_path / "images", tmp_path / "masks", out)
    assert e.value.hint and out.read_text() == "name: mine\n"


def test_sibling_split_folders_and_relative_paths(tmp_path, monkeypatch):
    _write_set(tmp_path / "ds" / "training", 5, 32, 32, fg_rows=10)
    _write_set(tmp_path / "ds" / "test", 3, 32, 32, fg_rows=10)
    monkeypatch.chdir(tmp_path)
    out = write_recipe("segmentation", "ds/training/images", "ds/training/masks", "r.yaml")
    raw = yaml.safe_load(Path(out).read_text())
    assert raw["data"]["root"] == str((tmp_path / "ds").resolve())  # absolute: works from any directory
    assert raw["data"]["train"] == "training" and raw["data"]["test"] == "test"
    assert raw["data"]["val_fraction"] == 0.2 and raw["data"]["options"]["split"] == "folders"
    r = load_recipe(out)
    assert len(folders.load(Path(r.data.root), "test", r.data.size, **r.data.options)) == 3


def test_fov_folder_goes_into_the_recipe(tmp_path):
    _write_set(tmp_path, 4, 32, 32, fg_rows=10)
    (tmp_path / "fov").mkdir()
    for i in range(4):
        Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp_path / "fov" / f"s{i}_mask.gif")
    r = load_recipe(write_recipe("segmentation", tmp_path / "images", tmp_path / "masks", tmp_path / "f.yaml",
                                 fov=tmp_path / "fov"))
    assert r.data.options["fov"] == str((tmp_path / "fov").resolve())
    assert folders.load(Path(r.data.root), "train", r.data.size, **r.data.options).ignore_index == 255


def test_bad_task_and_bad_data_write_nothing(tmp_path):
    _write_set(tmp_path, 3, 16, 16, fg_rows=8)
    with pytest.raises(ConfigError, match="--task detection: must be one of segmentation, classification"):
        write_recipe("detection", tmp_path / "images", tmp_path / "masks", tmp_path / "c.yaml")
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(tmp_path / "masks" / "s1_mask.png")
    with pytest.raises(DataError, match="mask is 16x8 but its image s1.png is 16x16"):
        write_recipe("segmentation", tmp_path / "images", tmp_path / "masks", tmp_path / "d.yaml")
    assert not (tmp_path / "c.yaml").exists() and not (tmp_path / "d.yaml").exists()


def test_cli_new_subcommand(tmp_path, capsys):
    _write_set(tmp_path, 4, 16, 16, fg_rows=8)
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    a = p.parse_args(["new", "--task", "segmentation", "--images", str(tmp_path / "images"), "--masks",
                      str(tmp_path / "masks"), "--out", str(tmp_path / "n.yaml")])
    assert a.func(a) == 0 and load_recipe(tmp_path / "n.yaml").data.format == "folders"
    assert "cnnlab train" in capsys.readouterr().out


@pytest.mark.skipif(not (SHARED / "drive" / "training").is_dir(), reason="shared DRIVE data absent")
def test_real_drive_recipe(tmp_path):
    base = SHARED / "drive" / "training"
    r = load_recipe(write_recipe("segmentation", base / "images", base / "1st_manual", tmp_path / "drive.yaml",
                                 fov=base / "mask"))
    assert r.data.train == "training" and r.data.test == "test" and r.data.options["fov"] == "mask"
    # the pretrained default (RGB, weights installed) takes Dice + CE; the fixed step time fits every candidate
    # size, so the largest, DRIVE's own 584x565 (under MAX_SIDE; the pretrained encoder takes any size), and the
    # vessels being thin, patches of 2/3 of its short side at that size, scored by sliding windows
    assert r.data.size is None and r.data.patch == [384, 384] and r.loss.name == "dice_ce"
    assert "# Resolution: patches of 384x384 at the images' own size (584x565 median)" in (
        tmp_path / "drive.yaml").read_text()
    # vessels are thin (half-width about 2 px of 584): the U-Net decoder, which won on all 20 DRIVE test images
    # and, the vessels being under 3 px wide at their own size, a fifth block at full resolution (19 of 20 better)
    assert r.model.name == "unet_efficientnet_lite0" and r.model.params["decoder_widths"] == [128, 64, 32, 16, 16]
    assert "# Decoder: U-Net decoder: thinnest class 'class_1'" in (tmp_path / "drive.yaml").read_text()
    # the test averages the flips it trains with (no up in fundus photographs: both ways)
    assert r.train.tta == "auto" and r.augment.hflip and r.augment.vflip


@pytest.mark.skipif(not (SHARED / "isbi2012_em" / "train").is_dir(), reason="shared ISBI 2012 data absent")
def test_real_isbi_recipe(tmp_path):
    base = SHARED / "isbi2012_em" / "train"
    r = load_recipe(write_recipe("segmentation", base / "image", base / "label", tmp_path / "isbi.yaml"))
    # one stack of slices, neighbours near copies: contiguous blocks, the last 4 slices the test
    assert r.data.options["split"] == "contiguous"
    assert r.data.size is None and r.data.patch == [352, 352]  # thin membranes: patches at the own 512x512
    for key, folder in (("images", "image"), ("masks", "label")):  # shared/ may be a link: compare resolved paths
        assert Path(r.data.options[key]).resolve() == (base / folder).resolve()
    # membranes: thin (U-Net decoder) but 3.7 px half-width at 512x512, so no block at full resolution
    assert r.model.name == "unet_efficientnet_lite0" and r.model.params["decoder_widths"] == [128, 64, 32, 16]
    assert "no block at full resolution: 3 px or wider" in (tmp_path / "isbi.yaml").read_text()
