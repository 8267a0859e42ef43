"""`cnnlab evaluate` of a folders run on other folders: --data moves the recipe's folders, --images/--masks read
a whole labelled folder, and other masks are read with the run's own mask values."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import train
from cnnlab.errors import ConfigError
from cnnlab.inference.evaluate import evaluate_run


def _write(root: Path, n: int, classes_of, seed: int) -> None:
    """n image/mask pairs (grey levels 0, 10, 20, 30: class k is value 10k), class k of pair i drawn where
    classes_of(i) says."""
    rng = np.random.default_rng(seed)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lab = np.zeros((32, 32), np.uint8)
        for k in classes_of(i):
            lab[8 * (k - 1): 8 * k, 4: 28] = k
        img = (rng.integers(0, 40, (32, 32, 3)) + lab[..., None] * 60).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{root.name}{i}.png")
        Image.fromarray(lab * 10).save(root / "masks" / f"{root.name}{i}.png")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A folders run as `cnnlab new` writes it: absolute image and mask folders under the data root."""
    base = tmp_path_factory.mktemp("own")
    root = base / "mine"
    _write(root, 12, lambda i: (1, 2, 3), seed=0)
    recipe = recipe_from_dict({
        "name": "own", "task": "segmentation", "out": str(base / "runs"),
        "data": {"format": "folders", "root": str(root), "size": [32, 32], "cache": False,
                 "options": {"images": str(root / "images"), "masks": str(root / "masks"), "split": "random"}},
        "model": {"name": "unet", "params": {"width": 4, "depth": 2}}, "loss": {"name": "dice_ce"},
        "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 1, "batch_size": 4, "progress": False}})
    return train(recipe)


def test_data_root_moves_the_recipes_absolute_folders(run_dir, tmp_path):
    """--data used to replace data.root only: the absolute folders `new` writes stayed the training ones, so the
    'evaluation on other data' scored the training set's test split under the new root's name."""
    other = tmp_path / "other"
    _write(other, 20, lambda i: (1, 2, 3), seed=1)
    result, _ = evaluate_run(run_dir, data_root=other, out=tmp_path / "o", progress=False)
    assert result["n_images"] == 3  # 0.15 x 20 of the other set (the training set's test split has 2 of 12)
    assert any(f"20 image/mask pairs from {other / 'images'}" in n for n in result["notes"])


def test_images_and_masks_evaluate_every_pair_with_the_runs_class_values(run_dir, tmp_path):
    """A labelled folder without class 2 (value 20): discovered afresh its values 0, 10, 30 would be three
    classes and value 30 class 2; read with the run's values, class 3 stays class 3 and class 2 is absent."""
    ext = tmp_path / "ext"
    _write(ext, 5, lambda i: (1, 3), seed=2)
    result, path = evaluate_run(run_dir, folders={"images": ext / "images", "masks": ext / "masks"},
                                out=tmp_path / "o", progress=False)
    assert path.name == "evaluate_all.json" and result["split"] == "all" and result["n_images"] == 5
    per_class = result["per_class"]
    assert [per_class[c]["in_ground_truth"] for c in ("background", "class_1", "class_2", "class_3")] == [
        True, True, False, True]


def test_folders_and_data_root_refuse_what_they_cannot_do(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="give both --images and --masks"):
        evaluate_run(run_dir, folders={"images": tmp_path}, out=tmp_path / "o", progress=False)
    with pytest.raises(ConfigError, match="give both --images and --masks, or --data ROOT alone"):
        evaluate_run(run_dir, data_root=tmp_path, folders={"images": tmp_path, "masks": tmp_path},
                     out=tmp_path / "o", progress=False)
