"""Issue 30, void values and class names: data.options.void / --void ignore mask values in loss and metrics like
255; names files beside the masks name the classes; value 0 is 'background' only where it is."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cnnlab.cli.data import folders_report
from cnnlab.data.formats import folders
from cnnlab.errors import CnnlabError
from cnnlab.losses.core import build_loss
from cnnlab.metrics.confusion import ConfusionMatrix
from cnnlab.new.own import OwnData
from cnnlab.new.recipe import write_recipe
from own_standins import VOID, write_split


@pytest.fixture(autouse=True)
def _no_step_timing(monkeypatch):
    import cnnlab.new.recipe as nr
    from cnnlab.new.estimate import StepTimes

    monkeypatch.setattr(nr, "measure_steps", lambda r, c, k, batch: StepTimes(0.5, 0.05, batch, 1, "cpu, fp32"))


def _grey_set(root: Path) -> Path:
    write_split(root / "images", root / "masks", [0, 1, 2], 2)
    return root


def test_void_values_become_the_ignore_value_and_leave_the_classes(tmp_path):
    root = _grey_set(tmp_path)
    d = folders.load(root, "all", [24, 32], images="images", masks="masks", split="random", fractions={"all": 1.0},
                     void=[VOID])
    raw = np.stack([np.array(Image.open(root / "masks" / f"{n}.png")) for n in d.names])
    assert d.ignore_index == 255 and d.class_names == [f"class_{i}" for i in range(7)]  # 0..6; 11 is no class
    assert torch.equal(torch.from_numpy(raw == VOID), d.masks == 255)


def test_a_void_pixel_never_changes_a_metric_or_the_loss(tmp_path):
    root = _grey_set(tmp_path)
    d = folders.load(root, "all", None, images="images", masks="masks", split="random", fractions={"all": 1.0},
                     void=[VOID])
    k, void = len(d.class_names), d.masks == 255
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(len(d), k, *d.masks.shape[1:], generator=g)
    other = logits.clone()
    other[void[:, None].expand_as(other)] = torch.randn(int(void.sum()) * k, generator=g) * 50  # only void moves
    loss = build_loss("dice_ce", {}, ignore_index=255)
    summaries = []
    for lo in (logits, other):
        cm = ConfusionMatrix(k, 255)
        cm.update(lo.argmax(1), d.masks)
        summaries.append(cm.summary(d.class_names))
        assert float(loss(lo, d.masks.long())) == pytest.approx(float(loss(logits, d.masks.long())), abs=1e-6)
    assert summaries[0] == summaries[1]
    # oracle: the confusion matrix of the non-void pixels alone, by numpy
    keep = ~void.numpy()
    t, p = d.masks.numpy()[keep].astype(int), logits.argmax(1).numpy()[keep]
    assert torch.equal(torch.from_numpy(np.bincount(t * k + p, minlength=k * k).reshape(k, k)), cm.mat)


def test_a_void_colour_in_rgb_masks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    colours = np.array([[0, 0, 0], [128, 64, 128], [70, 130, 180], [220, 20, 60]], np.uint8)  # black is void here
    for i in range(4):
        idx = np.zeros((8, 8), np.uint8)
        idx[:4], idx[4:, :4], idx[4:, 4:], idx[0, 0] = 1, 2, 3, 0
        Image.fromarray(colours[idx]).save(tmp_path / "masks" / f"f{i}.png")
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "images" / f"f{i}.png")
    d = folders.load(tmp_path, "all", [8, 8], split="random", fractions={"all": 1.0}, void=[[0, 0, 0]])
    assert len(d.class_names) == 3 and int((d.masks == 255).sum()) == 4 and d.masks[0, 0, 0] == 255


def test_data_check_shows_the_void_share_and_names_unnamed_values(tmp_path):
    root = _grey_set(tmp_path)
    text, _ = folders_report(root / "images", root / "masks", void=[VOID])
    assert "void (ignored in loss and metrics): 0.4% of pixels" in text  # 3 of 24 x 32 pixels per frame: 0.39%
    with pytest.raises(CnnlabError) as e:  # seven names for eight values: the unnamed one may be void
        write_recipe("segmentation", root / "images", root / "masks", tmp_path / "r.yaml",
                     own=OwnData(classes=tuple("abcdefg")))
    assert "--void 11" in e.value.message  # the value left unnamed (the highest)
    with pytest.raises(CnnlabError) as e:
        folders.load(root, "all", None, split="random", fractions={"all": 1.0},
                     classes={f"c{v}": v for v in range(7)})
    assert "--void 11" in e.value.hint


def test_void_and_names_by_hand_reach_the_recipe(tmp_path):
    root = _grey_set(tmp_path)
    names = ("Sky", "Building", "Pole", "Road", "Car", "Pavement", "Tree")
    out = write_recipe("segmentation", root / "images", root / "masks", tmp_path / "r.yaml",
                       own=OwnData(void=(VOID,), classes=names))
    opts = yaml.safe_load(out.read_text())["data"]["options"]
    assert opts["void"] == [VOID] and opts["classes"] == list(names)
    assert "0.4% of mask pixels" in out.read_text()


def _names_file(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)


@pytest.mark.parametrize("file,text,expect", [
    ("classes.txt", "Sky\nBuilding\nPole\nRoad\nCar\nPavement\nTree\nspare\nspare\nspare\nspare\nVoid\n", None),
    ("labels.txt", "\n".join(["Sky", "Building", "Pole", "Road", "Car", "Pavement", "Tree"] + ["x"] * 4 + ["void"]),
     None),
    ("_classes.csv", "Pixel Value, Class\n0, Sky\n1, Building\n2, Pole\n3, Road\n4, Car\n5, Pavement\n6, Tree\n"
     "11, unlabelled\n", None),
])
def test_names_files_for_grey_masks(tmp_path, file, text, expect):
    root = _grey_set(tmp_path)
    _names_file(root, file, text)
    out = write_recipe("segmentation", root / "images", root / "masks", tmp_path / "r.yaml")
    opts = yaml.safe_load(out.read_text())["data"]["options"]
    assert opts["classes"] == ["Sky", "Building", "Pole", "Road", "Car", "Pavement", "Tree"]
    assert opts["void"] == [VOID]  # the value its file names void
    assert f"names from {root / file}" in out.read_text()
    d = folders.load(Path(yaml.safe_load(out.read_text())["data"]["root"]), "train", [24, 32], **opts)
    assert d.class_names[0] == "Sky" and d.ignore_index == 255


@pytest.mark.parametrize("file,text", [
    ("class_dict.csv", "name,r,g,b\nVoid,0,0,0\nRoad,128,64,128\nSky,70,130,180\nPedestrian,220,20,60\n"),
    ("labelmap.txt", "# label:color_rgb:parts:actions\nvoid:0,0,0::\nRoad:128,64,128::\nSky:70,130,180::\n"
     "Pedestrian:220,20,60::\n"),
])
def test_colour_names_files_for_rgb_masks(tmp_path, file, text):
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "labels").mkdir()
    colours = np.array([[0, 0, 0], [128, 64, 128], [70, 130, 180], [220, 20, 60]], np.uint8)
    for i in range(6):
        idx = np.zeros((8, 8), np.uint8)
        idx[:4], idx[4:, :4], idx[4:, 4:], idx[0, 0] = 2, 1, 3, 0
        Image.fromarray(colours[idx]).save(tmp_path / "d" / "labels" / f"f{i}_L.png")
        Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(tmp_path / "d" / "images" / f"f{i}.png")
    _names_file(tmp_path / "d", file, text)
    text, _ = folders_report(tmp_path / "d" / "images", tmp_path / "d" / "labels")
    assert f"class names from {tmp_path / 'd' / file}" in text and "Road" in text
    out = write_recipe("segmentation", tmp_path / "d" / "images", tmp_path / "d" / "labels", tmp_path / "r.yaml")
    opts = yaml.safe_load(out.read_text())["data"]["options"]
    assert opts["colors"] == {"Road": [128, 64, 128], "Sky": [70, 130, 180], "Pedestrian": [220, 20, 60]}
    assert opts["void"] == [[0, 0, 0]]
    d = folders.load(Path(yaml.safe_load(out.read_text())["data"]["root"]), "train", [8, 8], **opts)
    assert d.class_names == ["Road", "Sky", "Pedestrian"] and bool((d.masks[:, 0, 0] == 255).all())
    assert bool((d.masks[:, 1:4, :] == 1).all())  # the top rows are Sky, class 1 in the file's order


def test_value_zero_is_background_only_where_it_is(tmp_path):
    root = _grey_set(tmp_path)
    d = folders.load(root, "all", None, split="random", fractions={"all": 1.0}, void=[VOID])
    assert d.class_names[0] == "class_0"  # multi-class without names: not assumed to be background
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 2]))
    # Dice: class 0 2*1/(2+1) = 2/3, class 1 2*1/(1+2) = 2/3, class 2 1
    sky = cm.summary(["Sky", "Road", "Car"])
    assert "dice_mean_foreground" not in sky and "dice_background" not in sky  # Sky is a class like the others
    assert sky["dice_mean"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    bg = cm.summary(["background", "Road", "Car"])
    assert bg["dice_mean_foreground"] == pytest.approx((2 / 3 + 1) / 2)
    assert bg["dice_background"] == pytest.approx(2 / 3)
    for sub in ("images", "masks"):
        (tmp_path / "b" / sub).mkdir(parents=True)
    for i in range(3):  # binary 0/255 masks: 0 is their background
        m = np.zeros((8, 8), np.uint8)
        m[2:5, 2:5] = 255
        Image.fromarray(m).save(tmp_path / "b" / "masks" / f"c{i}.png")
        Image.fromarray(m // 2 + 20 * i).save(tmp_path / "b" / "images" / f"c{i}.png")
    two = folders.load(tmp_path / "b", "all", None, split="random", fractions={"all": 1.0})
    assert two.class_names == ["background", "class_1"]
