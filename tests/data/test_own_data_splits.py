"""Issue 30, given splits: the train / val / test folders a data set ships are found beside the training pair (or
named by hand) and used as those splits; only train and test given -> validation carved from train; the given
test is never re-carved; `data check` prints the splits; summary.json reports the given test."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cnnlab.cli import main
from cnnlab.cli.data import folders_report
from cnnlab.config import load_recipe
from cnnlab.data.formats import folders
from cnnlab.data.formats.folders._given import find_given, given_options
from cnnlab.errors import CnnlabError
from cnnlab.new.own import OwnData
from cnnlab.new.recipe import write_recipe
from own_standins import camvid_like, write_split


@pytest.fixture(autouse=True)
def _no_step_timing(monkeypatch):
    """A fixed step time stands in for `new`'s measurement (timed for real in test_new_own_folders.py)."""
    import cnnlab.new.recipe as nr
    from cnnlab.new.estimate import StepTimes

    monkeypatch.setattr(nr, "measure_steps", lambda r, c, k, batch: StepTimes(0.5, 0.05, batch, 1, "cpu, fp32"))


def _load(recipe, split: str):
    r = load_recipe(recipe) if not hasattr(recipe, "data") else recipe
    return folders.load(Path(r.data.root), split, r.data.size, **r.data.options)


def test_camvid_layout_is_found_and_each_given_split_is_read(tmp_path):
    written = camvid_like(tmp_path / "CamVid")
    text, problems = folders_report(tmp_path / "CamVid" / "train", tmp_path / "CamVid" / "trainannot")
    assert not problems
    assert "given splits: train" in text and f"testannot ({len(written['test'])} pairs)" in text
    out = write_recipe("segmentation", tmp_path / "CamVid" / "train", tmp_path / "CamVid" / "trainannot",
                       tmp_path / "r.yaml", own=OwnData(void=(11,)))
    r = load_recipe(out)
    assert r.data.options["split"] == "given" and (r.data.train, r.data.val, r.data.test) == ("train", "val", "test")
    assert set(r.data.options["splits"]) == {"train", "val", "test"}
    for split in ("train", "val", "test"):  # each split is exactly its folder: nothing carved, nothing moved
        assert sorted(_load(r, split).names) == sorted(written[split])


@pytest.mark.parametrize("images,masks,spell", [
    ("images/{}", "masks/{}", ("train", "val", "test")),
    ("images/{}", "labels/{}", ("training", "validation", "test")),
    ("{}", "{}_labels", ("train", "val", "test")),
    ("{}_images", "{}_masks", ("train", "valid", "testing")),
    ("{}", "{}annot", ("Train", "Val", "Test")),
])
def test_each_layout_of_given_splits_is_found(tmp_path, images, masks, spell):
    for s in spell:
        write_split(tmp_path / images.format(s), tmp_path / masks.format(s), [0], 2)
    found = find_given(tmp_path / images.format(spell[0]), tmp_path / masks.format(spell[0]))
    assert list(found) == ["train", "val", "test"]
    for canon, s in zip(("train", "val", "test"), spell):
        assert found[canon] == {"images": (tmp_path / images.format(s)).resolve(),
                                "masks": (tmp_path / masks.format(s)).resolve()}


def test_images_split_sub_folders_beside_masks_split_sub_folders(tmp_path):
    for s in ("train", "val", "test"):
        write_split(tmp_path / "images" / s, tmp_path / "masks" / s, [0], 2)
    root, opts = given_options(tmp_path / "images", tmp_path / "masks")
    assert opts["split"] == "given" and list(opts["splits"]) == ["train", "val", "test"]
    assert opts["splits"]["test"]["masks"] == str((tmp_path / "masks" / "test").resolve())


@pytest.mark.parametrize("images,masks", [("{}", "{}annot"), ("{}", "{}_labels"), ("images/{}", "masks/{}"),
                                          ("imgs/{}", "annotations/{}")])
def test_the_data_sets_own_folder_named_twice(tmp_path, images, masks):
    """--images CamVid --masks CamVid: the layouts inside the folder are found."""
    for s in ("train", "val", "test"):
        write_split(tmp_path / "d" / images.format(s), tmp_path / "d" / masks.format(s), [0], 2)
    found = find_given(tmp_path / "d", tmp_path / "d")
    assert list(found) == ["train", "val", "test"]
    assert found["test"]["masks"] == (tmp_path / "d" / masks.format("test")).resolve()


def test_a_lone_pair_has_no_given_splits(tmp_path):
    write_split(tmp_path / "train", tmp_path / "trainannot", [0], 2)  # no val/test siblings
    assert find_given(tmp_path / "train", tmp_path / "trainannot") == {}
    write_split(tmp_path / "imgs", tmp_path / "gt", [0], 2)  # no split word in the names
    assert find_given(tmp_path / "imgs", tmp_path / "gt") == {}


def test_train_and_test_only_carves_validation_from_train_never_the_test(tmp_path):
    written = camvid_like(tmp_path / "d", frames=4, val=False)
    out = write_recipe("segmentation", tmp_path / "d" / "train", tmp_path / "d" / "trainannot", tmp_path / "r.yaml",
                       own=OwnData(void=(11,)))
    r = load_recipe(out)
    assert set(r.data.options["splits"]) == {"train", "test"} and r.data.val == "val"
    train, val, test = (set(_load(r, s).names) for s in ("train", "val", "test"))
    assert test == set(written["test"])                      # the given test, whole and alone
    assert train | val == set(written["train"]) and not train & val
    groups = {n.split("_")[0] for n in val}                  # carved by whole sequences
    assert len(groups) == 1 and not any(n.split("_")[0] in groups for n in train)
    assert "carved from the given train" in _load(r, "val").notes[0]


def test_splits_named_by_hand(tmp_path):
    write_split(tmp_path / "pics", tmp_path / "gt", [0, 1, 2], 2)
    dev = write_split(tmp_path / "dev_pics", tmp_path / "dev_gt", [3], 2)
    hold = write_split(tmp_path / "holdout" / "x", tmp_path / "holdout" / "y", [3], 2, start=15)
    out = write_recipe("segmentation", tmp_path / "pics", tmp_path / "gt", tmp_path / "r.yaml",
                       own=OwnData(void=(11,), val=(tmp_path / "dev_pics", tmp_path / "dev_gt"),
                                   test=(tmp_path / "holdout" / "x", tmp_path / "holdout" / "y")))
    r = load_recipe(out)
    assert sorted(_load(r, "val").names) == sorted(dev) and sorted(_load(r, "test").names) == sorted(hold)
    raw = yaml.safe_load(out.read_text())["data"]["options"]["splits"]
    assert raw["val"]["masks"] == str((tmp_path / "dev_gt").resolve())


def test_half_a_pair_by_hand_is_one_line(tmp_path, capsys):
    write_split(tmp_path / "pics", tmp_path / "gt", [0], 2)
    code = main(["new", "--images", str(tmp_path / "pics"), "--masks", str(tmp_path / "gt"), "--val-images",
                 str(tmp_path / "pics"), "--out", str(tmp_path / "r.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "--val-images needs --val-masks too" in err and "Traceback" not in err


def test_given_split_options_are_checked(tmp_path):
    with pytest.raises(CnnlabError, match="no train split"):
        folders.list_splits(tmp_path, split="given", splits={"test": {"images": "a", "masks": "b"}})
    with pytest.raises(CnnlabError, match=r"splits\.train must name its folders"):
        folders.list_splits(tmp_path, splits={"train": {"images": "a"}})


@pytest.mark.slow
def test_given_test_is_what_summary_and_evaluate_report(tmp_path):
    """data check -> new -> train -> evaluate on the CamVid layout with no edits: the given test is scored."""
    written = camvid_like(tmp_path / "CamVid", frames=2)
    out = tmp_path / "r.yaml"
    assert main(["new", "--images", str(tmp_path / "CamVid" / "train"), "--masks",
                 str(tmp_path / "CamVid" / "trainannot"), "--void", "11", "--out", str(out)]) == 0
    raw = yaml.safe_load(out.read_text())
    raw["train"].update(epochs=1, progress=False)
    raw["model"]["params"] = {"width": 4, "depth": 2}
    raw["out"] = str(tmp_path / "runs")
    out.write_text(yaml.safe_dump(raw))
    assert main(["train", str(out)]) in (0, None)
    run = next((tmp_path / "runs").iterdir())
    s = json.loads((run / "summary.json").read_text())
    assert s["evaluated_on"] == "test" and s["n_images"] == len(written["test"])
    assert any("testannot" in n and f"({len(written['test'])} pairs)" in n for n in s["notes"])
    assert main(["evaluate", str(run), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "evaluate_test.json").read_text())
    assert ev["split"] == "test" and ev["n_images"] == len(written["test"])
    assert ev["metrics"]["dice_mean"] == pytest.approx(s["metrics"]["dice_mean"], abs=1e-6)


def test_given_split_folders_move_with_the_data_root(tmp_path):
    """evaluate --data NEW_ROOT on a given-split run: each split's absolute folders keep their place under it."""
    old, new = tmp_path / "old", tmp_path / "new"
    opts = {"split": "given", "splits": {"train": {"images": str(old / "train"), "masks": str(old / "trainannot")},
                                         "test": {"images": str(old / "test"), "masks": str(old / "testannot")}}}
    moved = folders.rebase_options(opts, old, new)
    assert moved["splits"]["test"] == {"images": str(new / "test"), "masks": str(new / "testannot")}
    assert set(moved) == set(opts)
    with pytest.raises(CnnlabError, match=r"splits\.test\.masks"):
        folders.rebase_options({"splits": {"test": {"images": str(old / "t"), "masks": str(tmp_path / "x")}}}, old,
                               new)


def test_a_split_named_by_hand_keeps_the_others_found(tmp_path):
    camvid_like(tmp_path / "CamVid")
    dev = write_split(tmp_path / "extra" / "img", tmp_path / "extra" / "gt", [2], 2)
    _, opts = given_options(tmp_path / "CamVid" / "train", tmp_path / "CamVid" / "trainannot",
                            val=(tmp_path / "extra" / "img", tmp_path / "extra" / "gt"))
    assert list(opts["splits"]) == ["train", "val", "test"] and len(dev) == 2
    assert opts["splits"]["val"]["masks"] == str((tmp_path / "extra" / "gt").resolve())
    assert opts["splits"]["test"]["masks"] == str((tmp_path / "CamVid" / "testannot").resolve())
