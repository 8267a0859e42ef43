"""Folders of sub-folders (one per patient or case, or per split): read one level down, split by sub-folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.formats import folders
from cnnlab.errors import DataError


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _case_slices(images: Path, masks: Path, cases: int, slices: int, suffix: str = "") -> None:
    """cases x slices image/mask pairs, each case in its own sub-folder (LGG MRI: case/case_k.tif + _mask)."""
    rng = np.random.default_rng(0)
    for c in range(cases):
        for k in range(1, slices + 1):
            m = np.zeros((16, 16), np.uint8)
            m[4:9, 3:3 + c + k] = 255
            _write(images / f"case_{c}" / f"case_{c}_{k}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
            _write(masks / f"case_{c}" / f"case_{c}_{k}{suffix}.png", m)


@pytest.mark.parametrize("shared", [True, False])
def test_case_sub_folders_are_read_and_each_case_stays_in_one_split(tmp_path, shared):
    """A folder of per-patient sub-folders was refused ("it holds only folders"). Its images are read one level
    down, and the random split draws whole sub-folders: slices of one patient are near copies, so putting some
    in training and others in test would score memory, not the model."""
    images = tmp_path / "data" if shared else tmp_path / "images"
    masks = tmp_path / "data" if shared else tmp_path / "masks"
    _case_slices(images, masks, cases=10, slices=3, suffix="_mask" if shared else "")
    opts = {"images": str(images), "masks": str(masks)}
    parts = {s: folders.load(tmp_path, s, **opts) for s in ("train", "validation", "test")}
    names = {s: d.names for s, d in parts.items()}
    assert sorted(n for v in names.values() for n in v) == sorted(
        f"case_{c}/case_{c}_{k}" for c in range(10) for k in range(1, 4))
    cases = {s: {n.split("/")[0] for n in v} for s, v in names.items()}
    assert [len(cases[s]) for s in ("train", "validation", "test")] == [6, 2, 2]  # 0.15 x 10 rounds to 2
    assert not (cases["train"] & cases["validation"]) and not (cases["train"] & cases["test"])
    assert all(len(v) == 3 * len(cases[s]) for s, v in names.items())  # whole cases, every slice
    assert any("random split by sub-folder" in n and "10 sub-folders: train 6, val 2, test 2" in n
               for n in parts["train"].notes)
    d = parts["test"]
    k = int(d.names[0].split("_")[-1])
    c = int(d.names[0].split("/")[0].split("_")[1])
    assert int(d.masks[0].sum()) == 5 * (c + k)  # the mask of that very slice
    report = folders.check(tmp_path, **opts)
    assert "without an image" not in report and "without a mask" not in report


def test_sub_folders_named_as_splits_are_the_splits(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            m = np.zeros((16, 16), np.uint8)
            m[2:6, 2:2 + i + 1] = 255
            _write(tmp_path / "images" / split / f"{split}{i}.png", np.full((16, 16), 9 * i, np.uint8))
            _write(tmp_path / "masks" / split / f"{split}{i}.png", m)
    assert folders.list_splits(tmp_path) == ["train", "val"]
    assert folders.load(tmp_path, "validation").names == ["val/val0", "val/val1"]
    assert folders.load(tmp_path, "train").names == ["train/train0", "train/train1", "train/train2"]
    with pytest.raises(DataError, match="no split 'test'"):
        folders.load(tmp_path, "test")


def test_sub_folders_without_images_still_say_what_they_hold(tmp_path):
    (tmp_path / "images" / "a" / "deeper").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no image files.*it and its sub-folders hold only folders: a$"):
        folders.load(tmp_path, "train")
    (tmp_path / "images" / "a" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no image files.*found 1 other file\(s\), e.g. a/notes.txt"):
        folders.load(tmp_path, "train")


def test_too_few_cases_for_the_fractions_names_cases_not_pairs(tmp_path):
    _case_slices(tmp_path / "images", tmp_path / "masks", cases=2, slices=4)
    with pytest.raises(DataError, match=r"2 sub-folders \(one per case\) are too few"):
        folders.load(tmp_path, "train")


def test_new_writes_a_recipe_that_keeps_each_case_in_one_split(tmp_path, monkeypatch):
    """`cnnlab new` on a folder of per-case sub-folders writes a recipe that trains on them, and says how the split
    was made (its comment used to claim a plain random split of the pairs)."""
    import cnnlab.new.recipe as nr
    from cnnlab.config import load_recipe
    from cnnlab.new.estimate import StepTimes

    monkeypatch.setattr(nr, "measure_steps", lambda r, channels, classes, batch: StepTimes(
        1e-4 * r.data.size[0] * r.data.size[1], 0.0, batch, 1, "cpu, fp32"))
    _case_slices(tmp_path / "lgg", tmp_path / "lgg", cases=10, slices=3, suffix="_mask")
    out = nr.write_recipe("segmentation", tmp_path / "lgg", tmp_path / "lgg", tmp_path / "r.yaml", encoder="none")
    assert "# random split by sub-folder, each sub-folder's images in one split (10 sub-folders" in out.read_text()
    r = load_recipe(out)
    test = folders.load(Path(r.data.root), "test", **r.data.options)
    train = folders.load(Path(r.data.root), "train", **r.data.options)
    assert not {n.split("/")[0] for n in test.names} & {n.split("/")[0] for n in train.names}
