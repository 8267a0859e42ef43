"""Issue 29: `evaluate` on RGB images with a grey-trained run (and the reverse) converts them as predict does.

Oracles: Pillow's own convert("L") and convert("RGB") of the same pixels; the same run evaluated on the images
converted by Pillow beforehand (equal metrics)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.config import recipe_from_dict
from cnnlab.data.formats.common import convert_channels
from cnnlab.engine.run import train
from cnnlab.inference.evaluate import evaluate_run


def test_convert_channels_is_pillows_conversion():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 17, 19, 3), dtype=np.uint8)
    rgb[0, 0, :3] = [[255, 255, 255], [0, 0, 0], [1, 2, 3]]
    grey = convert_channels(torch.from_numpy(rgb).permute(0, 3, 1, 2), 1)
    want = np.stack([np.asarray(Image.fromarray(a).convert("L")) for a in rgb])[:, None]
    assert torch.equal(grey, torch.from_numpy(want))
    back = convert_channels(grey, 3)
    want3 = np.stack([np.asarray(Image.fromarray(a[0]).convert("RGB")) for a in want]).transpose(0, 3, 1, 2)
    assert torch.equal(back, torch.from_numpy(want3))
    rgba = torch.from_numpy(rng.integers(0, 256, (2, 4, 5, 6), dtype=np.uint8))
    assert torch.equal(convert_channels(rgba, 3), rgba[:, :3])


def _write(d: Path, rgb: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for i in range(8):
        mask = np.zeros((16, 16), np.uint8)
        mask[: 4 + i] = 255
        img = rng.integers(0, 255, (16, 16, 3) if rgb else (16, 16), np.uint8)
        Image.fromarray(img).save(d / "images" / f"s{i}.png")
        Image.fromarray(mask).save(d / "masks" / f"s{i}.png")


def _converted(src: Path, dst: Path, mode: str) -> Path:
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True)
        for p in (src / sub).iterdir():
            im = Image.open(p)
            (im.convert(mode) if sub == "images" else im).save(dst / sub / p.name)
    return dst


@pytest.mark.parametrize("trained_rgb", [False, True])
def test_evaluate_converts_other_channels_as_predict_does(tmp_path, trained_rgb):
    """Before (grey run, RGB images): conv2d RuntimeError 'expected input to have 1 channels, but got 3'."""
    _write(tmp_path / "train", trained_rgb, 0)
    _write(tmp_path / "other", not trained_rgb, 1)
    r = recipe_from_dict({
        "name": "ch", "task": "segmentation", "out": str(tmp_path / "runs"),
        "data": {"format": "folders", "root": str(tmp_path / "train"), "cache": False, "size": [16, 16],
                 "options": {"images": "images", "masks": "masks", "split": "random"}},
        "model": {"name": "unet", "params": {"width": 4, "depth": 2}}, "loss": {"name": "dice_ce"},
        "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 1, "batch_size": 4, "progress": False}})
    run = train(r)
    other = tmp_path / "other"
    got, _ = evaluate_run(run, folders={"images": other / "images", "masks": other / "masks"}, out=tmp_path / "a",
                          progress=False)
    same = _converted(other, tmp_path / "same", "RGB" if trained_rgb else "L")
    want, _ = evaluate_run(run, folders={"images": same / "images", "masks": same / "masks"}, out=tmp_path / "b",
                           progress=False)
    assert got["n_images"] == 8 and got["metrics"] == want["metrics"]
    assert any("converted as cnnlab predict converts them" in n for n in got["notes"])
