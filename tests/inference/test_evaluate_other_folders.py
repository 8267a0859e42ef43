"""`cnnlab evaluate` of a folders run on other folders: --data moves the recipe's folders, --images/--masks read
a whole labelled folder, and other masks are read with the run's own mask values."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import train
from cnnlab.errors import ConfigError, DataError
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
    assert [per_class[c]["in_ground_truth"] for c in ("class_0", "class_1", "class_2", "class_3")] == [
        True, True, False, True]


def test_folders_and_data_root_refuse_what_they_cannot_do(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="give both --images and --masks"):
        evaluate_run(run_dir, folders={"images": tmp_path}, out=tmp_path / "o", progress=False)
    with pytest.raises(ConfigError, match="give both --images and --masks, or --data ROOT alone"):
        evaluate_run(run_dir, data_root=tmp_path, folders={"images": tmp_path, "masks": tmp_path},
                     out=tmp_path / "o", progress=False)


def _class_folders(root: Path, counts: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray((rng.integers(0, 50, (8, 8)) + 100 * k).astype(np.uint8)).save(root / name / f"{i}.png")


def test_a_class_folder_run_scores_every_image_of_another_folder_of_class_folders(tmp_path):
    """A run on class folders split by `resplit` (what `cnnlab new` writes): --data alone would carve the other
    folder's 15% test split again; --images DIR scores all of its images."""
    _class_folders(tmp_path / "mine", {"a": 12, "b": 12}, seed=0)
    recipe = recipe_from_dict({
        "name": "cls", "task": "classification", "out": str(tmp_path / "runs"),
        "data": {"format": "imagefolder", "root": str(tmp_path / "mine"), "train": "train", "val": "val",
                 "test": "test", "cache": False,
                 "options": {"resplit": {"from": ".", "seed": 0, "stratify": True, "train": 16, "val": 4,
                                         "test": 4}}},
        "model": {"name": "mlp", "params": {"hidden": [8]}}, "loss": {"name": "cross_entropy"},
        "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 1, "batch_size": 4, "progress": False}})
    run = train(recipe)
    _class_folders(tmp_path / "ext", {"a": 7, "b": 6}, seed=1)
    result, path = evaluate_run(run, folders={"images": tmp_path / "ext"}, out=tmp_path / "o", progress=False)
    assert result["n_images"] == 13 and path.name == "evaluate_all.json"
    with pytest.raises(DataError, match="not a folder of class folders"):
        evaluate_run(run, folders={"images": tmp_path / "ext" / "a"}, out=tmp_path / "o", progress=False)


def test_data_root_refuses_a_folder_it_cannot_place_naming_it(tmp_path):
    """A recipe whose image folder lies outside its data root: --data cannot say where that folder is under the
    new root, so it is refused in one line naming the option and the way that works."""
    from cnnlab.data.formats.folders import rebase_options

    opts = {"images": str(tmp_path / "elsewhere" / "images"), "masks": str(tmp_path / "root" / "masks")}
    moved = rebase_options({"masks": opts["masks"]}, tmp_path / "root", tmp_path / "new")
    assert moved == {"masks": str(tmp_path / "new" / "masks")}
    with pytest.raises(ConfigError, match=r"data.options.images of this run is .*elsewhere/images, outside its data "
                                          r"root .* — name the folders: cnnlab evaluate RUN_DIR --images DIR"):
        rebase_options(opts, tmp_path / "root", tmp_path / "new")
