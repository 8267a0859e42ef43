"""The folders reader: every mask encoding, name matching, splits, size policies, FOV and user mistakes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.cli.data import folders_report
from cnnlab.data.formats import folders
from cnnlab.data.formats.folders._scan import match_stems
from cnnlab.errors import ConfigError, DataError

ALL = {"fractions": {"train": 1.0}}  # every pair in one split: encoding tests do not depend on a random split
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _save(path: Path, arr: np.ndarray, mode: str | None = None, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path, **kw) if mode else Image.fromarray(arr).save(path, **kw)


def _image(seed: int, h: int = 32, w: int = 32, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c) if c > 1 else (h, w), dtype=np.uint8)


def _labels(seed: int, k: int, h: int = 32, w: int = 32) -> np.ndarray:
    """Class indices with every class present (blocks), so discovery sees all values."""
    lab = np.random.default_rng(seed).integers(0, k, (h, w)).astype(np.uint8)
    lab[:2, :k] = np.arange(k)
    return lab


def _pairs(root: Path, masks: list[np.ndarray], mask_ext: str = ".png", suffix: str = "", mode=None,
           **save_kw) -> None:
    for i, m in enumerate(masks):
        _save(root / "images" / f"im{i}.png", _image(i, *m.shape[:2]))
        _save(root / "masks" / f"im{i}{suffix}{mask_ext}", m, mode, **save_kw)


def _by_name(d) -> dict[str, torch.Tensor]:
    return dict(zip(d.names, d.masks))


# ---------------------------------------------------------------- encodings
@pytest.mark.parametrize("fg", [255, 1])
def test_binary_masks_become_0_and_1(tmp_path, fg):
    labs = [_labels(i, 2) for i in range(3)]
    _pairs(tmp_path, [lab * fg for lab in labs])
    d = folders.load(tmp_path, "train", **ALL)
    assert d.class_names == ["background", "class_1"]
    assert d.ignore_index is None
    for i, lab in enumerate(labs):
        assert torch.equal(_by_name(d)[f"im{i}"], torch.from_numpy(lab))
    assert f"mask encoding: binary 0/{fg}" in d.notes


def test_grey_levels_each_value_a_class_in_value_order(tmp_path):
    levels = np.array([0, 50, 200], dtype=np.uint8)
    labs = [_labels(i, 3) for i in range(2)]
    _pairs(tmp_path, [levels[lab] for lab in labs])
    d = folders.load(tmp_path, "train", **ALL)
    assert d.class_names == ["class_0", "class_1", "class_2"]
    assert torch.equal(_by_name(d)["im1"], torch.from_numpy(labs[1]))
    assert any("3 grey levels [0, 50, 200]" in n for n in d.notes)


def _palette_png(path: Path, idx: np.ndarray) -> None:
    im = Image.fromarray(idx, "P")
    im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def test_palette_index_is_the_class_and_255_is_void(tmp_path):
    idx = [_labels(i, 3) for i in range(2)]
    idx[0][5:8, 5:8] = 255  # VOC-style void border
    for i, m in enumerate(idx):
        _save(tmp_path / "images" / f"im{i}.png", _image(i))
        _palette_png(tmp_path / "masks" / f"im{i}.png", m)
    d = folders.load(tmp_path, "train", **ALL)
    assert d.class_names == ["class_0", "class_1", "class_2"]
    assert d.ignore_index == 255
    got = _by_name(d)["im0"]
    assert torch.equal(got, torch.from_numpy(idx[0]))  # index i -> class i, 255 stays 255 (ignored)
    assert any("palette PNG" in n and "void" in n for n in d.notes)


def test_palette_indices_with_gaps_keep_index_order(tmp_path):
    idx = np.array([0, 3, 7], dtype=np.uint8)[_labels(0, 3)]
    _save(tmp_path / "images" / "a.png", _image(0))
    _palette_png(tmp_path / "masks" / "a.png", idx)
    d = folders.load(tmp_path, "train", **ALL)
    assert len(d.class_names) == 3 and d.ignore_index is None
    assert torch.equal(d.masks[0], torch.from_numpy(_labels(0, 3)))


COLORS = {"background": [0, 0, 0], "tumour": [255, 0, 0], "stroma": [0, 255, 0]}


def _rgb_masks(tmp_path: Path) -> list[np.ndarray]:
    table = np.array(list(COLORS.values()), dtype=np.uint8)
    labs = [_labels(i, 3) for i in range(2)]
    _pairs(tmp_path, [table[lab] for lab in labs])
    return labs


def test_rgb_colour_codes_with_a_table(tmp_path):
    labs = _rgb_masks(tmp_path)
    d = folders.load(tmp_path, "train", colors=COLORS, **ALL)
    assert d.class_names == ["background", "tumour", "stroma"]
    assert torch.equal(_by_name(d)["im0"], torch.from_numpy(labs[0]))


def test_rgb_colour_codes_without_a_table_are_discovered(tmp_path):
    labs = _rgb_masks(tmp_path)
    d = folders.load(tmp_path, "train", **ALL)
    # discovered colours sort as (0,0,0) < (0,255,0) < (255,0,0): table classes 0, 2, 1
    expected = np.array([0, 2, 1], dtype=np.uint8)[labs[1]]
    assert torch.equal(_by_name(d)["im1"], torch.from_numpy(expected))
    note = next(n for n in d.notes if n.startswith("mask encoding"))
    assert "discovered" in note and "class_1=[0, 255, 0]" in note and "class_2=[255, 0, 0]" in note


def test_colour_not_in_the_table_is_an_error(tmp_path):
    _rgb_masks(tmp_path)
    with pytest.raises(DataError, match=r"colour \[0, 255, 0\].*not in data.options.colors"):
        folders.load(tmp_path, "train", colors={"bg": [0, 0, 0], "red": [255, 0, 0]}, **ALL)


def test_noisy_jpeg_binary_masks_are_thresholded_and_counted(tmp_path):
    lab = np.zeros((32, 32), dtype=np.uint8)
    lab[8:20, 5:27] = 1
    lab[22:30, 10:14] = 1
    _pairs(tmp_path, [lab * 255], mask_ext=".jpg", quality=60)
    with Image.open(tmp_path / "masks" / "im0.jpg") as im:
        stored = np.asarray(im.convert("L"))
    assert len(np.unique(stored)) > 2  # the fixture really is noisy
    d = folders.load(tmp_path, "train", **ALL)
    assert torch.equal(d.masks[0], torch.from_numpy((stored >= 128).astype(np.uint8)))
    snapped = int(((stored != 0) & (stored != 255)).sum())
    assert any(f"{snapped} mask pixels were not exactly" in n for n in d.notes)
    assert f"{snapped} pixels were not exactly 0 or 255" in folders.check(tmp_path, **ALL)


def test_noise_threshold_is_128_exactly(tmp_path):
    """A lossless mask with 40 noise values near 0 and 255 (plus 127 and 128) is lossy binary, split at 128."""
    m = np.zeros((32, 32), np.uint8)
    m[16:] = 255
    m[0, :20] = np.arange(1, 21)          # 20 noise values near 0
    m[31, :20] = np.arange(235, 255)      # 20 near 255
    m[5, 5], m[5, 6] = 127, 128
    _pairs(tmp_path, [m])
    d = folders.load(tmp_path, "train", **ALL)
    expected = (m >= 128).astype(np.uint8)
    assert expected[5, 5] == 0 and expected[5, 6] == 1
    assert torch.equal(d.masks[0], torch.from_numpy(expected))
    assert any("42 mask pixels were not exactly" in n for n in d.notes)  # 20 + 20 + 2


def test_mid_grey_photo_as_mask_is_refused(tmp_path):
    _pairs(tmp_path, [_image(5, c=1)])
    with pytest.raises(DataError, match="not a label map"):
        folders.load(tmp_path, "train", **ALL)


def test_classes_option_names_and_orders(tmp_path):
    labs = [_labels(i, 2) for i in range(2)]
    _pairs(tmp_path, [lab * 255 for lab in labs])
    d = folders.load(tmp_path, "train", classes=["membrane", "cell"], **ALL)
    assert d.class_names == ["membrane", "cell"]
    d = folders.load(tmp_path, "train", classes={"cell": 255, "membrane": 0}, **ALL)
    assert torch.equal(_by_name(d)["im0"], torch.from_numpy(1 - labs[0]))  # value 255 is now class 0
    with pytest.raises(ConfigError, match="names 3 classes but the masks hold 2"):
        folders.load(tmp_path, "train", classes=["a", "b", "c"], **ALL)
    with pytest.raises(ConfigError, match="'data.options.colour'"):
        folders.load(tmp_path, "train", colour={}, **ALL)


# ---------------------------------------------------------------- names, junk, mistakes
def test_stem_matching_rules():
    imgs = {s: Path(s + ".tif") for s in ["21_training", "22_training", "a", "b", "img007", "lonely"]}
    masks = {s: Path(s + ".gif") for s in ["21_manual1", "22_manual1", "a", "b_mask", "mask_007", "orphan_9"]}
    m = match_stems(imgs, masks, "mask")
    assert {k: v.stem for k, v in m.pairs.items()} == {"21_training": "21_manual1", "22_training": "22_manual1",
                                                       "a": "a", "b": "b_mask", "img007": "mask_007"}
    assert m.rules == {"image name minus '_training' = mask name minus '_manual1'": 2, "same name": 1,
                       "mask name minus '_mask'": 1, "same numbers in the names (check these pairs)": 1}
    assert m.unmatched_images == ["lonely"] and m.unmatched_partners == ["orphan_9"]


def test_two_masks_for_one_image_are_ambiguous_not_guessed():
    m = match_stems({"01_test": Path("01_test.tif")}, {"01_manual1": Path("a"), "01_manual2": Path("b")}, "mask")
    assert not m.pairs and m.ambiguous == ["01_manual1", "01_manual2", "01_test"]


def test_unmatched_names_are_listed_and_counted(tmp_path):
    _pairs(tmp_path, [_labels(i, 2) * 255 for i in range(3)], suffix="_mask")
    _save(tmp_path / "images" / "extra.png", _image(9))
    _save(tmp_path / "masks" / "zzz_mask.png", _labels(9, 2) * 255)
    d = folders.load(tmp_path, "train", **ALL)
    assert sorted(d.names) == ["im0", "im1", "im2"]
    assert any("1 image(s) without a mask skipped: extra" in n for n in d.notes)
    assert any("1 mask(s) without an image skipped: zzz_mask" in n for n in d.notes)
    assert any("mask name minus '_mask' (3)" in n for n in d.notes)
    report = folders.check(tmp_path, **ALL)
    assert "1 image(s) without a mask: extra" in report and "1 mask(s) without an image: zzz_mask" in report


def test_junk_files_are_skipped_and_counted(tmp_path):
    _pairs(tmp_path, [_labels(i, 2) * 255 for i in range(2)])
    for name in (".DS_Store", "Thumbs.db", "._im0.png"):
        (tmp_path / "images" / name).write_bytes(b"\x00junk")
    (tmp_path / "masks" / "readme.txt").write_text("exported by tool X")
    d = folders.load(tmp_path, "train", **ALL)
    assert len(d) == 2
    assert "skipped 3 system file(s) (.DS_Store, Thumbs.db, ._*)" in d.notes
    assert "ignored 1 non-image file(s): readme.txt" in d.notes


def test_corrupt_image_is_named(tmp_path):
    _pairs(tmp_path, [_labels(i, 2) * 255 for i in range(3)])
    (tmp_path / "images" / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"im1\.png: not a readable image"):
        folders.load(tmp_path, "train", **ALL)
    assert "im1.png: not a readable image" in folders.check(tmp_path, **ALL)


def test_mask_size_differing_from_image_is_named(tmp_path):
    _pairs(tmp_path, [_labels(0, 2) * 255])
    _save(tmp_path / "masks" / "im0.png", _labels(0, 2, 16, 32) * 255)
    with pytest.raises(DataError, match=r"im0\.png: mask is 32x16 but its image im0\.png is 32x32"):
        folders.load(tmp_path, "train", **ALL)
    assert "mask is 32x16 but its image im0.png is 32x32" in folders.check(tmp_path, **ALL)


def test_missing_and_empty_folders(tmp_path):
    _pairs(tmp_path, [_labels(0, 2) * 255])
    with pytest.raises(DataError, match="mask folder not found.*did you mean 'masks'"):
        folders.load(tmp_path, "train", masks="mask", **ALL)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataError, match="empty: no mask files"):
        folders.load(tmp_path, "train", masks="empty", **ALL)


# ---------------------------------------------------------------- field of view
def test_fov_pixels_outside_become_255(tmp_path):
    labs = [_labels(i, 2) for i in range(2)]
    _pairs(tmp_path, [lab * 255 for lab in labs])
    fovs = []
    for i in range(2):
        fov = np.zeros((32, 32), dtype=np.uint8)
        fov[4:28, 6 + i:30] = 255
        fovs.append(fov)
        _save(tmp_path / "fov" / f"im{i}_mask.gif", fov)
    d = folders.load(tmp_path, "train", fov="fov", **ALL)
    assert d.ignore_index == 255
    for i in range(2):
        expected = np.where(fovs[i] > 0, labs[i], 255).astype(np.uint8)
        assert torch.equal(_by_name(d)[f"im{i}"], torch.from_numpy(expected))
    shares = folders.check(tmp_path, fov="fov", **ALL)
    inside = np.concatenate([labs[i][fovs[i] > 0] for i in range(2)])
    assert f"class_1 {100 * inside.mean():.1f}%" in shares and "inside the field of view" in shares


def test_image_without_fov_file_is_an_error(tmp_path):
    _pairs(tmp_path, [_labels(i, 2) * 255 for i in range(2)])
    _save(tmp_path / "fov" / "im0.png", np.full((32, 32), 255, np.uint8))
    with pytest.raises(DataError, match=r"im1\.png: no field-of-view file"):
        folders.load(tmp_path, "train", fov="fov", **ALL)


# ---------------------------------------------------------------- sizes
def test_mixed_sizes_default_to_median_rounded_to_16(tmp_path):
    for i, (h, w) in enumerate([(30, 33), (50, 41), (70, 64)]):
        _save(tmp_path / "images" / f"im{i}.png", _image(i, h, w))
        _save(tmp_path / "masks" / f"im{i}.png", _labels(i, 2, h, w) * 255)
    d = folders.load(tmp_path, "train", **ALL)
    assert d.images.shape == (3, 3, 48, 48)  # median 50x41 -> 48x48
    assert any("median image size 50x41 rounded to a multiple of 16" in n for n in d.notes)
    lab = _labels(1, 2, 50, 41)
    ref = F.interpolate(torch.from_numpy(lab)[None, None].float(), size=(48, 48), mode="nearest-exact")[0, 0]
    assert torch.equal(_by_name(d)["im1"], ref.to(torch.uint8))


def _one(tmp_path: Path, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    img, lab = _image(3, h, w), _labels(3, 2, h, w)
    _save(tmp_path / "images" / "a.png", img)
    _save(tmp_path / "masks" / "a.png", lab * 255)
    return img, lab


def test_pad_keeps_native_pixels_and_ignores_padding(tmp_path):
    img, lab = _one(tmp_path, 20, 30)
    d = folders.load(tmp_path, "train", size=[32, 32], fit="pad", **ALL)
    assert d.ignore_index == 255
    m, x = d.masks[0], d.images[0]
    assert torch.equal(m[6:26, 1:31], torch.from_numpy(lab))  # centred: (32-20)//2, (32-30)//2
    assert torch.equal(x[:, 6:26, 1:31], torch.from_numpy(img).permute(2, 0, 1))
    assert (m[:6] == 255).all() and (m[26:] == 255).all() and (m[:, 0] == 255).all() and (x[:, :6] == 0).all()


def test_crop_takes_the_centre_at_native_resolution(tmp_path):
    img, lab = _one(tmp_path, 40, 48)
    d = folders.load(tmp_path, "train", size=[32, 32], fit="crop", **ALL)
    assert torch.equal(d.masks[0], torch.from_numpy(lab[4:36, 8:40]))
    assert torch.equal(d.images[0], torch.from_numpy(img[4:36, 8:40]).permute(2, 0, 1))
    assert d.ignore_index is None


def test_resize_keep_aspect_letterboxes(tmp_path):
    _, lab = _one(tmp_path, 32, 64)
    d = folders.load(tmp_path, "train", size=[32, 32], fit="resize", keep_aspect=True, **ALL)
    half = F.interpolate(torch.from_numpy(lab)[None, None].float(), size=(16, 32), mode="nearest-exact")[0, 0]
    assert torch.equal(d.masks[0][8:24], half.to(torch.uint8))
    assert (d.masks[0][:8] == 255).all() and (d.masks[0][24:] == 255).all()


def test_grey_images_stay_one_channel_unless_some_are_colour(tmp_path):
    _save(tmp_path / "images" / "a.png", _image(0, c=1))
    _save(tmp_path / "masks" / "a.png", _labels(0, 2) * 255)
    assert folders.load(tmp_path, "train", **ALL).images.shape[1] == 1
    _save(tmp_path / "images" / "b.png", _image(1))
    _save(tmp_path / "masks" / "b.png", _labels(1, 2) * 255)
    d = folders.load(tmp_path, "train", **ALL)
    assert d.images.shape[1] == 3
    assert (d.images[d.names.index("a")][0] == d.images[d.names.index("a")][2]).all()


# ---------------------------------------------------------------- splits
def test_random_split_is_seeded_disjoint_and_sized(tmp_path):
    _pairs(tmp_path, [_labels(i, 2, 8, 8) * 255 for i in range(10)])
    opts = {"split": "random", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}}
    parts = {s: folders.load(tmp_path, s, **opts).names for s in ("test", "train", "validation")}
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [6, 2, 2]
    assert sorted(sum(parts.values(), [])) == sorted(f"im{i}" for i in range(10))
    assert folders.load(tmp_path, "val", **opts).names == parts["validation"]
    other = folders.load(tmp_path, "test", **{**opts, "seed": 1}).names
    assert other != parts["test"]
    assert folders.list_splits(tmp_path, **opts) == ["train", "val", "test"]
    assert folders.list_splits(tmp_path, fractions=[0.8, 0.2]) == ["train", "val"]


def test_split_by_folders(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        _pairs(tmp_path / split, [_labels(i, 2, 8, 8) * 255 for i in range(n)])
    _save(tmp_path / "test" / "images" / "u.png", _image(0, 8, 8))  # unlabelled: no masks folder
    assert folders.list_splits(tmp_path) == ["train", "val"]  # policy found from the layout
    d = folders.load(tmp_path, "validation", split="folders")
    assert d.names == ["im0", "im1"]
    assert any("'test' has no 'masks' folder: skipped" in n for n in d.notes)
    with pytest.raises(DataError, match="no split 'test'"):
        folders.load(tmp_path, "test", split="folders")


@pytest.mark.parametrize("kind", ["csv", "json_map", "json_lists"])
def test_split_from_a_list(tmp_path, kind):
    _pairs(tmp_path, [_labels(i, 2, 8, 8) * 255 for i in range(4)])
    want = {"im0": "train", "im1": "test", "im2": "train"}  # im3 not listed
    if kind == "csv":
        (tmp_path / "splits.csv").write_text("stem,split\nim0.png,train\nim1,test\nim2,train\nghost,train\n")
        name = "splits.csv"
    else:
        raw = {**want, "ghost": "train"} if kind == "json_map" else {"train": ["im0", "im2", "ghost"],
                                                                     "test": ["images/im1.png"]}
        (tmp_path / "splits.json").write_text(json.dumps(raw))
        name = "splits.json"
    d = folders.load(tmp_path, "train", split_file=name)
    assert d.names == ["im0", "im2"]
    assert folders.load(tmp_path, "test", split_file=name).names == ["im1"]
    assert any("1 pair(s) not in" in n and "im3" in n for n in d.notes)
    assert any("have no image/mask pair: ghost" in n for n in d.notes)


# ---------------------------------------------------------------- check and real data
def test_check_folders_reports_counts_encoding_and_shares(tmp_path):
    labs = [_labels(i, 2) for i in range(4)]
    _pairs(tmp_path / "data", [lab * 255 for lab in labs])
    report, problems = folders_report(tmp_path / "data" / "images", tmp_path / "data" / "masks")
    assert problems == []
    share = np.mean([lab.mean() for lab in labs])
    assert "pairs: 4 matched by same name (4)" in report
    assert "mask encoding: binary 0/255" in report
    assert f"background {100 * (1 - share):.1f}%, class_1 {100 * share:.1f}%" in report
    assert "sizes (HxW): 32x32 (4)" in report and "problems: none" in report


@pytest.mark.skipif(not (SHARED / "isbi2012_em" / "train").is_dir(), reason="shared ISBI 2012 data absent")
def test_real_isbi2012_through_the_folders_reader():
    root = SHARED / "isbi2012_em"
    d = folders.load(root, "val", size=[64, 64], images="train/image", masks="train/label")
    assert d.class_names == ["background", "class_1"] and d.images.shape == (4, 1, 64, 64)
    assert set(d.masks.unique().tolist()) == {0, 1} and d.ignore_index is None
    with Image.open(root / "train" / "label" / f"{d.names[0]}.png") as im:
        raw = np.asarray(im)
    ref = F.interpolate(torch.from_numpy(raw // 255)[None, None].float(), size=(64, 64), mode="nearest-exact")
    assert torch.equal(d.masks[0], ref[0, 0].to(torch.uint8))


@pytest.mark.skipif(not (SHARED / "drive" / "training").is_dir(), reason="shared DRIVE data absent")
def test_real_drive_with_field_of_view():
    root = SHARED / "drive"
    d = folders.load(root, "training", size=[584, 565], images="images", masks="1st_manual", fov="mask")
    assert d.class_names == ["background", "class_1"] and d.ignore_index == 255 and len(d) == 20
    i = d.names.index("21_training")
    with Image.open(root / "training" / "1st_manual" / "21_manual1.gif") as im:
        vessels = np.asarray(im.convert("L")) // 255
    with Image.open(root / "training" / "mask" / "21_training_mask.gif") as im:
        fov = np.asarray(im.convert("L")) > 0
    assert torch.equal(d.masks[i], torch.from_numpy(np.where(fov, vessels, 255).astype(np.uint8)))
    assert folders.list_splits(root, images="images", masks="1st_manual", fov="mask") == ["test", "training"]


def test_images_and_masks_in_one_folder(tmp_path):
    labs = [_labels(i, 2) for i in range(2)]
    for i, lab in enumerate(labs):  # GlaS style: train_N.bmp + train_N_anno.bmp side by side
        _save(tmp_path / "all" / f"train_{i}.bmp", _image(i))
        _save(tmp_path / "all" / f"train_{i}_anno.bmp", lab * 255)
    d = folders.load(tmp_path, "train", images="all", masks="all", **ALL)
    assert d.names == ["train_0", "train_1"]
    assert torch.equal(d.masks[1], torch.from_numpy(labs[1]))


def test_lossy_colour_masks_snap_to_the_nearest_table_colour(tmp_path):
    table = np.array(list(COLORS.values()), dtype=np.uint8)
    lab = np.zeros((32, 32), np.uint8)
    lab[4:20, 4:20], lab[22:30, 2:30] = 1, 2
    _pairs(tmp_path, [table[lab]], mask_ext=".jpg", quality=70)
    with Image.open(tmp_path / "masks" / "im0.jpg") as im:
        stored = np.asarray(im.convert("RGB")).astype(int)
    dist = ((stored[:, :, None, :] - table.astype(int)[None, None]) ** 2).sum(-1)
    exact = (dist == 0).any(-1)
    assert not exact.all()  # the fixture really is lossy
    d = folders.load(tmp_path, "train", colors=COLORS, **ALL)
    assert torch.equal(d.masks[0], torch.from_numpy(dist.argmin(-1).astype(np.uint8)))
    assert any(f"{int((~exact).sum())} mask pixels were not exactly" in n for n in d.notes)
