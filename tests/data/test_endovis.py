"""The EndoVis course reader on synthetic files: recoveries, refusals and notes, each naming the file."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.config import DataConfig
from cnnlab.data.formats import endovis
from cnnlab.data.loading import load_run_data
from cnnlab.errors import DataError
from conftest import SHARED


@pytest.fixture()
def root(endovis_root: Path, tmp_path: Path) -> Path:
    """A private copy to damage."""
    return Path(shutil.copytree(endovis_root, tmp_path / "ev"))


def test_reads_split_as_uint8_with_classes(root: Path):
    d = endovis.load(root, "train")
    assert d.images.dtype.is_floating_point is False and d.images.shape == (8, 3, 48, 64)
    assert d.masks.shape == (8, 48, 64) and int(d.masks.max()) <= 7
    assert d.class_names[0] == "Background_Tissue" and len(d.class_names) == 8
    # mask values are grey levels / 32 on disk
    raw = np.asarray(Image.open(root / "segmentation/train/0/0_mask.png"))
    assert (d.masks[0].numpy() * 32 == raw).all()
    assert d.names[:3] == ["0", "1", "2"]


def test_hand_edited_mapping_without_commas_is_recovered_with_a_note(root: Path):
    (root / "mapping.json").write_text('{\n"Background_Tissue": 0\n"Bipolar_Forceps": 32\n"Prograsp_Forceps": 64\n'
                                       '"Large_Needle_Driver": 96\n"Vessel_Sealer": 128\n"Grasping_Retractor": 160\n'
                                       '"Monopolar_Curved_Scissors": 192\n"Other": 224\n}')
    d = endovis.load(root, "train")
    assert len(d.class_names) == 8 and any("not valid JSON" in n for n in d.notes)


def test_ambiguous_mapping_is_refused(root: Path):
    (root / "mapping.json").write_text('{"Background_Tissue": 0 "Bipolar": thirty-two}')
    with pytest.raises(DataError, match="mapping.json.*not valid JSON"):
        endovis.load(root, "train")


def test_duplicate_grey_level_is_refused(root: Path):
    (root / "mapping.json").write_text('{"a": 0, "b": 0}')
    with pytest.raises(DataError, match="share one grey level"):
        endovis.load(root, "train")


def test_unknown_grey_value_names_file_and_value(root: Path):
    p = root / "segmentation/train/3/3_mask.png"
    m = np.asarray(Image.open(p)).copy()
    m[0, 0] = 77
    Image.fromarray(m).save(p)
    with pytest.raises(DataError, match=r"3_mask.png: grey value\(s\) \[77\] not in mapping.json"):
        endovis.load(root, "train")


def test_mask_size_mismatch_names_file(root: Path):
    p = root / "segmentation/train/2/2_mask.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(p)
    with pytest.raises(DataError, match="2_mask.png: mask is 10x10 but its image is 64x48"):
        endovis.load(root, "train")


def test_missing_mask_and_corrupt_image_name_the_file(root: Path):
    (root / "segmentation/train/1/1_mask.png").unlink()
    with pytest.raises(DataError, match="1_mask.png: missing"):
        endovis.load(root, "train")
    (root / "segmentation/validation/0/0_input.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(DataError, match="0_input.jpg: not a readable image"):
        endovis.load(root, "validation")


def test_junk_files_are_skipped_and_counted(root: Path):
    (root / "segmentation/train/.DS_Store").write_bytes(b"\0\0")
    (root / "segmentation/train/._0").write_bytes(b"\0")
    d = endovis.load(root, "train")
    assert len(d) == 8 and any("skipped 2" in n for n in d.notes)


def test_missing_test_split_is_a_note(root: Path):
    shutil.rmtree(root / "segmentation/test")
    run = load_run_data(DataConfig(root=str(root)), seed=0)
    assert run.test is None and any("no 'test' split" in n for n in run.notes)
    assert "no test split" in endovis.check(root)


def test_wrong_root_says_what_was_expected(tmp_path: Path):
    with pytest.raises(DataError, match="no 'segmentation' folder.*mapping.json"):
        endovis.load(tmp_path, "train")


def test_resize_on_load_uses_nearest_for_masks(root: Path):
    d = endovis.load(root, "train", size=[24, 32])
    assert d.images.shape[-2:] == (24, 32)
    assert set(d.masks.unique().tolist()) <= set(range(8))


def test_label_fraction_is_seeded(root: Path):
    a = load_run_data(DataConfig(root=str(root), label_fraction=0.5), seed=1)
    b = load_run_data(DataConfig(root=str(root), label_fraction=0.5), seed=1)
    c = load_run_data(DataConfig(root=str(root), label_fraction=0.5), seed=2)
    assert len(a.train) == 4 and a.train.names == b.train.names
    assert a.train.names != c.train.names or len(a.train) == 8


@pytest.mark.skipif(not (SHARED / "endovis2017_hw").is_dir(), reason="real course data not present")
def test_real_course_data_mapping_is_recovered():
    mapping, notes = endovis.read_mapping(SHARED / "endovis2017_hw")
    assert list(mapping.values()) == [0, 32, 64, 96, 128, 160, 192, 224] and notes
