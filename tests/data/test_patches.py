"""Patch training at native size (data.patch) and the sliding windows that score whole images (issue 31)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.config import DataConfig, recipe_from_dict
from cnnlab.data import cache
from cnnlab.data.loading import load_split
from cnnlab.data.patches import cut_patches, plan_patches
from cnnlab.engine.recipe_check import check_recipe
from cnnlab.engine.run import train
from cnnlab.engine.steps import Normalizer, whole_image_logits
from cnnlab.engine.windows import Window, sliding_window, window_logits
from cnnlab.errors import ConfigError
from cnnlab.inference.evaluate import evaluate_run
from cnnlab.inference.predict import _predict_chunks, load_run
from cnnlab.models import build_model
from cnnlab.report.build import write_run_report
from conftest import tiny_recipe


def _coords(n: int, h: int, w: int) -> torch.Tensor:
    """Images whose pixel values say where they are: channel 0 the row, channel 1 the column (1-based)."""
    rows = torch.arange(1, h + 1).view(h, 1).expand(h, w)
    cols = torch.arange(1, w + 1).view(1, w).expand(h, w)
    return torch.stack([rows, cols]).to(torch.uint8).expand(n, 2, h, w).clone()


def test_a_patch_never_leaves_its_image_and_small_images_are_padded():
    sizes = torch.tensor([[40, 60], [25, 30], [12, 50]])  # the last is lower than the patch
    images = _coords(3, 40, 60)
    masks = torch.zeros(3, 40, 60, dtype=torch.uint8)
    for k, (h, w) in enumerate(sizes.tolist()):  # beyond an image's own size: padding that must never be cut
        images[k, :, h:], images[k, :, :, w:] = 0, 0
        masks[k, h:], masks[k, :, w:] = 7, 7
    masks[0, 5, 5] = masks[1, 20, 25] = 1  # foreground pixels near corners pull centred patches outward
    g = torch.Generator().manual_seed(0)
    idx = torch.tensor([0, 1, 2] * 200)
    plan = plan_patches(masks, sizes, idx, (16, 16), 0.5, g)
    x, m = cut_patches(images, masks, sizes, plan, (16, 16), fill=9)
    for k, (i, top, left) in enumerate(zip(idx.tolist(), plan.tops.tolist(), plan.lefts.tolist())):
        h, w = sizes[i].tolist()
        assert 0 <= top and 0 <= left and left + 16 <= w and (top + 16 <= h or top == 0)
        dh = min(16, h - top)
        # the patch is exactly the image's pixels at its place (coordinates 1-based), padded below a low image
        assert int(x[k, 0, 0, 0]) == top + 1 and int(x[k, 1, 0, 0]) == left + 1
        assert torch.equal(x[k, :, :dh], images[i, :, top: top + dh, left: left + 16])
        assert (x[k, :, dh:] == 0).all() and (m[k, dh:] == 9).all() and not (m[k] == 7).any()
    assert plan.centred.any() and not plan.centred.all()


def test_foreground_oversampling_hits_the_rare_class_at_the_asked_rate_seeded():
    masks = torch.zeros(4, 64, 64, dtype=torch.uint8)
    masks[:, 40, 10] = 2                      # one pixel of a rare class per image
    masks[1, :32] = 1                         # image 1 also holds a large class: the class is drawn uniformly
    n = 3000
    idx = torch.arange(n) % 4
    plan = plan_patches(masks, None, idx, (8, 8), 1 / 3, torch.Generator().manual_seed(3))
    x, m = cut_patches(masks[:, None], masks, None, plan, (8, 8))
    again = plan_patches(masks, None, idx, (8, 8), 1 / 3, torch.Generator().manual_seed(3))
    assert torch.equal(plan.tops, again.tops) and torch.equal(plan.lefts, again.lefts)  # seeded
    share = plan.centred.float().mean().item()
    assert abs(share - 1 / 3) < 0.03          # 3 sigma of 3000 Bernoulli(1/3) draws is 0.026
    rare = (m == 2).flatten(1).any(1)
    one_class = idx != 1
    assert rare[plan.centred & one_class].all()  # centred on the only foreground class: it is in the patch
    on_two = rare[plan.centred & ~one_class].float().mean().item()
    assert abs(on_two - 0.5) < 0.1            # two classes present: each drawn half the time (250 draws)
    # uniform patches contain the pixel about as often as 64 of the 57 x 57 corners put it inside: 2%
    assert rare[~plan.centred & one_class].float().mean().item() < 0.05


def test_sliding_window_equals_the_whole_image_where_the_window_covers_it():
    torch.manual_seed(0)
    model = build_model("unet", 3, 3, (32, 32), {"width": 4, "depth": 2}).eval()
    x = torch.randn(3, 32, 48)
    with torch.no_grad():
        whole = model(x[None])[0]
        out = window_logits(lambda b: model(b), x, Window((32, 48)))
    torch.testing.assert_close(out, whole, rtol=0, atol=0)
    # a larger window pads the image with 0 below and right: a zero-padded convolution sees the same pixels
    conv = nn.Conv2d(3, 2, 5, padding=2, bias=False).eval()
    with torch.no_grad():
        out = window_logits(lambda b: conv(b), x[:, :20, :30], Window((32, 32)))
        torch.testing.assert_close(out, conv(x[None, :, :20, :30])[0], rtol=1e-6, atol=1e-6)


def test_the_gaussian_blend_is_exact_on_a_constant_model():
    value = torch.tensor([0.25, -3.0, 7.5]).view(1, 3, 1, 1)
    predict = lambda b: value.expand(b.shape[0], 3, *b.shape[-2:])  # noqa: E731
    for shape, win, overlap in [((1, 100, 77), (32, 24), 0.5), ((1, 33, 90), (16, 16), 0.75)]:
        out = sliding_window(predict, torch.zeros(shape), win, overlap, batch_size=5, blend="gaussian")
        assert out.shape == (3, *shape[1:])
        torch.testing.assert_close(out, value[0].expand(3, *shape[1:]), rtol=1e-6, atol=1e-6)


def _write_folders(root: Path, sizes: list[tuple[int, int]]) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"case{k}.png")
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4: h // 2, w // 3:] = 255
        Image.fromarray(mask).save(root / "masks" / f"case{k}.png")


def test_variable_size_images_round_trip_through_the_decoded_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MIN_BYTES", 0)   # the tiny split is cached as a large one would be
    monkeypatch.setattr(cache, "RACY_SECONDS", 0)
    sizes = [(40, 50), (64, 48), (30, 30), (52, 70), (44, 44), (36, 60)]
    _write_folders(tmp_path / "d", sizes)
    cfg = DataConfig(format="folders", root=str(tmp_path / "d"), patch=[32, 32], cache_dir=str(tmp_path / "c"),
                     options={"split": "random", "fractions": {"train": 1.0}})
    first = load_split(cfg, "train")
    again = load_split(cfg, "train")
    assert any("from the cache" in n for n in again.notes) and not any("from the cache" in n for n in first.notes)
    by_name = dict(zip(first.names, first.sizes.tolist()))
    assert sorted(map(tuple, by_name.values())) == sorted(sizes)
    assert again.names == first.names and torch.equal(again.sizes, first.sizes)
    assert torch.equal(again.images, first.images) and torch.equal(again.masks, first.masks)
    for k, name in enumerate(first.names):  # each image in its corner at its own size, pixel for pixel
        h, w = first.own_size(k)
        png = np.asarray(Image.open(tmp_path / "d" / "images" / f"{name}.png"))
        assert torch.equal(first.images[k, :, :h, :w], torch.from_numpy(png.copy()).permute(2, 0, 1))
        assert int(first.masks[k, :h, :w].max()) == 1
    resized = load_split(DataConfig(format="folders", root=str(tmp_path / "d"), size=[32, 32], cache=False,
                                    options={"split": "random", "fractions": {"train": 1.0}}), "train")
    assert resized.sizes is None and resized.images.shape[-2:] == (32, 32)


def test_patch_recipe_checks():
    with pytest.raises(ConfigError, match="data.patch"):
        recipe_from_dict({"data": {"patch": [8, 64]}})
    with pytest.raises(ConfigError, match="data.patch' cuts patches for per-pixel tasks"):
        check_recipe(recipe_from_dict({"task": "classification", "data": {"format": "digits", "patch": [32, 32]},
                                       "model": {"name": "course_cnn"}, "loss": {"name": "cross_entropy"}}))
    with pytest.raises(ConfigError, match="foreground_oversample"):
        recipe_from_dict({"train": {"foreground_oversample": 1.5}})


@pytest.mark.slow
def test_a_patch_run_validates_tests_and_evaluates_whole_images_by_one_window(endovis_root, tmp_path):

    r = recipe_from_dict(tiny_recipe(endovis_root, tmp_path, data={"patch": [32, 32]},
                                     train={"epochs": 1, "foreground_oversample": 0.5, "max_steps_per_epoch": 2}))
    run_dir = train(r)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_images"] == 4
    opening = write_run_report(run_dir).read_text()  # the report says how the scores saw whole images
    assert ", whole images scored by Gaussian-weighted sliding windows of 32x32 (overlap 0.5: the patch size it " \
           "trained on)" in opening
    result, _ = evaluate_run(run_dir, progress=False)
    assert result["resolution"] == "native 48x64"   # whole 48x64 images, not the 32x32 patches
    assert result["metrics"]["dice_mean"] == pytest.approx(summary["metrics"]["dice_mean"], abs=1e-9)
    assert result["metrics"]["loss"] == pytest.approx(summary["metrics"]["loss"], rel=1e-6)
    # predict takes the same windows: its masks are the argmax of the logits the test scored, pixel for pixel
    run = load_run(run_dir)
    test = load_split(r.data, "test")
    files = [endovis_root / "segmentation" / "test" / n / f"{n}_input.jpg" for n in test.names]
    for i, (_, _, probs) in enumerate(_predict_chunks(run, files, 4, False, None, 0.25)):
        logits, _ = whole_image_logits(run.scorer(1), test, i)
        assert torch.equal(probs.argmax(0), logits[0].argmax(0))


def test_the_normaliser_of_images_of_different_sizes_counts_their_own_pixels_only():
    torch.manual_seed(0)
    sizes = torch.tensor([[20, 30], [12, 40], [25, 25]])
    images = torch.zeros(3, 2, 25, 40, dtype=torch.uint8)  # padding 0 around the smaller images
    own = []
    for k, (h, w) in enumerate(sizes.tolist()):
        images[k, :, :h, :w] = torch.randint(50, 250, (2, h, w), dtype=torch.uint8)
        own.append(images[k, :, :h, :w].flatten(1))
    pixels = torch.cat(own, 1).double() / 255  # the oracle: torch's mean and std over the own pixels alone
    norm = Normalizer.fit(images, sizes)
    torch.testing.assert_close(torch.tensor(norm.mean), pixels.mean(1).float())
    torch.testing.assert_close(torch.tensor(norm.std), pixels.std(1).float())
    assert Normalizer.fit(images).mean[0] < norm.mean[0] - 0.05  # the padding would pull the mean down
