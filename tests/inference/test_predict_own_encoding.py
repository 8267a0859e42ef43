"""`cnnlab predict` writes masks in the data set's own encoding (README), for your own folders too: the grey
values, 0/1 or 0/255, or colours the training masks used, not class indices or a fixed 0/255."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import train
from cnnlab.inference.predict import load_run, predict_paths

RED, GREEN, BLACK = [220, 20, 60], [0, 200, 0], [0, 0, 0]


def _labels(i: int) -> np.ndarray:
    lab = np.zeros((32, 32), np.uint8)
    lab[4:14, 3 + i: 20 + i] = 1
    lab[18:28, 10:26] = 2
    return lab


ENCODINGS = {  # how the files store classes 0, 1, 2
    "indices 0/1/2": (lambda lab: lab, [0, 1, 2]),
    "grey levels 0/100/200": (lambda lab: (lab * 100).astype(np.uint8), [0, 100, 200]),
    "binary 0/1": (lambda lab: (lab > 0).astype(np.uint8), [0, 1]),
    "colours": (lambda lab: np.array([BLACK, RED, GREEN], np.uint8)[lab], [BLACK, GREEN, RED]),
}


@pytest.mark.parametrize("kind", list(ENCODINGS))
def test_predicted_masks_use_the_training_masks_values(tmp_path: Path, kind: str) -> None:
    encode, own = ENCODINGS[kind]
    rng = np.random.default_rng(0)
    for i in range(8):
        lab = _labels(i)
        img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8) + (lab[..., None] * 90).astype(np.uint8)
        for folder, arr in (("images", img), ("masks", encode(lab))):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(arr).save(tmp_path / folder / f"s{i}.png")
    recipe = recipe_from_dict({
        "name": "own", "task": "segmentation", "out": str(tmp_path / "runs"),
        "data": {"format": "folders", "root": str(tmp_path), "size": [32, 32], "cache": False,
                 "options": {"fractions": {"train": 0.75, "val": 0.25}}},
        "model": {"name": "unet", "params": {"width": 4, "depth": 2}}, "loss": {"name": "dice_ce"},
        "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 1, "batch_size": 4, "progress": False}})
    run = load_run(train(recipe), device="cpu")
    index = predict_paths(run, [tmp_path / "images" / "s0.png"], tmp_path / "pred", progress=False)
    with Image.open(tmp_path / "pred" / index["images"][0]["mask"]) as im:
        written = np.asarray(im.convert("RGB") if kind == "colours" else im)
    probs = run.model(torch.zeros(1, 3, 32, 32)).shape[1]  # one output per class
    assert probs == len(own) and index["mask_encoding"]["values"] == own
    values = {tuple(v) for v in written.reshape(-1, 3).tolist()} if kind == "colours" else set(written.ravel().tolist())
    assert values <= {tuple(v) if isinstance(v, list) else v for v in own}
    # round trip: a training mask file, read as the run's class indices, is written back as the very same file
    stored = encode(_labels(0))
    keys = [tuple(v) if isinstance(v, list) else v for v in own]
    pixels = stored.reshape(-1, 3) if kind == "colours" else stored.reshape(-1)
    classes = np.array([keys.index(tuple(v) if kind == "colours" else v) for v in pixels.tolist()], np.uint8)
    back = run.encoding.image(classes.reshape(32, 32))
    assert np.array_equal(np.asarray(back.convert("RGB") if kind == "colours" else back), stored)
