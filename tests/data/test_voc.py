"""The PASCAL VOC reader and the synthetic VOC writer: the 255 rule both ways, layouts, refusals naming the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.formats import voc
from cnnlab.data.synthetic import voc as synth_voc
from cnnlab.data.voc_colors import VOC_COLORMAP, VOC_PALETTE, colorize
from cnnlab.errors import ConfigError, DataError

# three 4x6 masks by hand: person (15), car (7), 255 outlines
MASKS = {
    "a": np.array([[0, 0, 255, 15, 15, 15], [0, 255, 15, 15, 15, 15], [0, 0, 255, 15, 15, 255],
                   [0, 0, 0, 255, 255, 0]]),
    "b": np.array([[7, 7, 255, 0, 0, 0], [7, 7, 255, 0, 0, 0], [255, 255, 0, 0, 15, 15], [0, 0, 0, 0, 15, 15]]),
    "c": np.array([[0, 0, 0, 0, 0, 0], [0, 3, 3, 255, 0, 0], [0, 3, 3, 255, 0, 0], [0, 0, 0, 0, 0, 0]]),
}
SPLITS = {"train": ["a", "b"], "val": ["c"]}


def save_mask(path: Path, mask: np.ndarray) -> None:
    """A VOC SegmentationClass file: indices in a palette PNG."""
    im = Image.fromarray(mask.astype(np.uint8))
    im.putpalette(VOC_PALETTE)
    im.save(path)


def make_voc(voc_dir: Path, masks: dict = MASKS, splits: dict = SPLITS) -> Path:
    """Write a VOC-like folder (JPEGImages, SegmentationClass, ImageSets/Segmentation) from masks by hand."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc_dir / sub).mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        img = np.stack([mask * 10 % 256, np.full_like(mask, 100), mask], -1).astype(np.uint8)
        Image.fromarray(img).save(voc_dir / "JPEGImages" / f"{name}.jpg", quality=95)
        save_mask(voc_dir / "SegmentationClass" / f"{name}.png", mask)
    for split, names in splits.items():
        (voc_dir / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return voc_dir


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    return tmp_path


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return synth_voc.write(tmp_path_factory.mktemp("voc"), seed=3, n_train=6, n_val=3, n_test=3, height=40, width=48)


def test_boundary_background_maps_255_to_0(root: Path):
    d = voc.load(root, "train")
    expected = np.stack([MASKS["a"], MASKS["b"]])
    expected[expected == 255] = 0
    assert d.masks.dtype == torch.uint8 and d.masks.shape == (2, 4, 6)
    assert (d.masks.numpy() == expected).all()
    assert d.ignore_index is None and d.names == ["a", "b"]
    assert d.images.shape == (2, 3, 4, 6) and d.images.dtype == torch.uint8
    assert len(d.class_names) == 21 and d.class_names[15] == "person"
    assert any("boundary=background" in n for n in d.notes)


def test_boundary_ignore_keeps_255_as_ignore_index(root: Path):
    d = voc.load(root, "train", boundary="ignore")
    assert (d.masks.numpy() == np.stack([MASKS["a"], MASKS["b"]])).all()
    assert d.ignore_index == 255 and any("boundary=ignore" in n for n in d.notes)


@pytest.mark.parametrize("boundary,edge", [("background", 0), ("ignore", 255)])
def test_foreground_background_maps_every_object_class_to_1(root: Path, boundary: str, edge: int):
    d = voc.load(root, "train", boundary=boundary, foreground_background=True)
    raw = np.stack([MASKS["a"], MASKS["b"]])
    expected = np.where(raw == 255, edge, (raw > 0).astype(int))
    assert (d.masks.numpy() == expected).all() and d.class_names == ["background", "foreground"]


def test_resize_keeps_mask_values_nearest(root: Path):
    d = voc.load(root, "train", size=[8, 12], boundary="ignore")
    assert d.images.shape == (2, 3, 8, 12) and d.masks.shape == (2, 8, 12)
    # doubling with nearest neighbour repeats every pixel: no blended labels
    up = np.repeat(np.repeat(np.stack([MASKS["a"], MASKS["b"]]), 2, axis=1), 2, axis=2)
    assert (d.masks.numpy() == up).all()


def test_torchvision_layout_and_bare_folder_read_the_same(root: Path, tmp_path: Path):
    bare = make_voc(tmp_path / "myvoc")  # not VOCdevkit/VOC<year>: outside torchvision's layout rules
    a, b = voc.load(root, "train"), voc.load(bare, "train")
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert "torchvision" in a.notes[0] and "outside torchvision" in b.notes[0]
    # the VOC<year> folder itself as root also goes through torchvision
    c = voc.load(root / "VOCdevkit" / "VOC2012", "train")
    assert torch.equal(a.masks, c.masks) and "torchvision" in c.notes[0]


def test_split_torchvision_does_not_know_is_read_directly(root: Path):
    voc_dir = root / "VOCdevkit" / "VOC2012"
    (voc_dir / "ImageSets/Segmentation/test.txt").write_text("c\n")  # torchvision: 'test' only for 2007
    d = voc.load(root, "test")
    assert d.names == ["c"] and "outside torchvision" in d.notes[0]


def test_validation_alias_reads_val(root: Path):
    assert voc.load(root, "validation").names == ["c"]


def test_missing_image_set_names_the_file_and_lists_splits(root: Path):
    with pytest.raises(DataError) as e:
        voc.load(root, "test")
    assert "test.txt" in str(e.value) and "available: train, val" in str(e.value)


def test_corrupted_png_names_the_file(root: Path):
    bad = root / "VOCdevkit/VOC2012/SegmentationClass/b.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(DataError, match="b.png"):
        voc.load(root, "train")


def test_mask_of_another_size_is_refused(root: Path):
    save_mask(root / "VOCdevkit/VOC2012/SegmentationClass/a.png", np.zeros((5, 6), np.uint8))
    with pytest.raises(DataError, match=r"a.png: mask is 6x5 but its image is 6x4"):
        voc.load(root, "train")


def test_palette_value_outside_classes_is_refused(root: Path):
    mask = MASKS["a"].copy()
    mask[0, 0] = 30
    save_mask(root / "VOCdevkit/VOC2012/SegmentationClass/a.png", mask)
    with pytest.raises(DataError, match=r"a.png: mask values \[30\]"):
        voc.load(root, "train")


def test_listed_image_missing_is_refused(root: Path):
    (root / "VOCdevkit/VOC2012/JPEGImages/b.jpg").unlink()
    with pytest.raises(DataError, match="b.jpg: image listed in the image set is missing"):
        voc.load(root, "train")


def test_rgb_mask_is_mapped_through_the_colour_map(root: Path):
    path = root / "VOCdevkit/VOC2012/SegmentationClass/a.png"
    Image.fromarray(VOC_COLORMAP[MASKS["a"]]).save(path)  # re-saved as colours
    d = voc.load(root, "train", boundary="ignore")
    assert (d.masks[0].numpy() == MASKS["a"]).all()


def test_images_of_different_sizes_need_a_size(root: Path):
    masks = {**MASKS, "b": np.zeros((6, 4), int)}
    make_voc(root / "VOCdevkit" / "VOC2012", masks)
    with pytest.raises(DataError, match="data.size"):
        voc.load(root, "train")
    assert voc.load(root, "train", size=[4, 4]).masks.shape == (2, 4, 4)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="unknown data.options key 'boundry'.*boundary"):
        voc.load(Path("."), "train", boundry="ignore")
    with pytest.raises(ConfigError, match="boundary must be one of background, ignore"):
        voc.load(Path("."), "train", boundary="void")


def test_years_are_detected_and_chosen(tmp_path: Path):
    make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    make_voc(tmp_path / "VOCdevkit" / "VOC2007", splits={"train": ["a"], "test": ["b", "c"]})
    with pytest.raises(DataError, match="several VOC years"):
        voc.load(tmp_path, "train")
    d = voc.load(tmp_path, "test", year=2007)  # 2007 has a test split in torchvision
    assert d.names == ["b", "c"] and "torchvision" in d.notes[0]
    with pytest.raises(DataError, match="no VOC2010"):
        voc.load(tmp_path, "train", year=2010)
    with pytest.raises(DataError, match="data root not found"):
        voc.load(tmp_path / "nowhere", "train")


def test_list_splits_skips_junk_and_check_reports_problems(root: Path):
    sets = root / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    (sets / "._train.txt").write_bytes(b"\x00\x05")
    (root / "VOCdevkit/VOC2012/JPEGImages/.DS_Store").write_bytes(b"junk")
    assert voc.list_splits(root) == ["train", "val"]
    bad = root / "VOCdevkit/VOC2012/SegmentationClass/c.png"
    bad.write_bytes(b"not a png")
    text = voc.check(root)
    assert "train: 2 listed, 2 readable" in text and "val: 1 listed, 0 readable" in text
    assert "problems: 1" in text and "c.png" in text and "skipped 2 junk files" in text
    # shares over the readable train masks (a, b: 48 pixels): person 13, car 4, boundary 10
    assert "person" in text and f"{13 / 48:7.2%}" in text and f"{10 / 48:7.2%}" in text


def test_synthetic_set_reads_back_with_objects_and_outline_bands(synth_root: Path):
    assert voc.list_splits(synth_root) == ["test", "train", "trainval", "val"]
    d = voc.load(synth_root, "train", size=[32, 32], boundary="ignore")
    assert d.images.shape == (6, 3, 32, 32) and len(voc.load(synth_root, "test", size=[32, 32])) == 3
    values = set(d.masks.unique().tolist())
    assert 0 in values and 255 in values and len(values - {0, 255}) >= 2
    png = Image.open(next((synth_root / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png")))
    assert png.mode == "P" and png.getpalette()[:3 * 21] == VOC_PALETTE[:3 * 21]


def test_synthetic_outline_band_separates_objects_from_background(synth_root: Path):
    for path in (synth_root / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png"):
        m = np.asarray(Image.open(path)).astype(int)
        obj = (m != 0) & (m != 255)
        assert obj.any() and (m == 255).any()
        # no object pixel touches a background or another class's pixel without a 255 pixel between them
        for a, b in ((m[:, 1:], m[:, :-1]), (m[1:], m[:-1])):
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), path.name


def test_synthetic_writer_is_deterministic_by_seed(tmp_path: Path):
    kw = dict(n_train=2, n_val=1, n_test=1, height=24, width=32)
    a = synth_voc.write(tmp_path / "a", seed=5, **kw)
    b = synth_voc.write(tmp_path / "b", seed=5, **kw)
    c = synth_voc.write(tmp_path / "c", seed=6, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 4 * 2 + 4  # 4 images x (jpg, png) + train/val/test/trainval lists
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files if f.suffix == ".png")


def test_colorize_uses_the_voc_colours():
    pic = colorize(torch.tensor([[0, 15], [255, 7]]))
    assert pic.tolist() == [[[0, 0, 0], [192, 128, 128]], [[224, 224, 192], [128, 128, 128]]]


RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "voc"


def test_voc_recipes_load_and_the_study_repeats_what_each_recipe_changes():
    import copy

    import yaml

    from cnnlab.config import asdict, load_recipe, read_yaml, recipe_from_dict
    from cnnlab.models.fcn import SEGMENTATION_MODELS_FCN
    from cnnlab.models.unet_paper import SEGMENTATION_MODELS_UNET_PAPER

    builders = {**SEGMENTATION_MODELS_FCN, **SEGMENTATION_MODELS_UNET_PAPER}
    study = yaml.safe_load((RECIPES / "study.yaml").read_text())
    assert study["seeds"] == [0, 1, 2]
    base = read_yaml(RECIPES / study["base"])
    others = {"study", "cpu_baseline", "study_imagenet", "efficientnet_lite0"}  # the last two: study_imagenet.yaml
    assert set(study["variants"]) == {p.stem for p in RECIPES.glob("*.yaml")} - others
    for name, overrides in study["variants"].items():
        recipe = asdict(load_recipe(RECIPES / f"{name}.yaml"))
        variant = asdict(recipe_from_dict(copy.deepcopy(base), overrides))
        assert recipe["data"]["format"] == "voc" and recipe["data"]["size"] == [224, 224], name
        assert variant["data"]["size"] == [64, 64], name
        for section in ("augment", "loss"):
            assert variant[section] == recipe[section], (name, section)
        transfer = recipe["model"]["params"].get("weights") == "imagenet"
        for key in ("name", "schedule", "weight_decay") + (() if transfer else ("lr",)):
            assert variant["optim"][key] == recipe["optim"][key], (name, key)
        assert variant["model"]["name"] == recipe["model"]["name"], name
        assert variant["model"]["freeze_encoder_epochs"] == recipe["model"]["freeze_encoder_epochs"], name
        shared = set(variant["model"]["params"]) & set(recipe["model"]["params"])
        for key in shared - {"width", "base_width", "decoder_width", "weights"}:  # only sizes and weights differ
            assert variant["model"]["params"][key] == recipe["model"]["params"][key], (name, key)
        # both parameter sets are accepted by the builder (no download: weights none)
        for params in (recipe["model"]["params"], variant["model"]["params"]):
            small = {**params, **({"weights": "none"} if "weights" in params else {})}
            if "width" in small or "base_width" in small or "decoder_width" in small:
                small = {**small, **{k: 4 for k in ("width", "base_width", "decoder_width") if k in small}}
            builders[recipe["model"]["name"]](3, 21, (64, 64), **small)


def test_unreadable_image_set_is_a_data_error(root: Path):
    (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").write_bytes(b"\xff\xfe\xfa a\n")
    with pytest.raises(DataError, match="train.txt: unreadable image set"):
        voc.load(root, "train")


@pytest.mark.parametrize("boundary", ["background", "ignore"])
def test_mean_iou_matches_torchmetrics_under_both_boundary_rules(synth_root: Path, boundary: str):
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    from cnnlab.metrics.confusion import ConfusionMatrix

    data = voc.load(synth_root, "val", boundary=boundary)
    true = data.masks.long()
    assert (true == 255).any() == (boundary == "ignore")  # the synthetic outlines are there, or mapped to 0
    g = torch.Generator().manual_seed(0)
    pred = torch.where(torch.rand(true.shape, generator=g) < 0.6, true.clamp(max=20),
                       torch.randint(0, 21, true.shape, generator=g))
    cm = ConfusionMatrix(21, ignore_index=data.ignore_index)
    cm.update(pred, true)
    summary = cm.summary(data.class_names)
    ignore = {"ignore_index": 255} if boundary == "ignore" else {}
    per_class = MulticlassJaccardIndex(21, average="none", **ignore)(pred, true)
    present = torch.bincount(true[true != 255].flatten(), minlength=21) > 0
    assert summary["iou_mean"] == pytest.approx(per_class[present].mean().item(), abs=1e-6)
    acc = MulticlassAccuracy(21, average="micro", **ignore)(pred, true)
    assert summary["pixel_accuracy"] == pytest.approx(acc.item(), abs=1e-6)


@pytest.mark.slow
def test_every_study_variant_trains_on_tiny_synthetic_voc(tmp_path: Path):
    import copy
    import json

    from cnnlab.config import recipe_from_dict
    from cnnlab.engine.run import train
    from cnnlab.study.plan import load_study

    root = synth_voc.write(tmp_path / "voc", seed=0, n_train=4, n_val=2, n_test=2, height=40, width=40)
    sets = [f"data.root={root}", "data.size=[32, 32]", "train.epochs=1", "train.batch_size=2",
            "train.max_steps_per_epoch=1", "train.progress=false", f"out={tmp_path / 'runs'}"]
    plan = load_study(RECIPES / "study.yaml")
    runs = [run for run in plan.runs if run.seed == 0]
    assert {run.group for run in runs} == set(plan.variants) and len(runs) == 10
    for run in runs:
        recipe = recipe_from_dict(copy.deepcopy(run.raw), run.overrides + sets)
        summary = json.loads((train(recipe) / "summary.json").read_text())
        assert summary["metrics"]["iou_mean"] is not None and 0 <= summary["metrics"]["pixel_accuracy"] <= 1, run.name
        assert summary["per_class"]["background"]["in_ground_truth"], run.name
