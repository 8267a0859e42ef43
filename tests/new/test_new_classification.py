"""Issue 23: `cnnlab new --task classification` writes recipe (t)'s winning settings for a folder of class
folders, sized to the --minutes budget from timed steps (a known function of pixels stands in here)."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab.new.classify as nc
import cnnlab.new.estimate as ne
from cnnlab.cli import main
from cnnlab.config import AugmentConfig, load_recipe
from cnnlab.data.formats import imagefolder
from cnnlab.data.synthetic.classification import write_image_folders
from cnnlab.errors import DataError
from cnnlab.new.cls_rows import MAX_EPOCHS, ClsPlan
from cnnlab.new.estimate import StepTimes
from cnnlab.new.recipe import write_recipe

BEST = Path(__file__).resolve().parents[2] / "recipes" / "mnist" / "t_real_mnist_best.yaml"
S_PER_PIXEL = 1e-3  # stand-in step time: 16x16 = 256 pixels -> 0.256 s per step


@pytest.fixture
def timed(monkeypatch) -> list[list[int]]:
    """Step time proportional to the recipe's pixels; returns the sizes `new` timed, in order."""
    seen: list[list[int]] = []

    def fake(r, channels, classes, batch):
        assert r.task == "classification"
        seen.append(list(r.data.size))
        return StepTimes(S_PER_PIXEL * r.data.size[0] * r.data.size[1], 0.0, batch, 1, "cpu, fp32")

    monkeypatch.setattr(nc, "measure_steps", fake)
    return seen


def _new(tmp_path: Path, images: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / f"r{len(list(tmp_path.glob('r*.yaml')))}.yaml"
    return main(["new", "--task", "classification", "--images", str(images), "--out", str(out), *extra]), out


def test_grey_split_folders_get_the_winning_settings_and_no_flips(tmp_path, timed):
    root = write_image_folders(tmp_path / "png", n_train=200, n_test=50)  # Train/0..9, Test/0..9, 28x28 grey
    code, out = _new(tmp_path, root)
    r, best = load_recipe(out), load_recipe(BEST)
    assert code == 0 and r.task == "classification" and r.data.format == "imagefolder"
    assert (r.data.train, r.data.test, r.data.val_fraction, r.data.options) == ("Train", "Test", 0.1, {"channels": 1})
    assert (r.model, r.loss, r.optim) == (best.model, best.loss, best.optim)  # recipe (t), value for value
    assert r.augment == best.augment and not r.augment.hflip  # digits-like grey data: no flips
    assert r.train.patience == best.train.patience and MAX_EPOCHS == best.train.epochs  # the cap is (t)'s epochs
    assert r.train.batch_size == 8  # 180 training images: 64 -> 2 steps, 32 -> 5, 16 -> 11, 8 -> 22 >= 16
    train = imagefolder.load(Path(r.data.root), r.data.train, r.data.size, **r.data.options)
    assert train.images.shape[1:] == (1, *r.data.size) and len(train) == 200
    assert "grey images (digits, letters, scans): a mirrored 2 is not a digit" in out.read_text()


def test_the_batch_is_recipe_t_s_on_enough_images():
    best = load_recipe(BEST)
    assert ClsPlan(7200, 800, 1, 10, carve=True).batch == best.train.batch_size  # MNIST's 7,200 as measured
    assert ClsPlan(100, 10, 1, 10, carve=True).batch == 8  # 100 // 8 = 12 steps: the smallest batch


def test_colour_class_folders_get_flips_and_a_seeded_split(tmp_path, timed):
    write_image_folders(tmp_path / "photos", n_train=100, n_test=1, size=40, channels=3, splits=("all", "x"))
    shutil.rmtree(tmp_path / "photos" / "x")  # one folder of class folders, nothing beside it
    code, out = _new(tmp_path, tmp_path / "photos" / "all")
    r = load_recipe(out)
    assert code == 0 and r.augment.hflip and not r.augment.vflip and r.data.options["channels"] == 3
    # 100 images: val round(0.15 x 100) = 15, test 15, train 70 (whole counts, never past 100)
    assert r.data.options["resplit"] == {"from": ".", "seed": 0, "stratify": True, "train": 70,
                                         "val": 15, "test": 15}
    assert r.data.root == str((tmp_path / "photos" / "all").resolve())
    assert (r.data.train, r.data.val) == ("train", "val")
    d = imagefolder.load(Path(r.data.root), "val", r.data.size, **r.data.options)
    assert len(d) == 15 and d.images.shape[1] == 3


@pytest.mark.parametrize("minutes, size, epochs, tried", [
    # 200 Train images of 64x64, 20 carved for validation: 180 train, batch 8 -> 22 steps; epoch = 22 x 1e-3 x
    # pixels: 16x16 5.63 s, 24x24 12.7 s, 32x32 22.5 s, 48x48 50.7 s, 64x64 90.1 s. Floor: 10 epochs.
    # 90 min: every size fits (limit 540 s); 5400 // 90.1 = 59 epochs, capped at recipe (t)'s 30
    ("90", [64, 64], 30, [[16, 16], [24, 24], [32, 32], [48, 48], [64, 64]]),
    # 12 min: limit 72 s; 48x48 fits, 64x64 does not; 720 // 50.7 = 14 epochs
    ("12", [48, 48], 14, [[16, 16], [24, 24], [32, 32], [48, 48], [64, 64]]),
    # 2 min: limit 12 s; 16x16 fits, 24x24 (12.7 s) does not; 120 // 5.63 = 21 epochs
    ("2", [16, 16], 21, [[16, 16], [24, 24]]),
])
def test_a_smaller_budget_picks_a_smaller_size_or_fewer_epochs(tmp_path, timed, minutes, size, epochs, tried):
    root = write_image_folders(tmp_path / "png", n_train=200, n_test=20, size=64)
    code, out = _new(tmp_path, root, "--minutes", minutes)
    r = load_recipe(out)
    assert code == 0 and r.data.size == size and r.train.epochs == epochs and timed == tried
    assert f"whose 10 epochs fit {minutes} minutes" in out.read_text()


def test_class_folder_problems_are_one_line_and_write_nothing(tmp_path, timed, capsys):
    root = write_image_folders(tmp_path / "png", n_train=20, n_test=10)
    code, out = _new(tmp_path, root, "--masks", str(root))
    assert code == 2 and "--masks and --fov are for segmentation" in capsys.readouterr().err and not out.exists()
    bad = root / "Train" / "3" / "broken.png"
    bad.write_bytes(Image.open(next((root / "Train" / "3").iterdir())).tobytes()[:40])  # not a PNG at all
    with pytest.raises(DataError, match="broken.png: cannot decode image") as e:
        write_recipe("classification", root, None, tmp_path / "b.yaml")
    assert e.value.hint == f"replace or remove the file(s), then check again: cnnlab data check imagefolder {root}"
    assert not (tmp_path / "b.yaml").exists()
    capsys.readouterr()
    assert main(["data", "check", "imagefolder", str(root)]) == 2  # the hint's command runs and names the file
    assert "broken.png: cannot decode image" in capsys.readouterr().err


def test_class_folders_are_read_alone_whatever_lies_beside_them(tmp_path, timed):
    """torchvision's ImageFolder layout (class folders straight under --images) next to other data sets: the recipe
    reads that folder only (data.root is it, not its parent, so neither the classes nor the decoded cache's
    fingerprint take in the neighbours). Before, new refused and asked the user to move the folder."""
    for cls, n in (("cat", 9), ("dog", 11)):
        (tmp_path / "pets" / "all" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / "pets" / "all" / cls / f"{i}.png")
    (tmp_path / "pets" / "other" / "bird").mkdir(parents=True)  # another data set beside it
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "pets" / "other" / "bird" / "b.png")
    out = tmp_path / "p.yaml"
    write_recipe("classification", tmp_path / "pets" / "all", None, out)
    r = load_recipe(out)
    assert r.data.root == str((tmp_path / "pets" / "all").resolve())
    parts = {s: imagefolder.load(Path(r.data.root), s, r.data.size, **r.data.options) for s in ("train", "val", "test")}
    assert all(d.class_names == ["cat", "dog"] for d in parts.values())
    names = [n for d in parts.values() for n in d.names]
    assert len(names) == len(set(names)) == 20 and all(n.split("/")[0] in ("cat", "dog") for n in names)
    assert "cnnlab.data.formats.imagefolder" in out.read_text()


def test_step_timing_uses_per_image_targets_and_runs_the_augmentation(monkeypatch):
    """A classifier's targets are one label per image (per-pixel ones made cross-entropy fail), and the recipe's
    augmentation is part of every timed step (for a small CNN it is a large share of the step)."""
    r = load_recipe(BEST)
    r = dataclasses.replace(r, data=dataclasses.replace(r.data, size=[28, 28]),
                            train=dataclasses.replace(r.train, threads=1))
    seen: list[tuple[int, ...]] = []
    real = ne.augment_batch
    monkeypatch.setattr(ne, "augment_batch", lambda x, m, cfg, g: seen.append(tuple(x.shape)) or real(x, m, cfg, g))
    times = ne.measure_steps(r, 1, 10, 8)
    assert times.batch == 8 and len(seen) >= 2 and set(seen) == {(8, 1, 28, 28)}  # warm-up + timed steps
    seen.clear()
    ne.measure_steps(dataclasses.replace(r, augment=AugmentConfig()), 1, 10, 8)
    assert seen == []  # no augmentation asked, none timed
