"""Mask files as real data sets store them (found by trying cnnlab on their layouts): small label values,
instance maps, 255 as void, JPEG-saved masks, grey masks with colour noise, and mask names with unknown words."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.formats import folders
from cnnlab.data.formats.folders._scan import match_stems
from cnnlab.errors import DataError
from test_folders import ALL, COLORS, _by_name, _labels, _pairs, _rgb_masks


def test_grey_jpeg_masks_with_colour_noise_are_binary_not_a_photo(tmp_path):
    """Kvasir-SEG's masks are RGB JPEGs of a 0/255 mask whose channels differ by a few levels: they were taken
    for colour masks with hundreds of colours and refused ("give data.options.colors"). Channels within a few
    levels of each other everywhere are one grey value (their mean), then thresholded as any lossy binary mask."""
    lab = np.zeros((32, 32), dtype=np.uint8)
    lab[8:20, 5:27] = 1
    rgb = np.stack([lab * 255] * 3, axis=-1).astype(np.int16)
    rgb[..., 0] += np.random.default_rng(0).integers(-6, 7, lab.shape)
    _pairs(tmp_path, [np.clip(rgb, 0, 255).astype(np.uint8)], mask_ext=".jpg", quality=90)
    with Image.open(tmp_path / "masks" / "im0.jpg") as im:
        stored = np.asarray(im).astype(np.int16)
    assert (stored[..., 0] != stored[..., 1]).any()  # the fixture really has colour noise
    d = folders.load(tmp_path, "train", **ALL)
    grey = stored.mean(axis=2).round()
    assert torch.equal(d.masks[0], torch.from_numpy((grey >= 128).astype(np.uint8)))
    assert d.class_names == ["background", "class_1"]
    # lossless colour codes a few levels apart (a class index kept in the red channel) stay colours
    coded = np.zeros((32, 32, 3), np.uint8)
    coded[..., 0] = lab * 3
    _pairs(tmp_path / "png", [coded])
    assert folders.load(tmp_path / "png", "train", **ALL).class_names == ["background", "class_1"]
    assert "RGB colour codes" in folders.check(tmp_path / "png", **ALL)


@pytest.mark.parametrize("values, ext", [((0, 1, 2), ".png"), ((0, 1, 2), ".tif")])
def test_small_label_values_are_classes_not_compression_noise(tmp_path, values, ext):
    """A lossless label map 0, 1, 2 (as PNG, or as a 16-bit TIFF) was taken for a JPEG-noisy binary mask ("values
    near 0 and 255") and thresholded at 128: every class became background, and `data check` said "problems:
    none". Each value is its own class, in value order."""
    labs = [_labels(i, len(values)) for i in range(2)]
    lut = np.array(values, dtype=np.uint16 if ext == ".tif" else np.uint8)
    _pairs(tmp_path, [lut[lab] for lab in labs], mask_ext=ext)
    if ext == ".tif":
        with Image.open(tmp_path / "masks" / "im0.tif") as im:
            assert im.mode.startswith("I;16")  # the fixture really is a 16-bit mask
    d = folders.load(tmp_path, "train", **ALL)
    assert len(d.class_names) == len(values)
    for i, lab in enumerate(labs):
        assert torch.equal(_by_name(d)[f"im{i}"], torch.from_numpy(lab))
    assert f"mask encoding: {len(values)} grey levels {list(values)}, one class each in value order" in d.notes


def test_an_instance_map_is_refused_in_one_line_not_thresholded_to_background(tmp_path):
    """40 objects numbered 1..40 (an instance map) were read as a JPEG-noisy binary mask: thresholded at 128,
    every object became background. Refused, naming the folder and what masks must hold."""
    m = np.zeros((32, 40), np.uint8)
    for k in range(1, 41):
        m[(k - 1) // 8 * 6: (k - 1) // 8 * 6 + 4, (k - 1) % 8 * 5: (k - 1) % 8 * 5 + 3] = k
    _pairs(tmp_path, [m])
    with pytest.raises(DataError, match=r"masks hold 41 distinct values \(0 to 40\).*instance map"):
        folders.load(tmp_path, "train", **ALL)


def test_small_label_masks_saved_as_jpeg_are_refused_naming_the_cause(tmp_path):
    """Label maps 0, 1, 2 saved as JPEG come back with values off by one: thresholded at 128 they were all
    background. Refused with the cause and the fix (save as PNG)."""
    lab = np.zeros((32, 32), np.uint8)
    lab[8:20, 5:27] = 1
    lab[22:30, 3:12] = 2
    _pairs(tmp_path, [lab], mask_ext=".jpg", quality=90)
    with Image.open(tmp_path / "masks" / "im0.jpg") as im:
        assert len(np.unique(np.asarray(im))) > 2  # the fixture really is noisy
    with pytest.raises(DataError, match="small label values do not survive JPEG compression"):
        folders.load(tmp_path, "train", **ALL)


def _numbered(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """n objects numbered 1..n (blocks), as GlaS and nuclei data sets store them."""
    m = np.zeros((h, w), np.uint8)
    for k in range(1, n + 1):
        m[2:10, 5 * k - 4: 5 * k - 1] = k
    return m


def test_instance_maps_are_objects_against_background_not_one_class_per_number(tmp_path):
    """GlaS-style annotations number the glands 1..n in each mask: read as grey levels they were one class per
    object number (or, when all were under 16, thresholded at 128 into all background). They are object vs
    background, said in the notes with the way to keep the numbers as classes."""
    masks = [_numbered(n) for n in (3, 7, 5)]
    _pairs(tmp_path, masks)
    d = folders.load(tmp_path, "train", **ALL)
    assert d.class_names == ["background", "object"]
    for i, m in enumerate(masks):
        assert torch.equal(_by_name(d)[f"im{i}"], torch.from_numpy((m != 0).astype(np.uint8)))
    assert any(n.startswith("mask encoding: instance map (each mask numbers its objects 1..n, up to 7)")
               for n in d.notes)
    kept = folders.load(tmp_path, "train", classes={f"n{v}": v for v in range(8)}, **ALL)
    assert kept.class_names == [f"n{v}" for v in range(8)]
    assert torch.equal(_by_name(kept)["im1"], torch.from_numpy(masks[1]))
    assert "note: class(es)" not in folders.check(tmp_path, classes={f"n{v}": v for v in range(8)}, **ALL)


def test_label_maps_with_the_same_classes_in_every_mask_stay_classes(tmp_path):
    """The instance rule needs object counts that differ between masks and reach 5: semantic maps holding classes
    1..5 in every mask, subsets that are not 1..n, or nested labels 1..n that stop at 4 stay one class per value."""
    _pairs(tmp_path, [_labels(i, 6) for i in range(3)])
    assert len(folders.load(tmp_path, "train", **ALL).class_names) == 6
    subsets = [np.where(_numbered(6) == 2, 3, _numbered(6)), _numbered(5), _numbered(6)]  # {1, 3, 4, 5, 6}
    _pairs(tmp_path / "b", subsets)
    assert len(folders.load(tmp_path / "b", "train", **ALL).class_names) == 7
    _pairs(tmp_path / "c", [_numbered(n) for n in (2, 4, 3)])  # nested 0-1, 0-2, ...: under 5
    assert len(folders.load(tmp_path / "c", "train", **ALL).class_names) == 5


def test_255_beside_small_labels_is_void_unless_it_is_the_foreground(tmp_path):
    """VOC-Aug's grey masks hold classes 0..20 and 255 on object boundaries (void), as Cityscapes' trainIds do:
    255 was read as one more class (trained and scored as class_21, the tested case's lossy rule made it all
    background). It is void, ignored in loss and metrics, as in palette masks. A 0/255 mask with a few stray 1s
    keeps 255 as its foreground."""
    labs = [_labels(i, 3) for i in range(2)]
    voc = [np.where(np.arange(32)[None, :] % 8 == 0, 255, lab).astype(np.uint8) for lab in labs]  # void lines
    _pairs(tmp_path / "voc", voc)
    d = folders.load(tmp_path / "voc", "train", **ALL)
    assert d.class_names == ["class_0", "class_1", "class_2"] and d.ignore_index == 255
    assert torch.equal(_by_name(d)["im0"], torch.from_numpy(voc[0]))  # classes 0..2 as they are, 255 kept as void
    assert "mask encoding: 3 grey levels [0, 1, 2], one class each in value order; 255 = void (ignored)" in d.notes
    binary = (labs[0] > 0).astype(np.uint8) * 255
    binary[0, :3] = 1  # three stray 1s
    _pairs(tmp_path / "bin", [binary])
    b = folders.load(tmp_path / "bin", "train", **ALL)
    assert b.ignore_index is None and len(b.class_names) == 3  # 0, 1, 255: each a class, 255 not ignored


def test_a_class_without_pixels_is_said_by_data_check(tmp_path):
    """A class the masks never hold (here a colour table entry no mask uses) cannot be learnt or scored: `data
    check` says so instead of "problems: none" alone."""
    _rgb_masks(tmp_path)
    report = folders.check(tmp_path, colors={**COLORS, "necrosis": [0, 0, 255]}, **ALL)
    assert "note: class(es) necrosis have no pixels in any mask" in report
    assert "have no pixels" not in folders.check(tmp_path, colors=COLORS, **ALL)


def test_a_mask_named_after_its_image_plus_an_unknown_word_is_its_pair():
    """CHASE_DB1 names masks Image_01L_1stHO.png for Image_01L.jpg: no known suffix and different numbers, so
    every image was unmatched ("no pairs"). One last name part after a separator now pairs them, saying so; two
    annotators' masks for one image stay ambiguous instead of one being picked."""
    imgs = {s: Path(s + ".jpg") for s in ["Image_01L", "Image_01R", "Image_02L"]}
    m = match_stems(imgs, {s: Path(s + ".png") for s in ["Image_01L_1stHO", "Image_01R_1stHO", "Image_02L_1stHO"]},
                    "mask")
    assert {k: v.stem for k, v in m.pairs.items()} == {"Image_01L": "Image_01L_1stHO",
                                                       "Image_01R": "Image_01R_1stHO", "Image_02L": "Image_02L_1stHO"}
    assert m.rules == {"mask name minus '_1stHO'": 3}
    two = match_stems({"Image_01L": Path("Image_01L.jpg")},
                      {"Image_01L_1stHO": Path("a.png"), "Image_01L_2ndHO": Path("b.png")}, "mask")
    assert not two.pairs and two.ambiguous == ["Image_01L", "Image_01L_1stHO", "Image_01L_2ndHO"]
