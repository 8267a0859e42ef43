"""GlaS reader (instance -> binary masks, split logic, errors), stain unmixing and the synthetic GlaS writer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import hed2rgb, rgb2hed

from cnnlab.data.formats import glas
from cnnlab.data.stain import E_MAX, H_MAX, he_to_rgb, hed_concentrations, unmix_he, unmix_he_batch
from cnnlab.data.synthetic.glas import write
from cnnlab.errors import ConfigError, DataError


def put(root: Path, name: str, image: np.ndarray, anno: np.ndarray) -> None:
    """Write one GlaS sample (image RGB BMP + annotation BMP)."""
    Image.fromarray(image).save(root / f"{name}.bmp")
    Image.fromarray(anno).save(root / f"{name}_anno.bmp")


@pytest.fixture
def hand_root(tmp_path: Path) -> Path:
    """Three hand-made samples; train_1 has instances 1, 2 and 7 (one gland label skipped, as editors leave)."""
    rng = np.random.default_rng(0)
    anno = np.zeros((6, 8), np.uint8)
    anno[0:2, 0:3] = 1
    anno[4:6, 5:8] = 2
    anno[3, 1] = 7
    put(tmp_path, "train_1", rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), anno)
    put(tmp_path, "train_2", rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), np.zeros((6, 8), np.uint8))
    put(tmp_path, "testA_1", rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), anno[::-1].copy())
    put(tmp_path, "testB_3", rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), anno[:, ::-1].copy())
    (tmp_path / "Grade.csv").write_text("name,Patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)\n"
                                        "train_1,1, malignant, adenomatous\ntrain_2,1, benign, healthy\n")
    (tmp_path / ".DS_Store").write_bytes(b"\0junk")
    (tmp_path / "._train_1.bmp").write_bytes(b"\0junk")
    return tmp_path


def test_instances_become_binary_masks(hand_root: Path):
    d = glas.load(hand_root, "train", size=[6, 8])
    anno = np.asarray(Image.open(hand_root / "train_1_anno.bmp"))
    assert sorted(np.unique(anno).tolist()) == [0, 1, 2, 7]
    assert d.masks.dtype == torch.uint8 and d.masks[0].tolist() == (anno != 0).astype(np.uint8).tolist()
    assert d.masks[1].sum().item() == 0
    assert d.names == ["train_1", "train_2"] and d.class_names == ["background", "gland"]
    expected = np.asarray(Image.open(hand_root / "train_1.bmp").convert("RGB"))
    assert d.images[0].permute(1, 2, 0).numpy().tolist() == expected.tolist()
    assert any("3 gland instances" in n for n in d.notes)
    assert any("malignant 1" in n and "benign 1" in n for n in d.notes)
    assert any("skipped 2 system file" in n for n in d.notes)


def test_rgb_annotation_and_default_size(hand_root: Path):
    anno = np.zeros((6, 8, 3), np.uint8)
    anno[2:4, 2:6, 1] = 5
    put(hand_root, "train_2", np.full((6, 8, 3), 200, np.uint8), anno)
    d = glas.load(hand_root, "train")
    assert tuple(d.images.shape) == (2, 3, 128, 128) and tuple(d.masks.shape) == (2, 128, 128)
    native = glas.load(hand_root, "train", size=[6, 8])
    assert native.masks[1].tolist() == (anno[..., 1] != 0).astype(np.uint8).tolist()
    assert set(d.masks.unique().tolist()) == {0, 1}


def test_splits_and_test_is_a_plus_b(hand_root: Path):
    assert glas.list_splits(hand_root) == ["train", "testA", "testB", "test"]
    d = glas.load(hand_root, "test", size=[6, 8])
    assert d.names == ["testA_1", "testB_3"]
    with pytest.raises(DataError, match="no split 'validation'"):
        glas.load(hand_root, "validation")


def test_missing_annotation_names_the_image(hand_root: Path):
    (hand_root / "train_2_anno.bmp").unlink()
    with pytest.raises(DataError, match=r"train_2\.bmp: image has no annotation"):
        glas.load(hand_root, "train")
    glas.load(hand_root, "testA")  # other splits still load


def test_orphan_annotation_and_size_mismatch(hand_root: Path):
    (hand_root / "testA_1.bmp").unlink()
    with pytest.raises(DataError, match=r"testA_1_anno\.bmp: annotation has no image"):
        glas.load(hand_root, "testA")
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(hand_root / "train_2_anno.bmp")
    with pytest.raises(DataError, match=r"train_2_anno\.bmp: annotation is 8x5 but its image is 8x6"):
        glas.load(hand_root, "train")


def test_corrupt_bmp_is_a_data_error(hand_root: Path):
    (hand_root / "train_2.bmp").write_bytes(b"BM" + b"\x00" * 40)
    with pytest.raises(DataError, match=r"train_2\.bmp: not a readable image"):
        glas.load(hand_root, "train")


def test_options_are_checked(hand_root: Path):
    with pytest.raises(ConfigError, match="data.options.stian"):
        glas.load(hand_root, "train", stian="hed")
    with pytest.raises(ConfigError, match="data.options.stain"):
        glas.load(hand_root, "train", stain="rgb2hed")
    d = glas.load(hand_root, "train", size=[6, 8], stain="hed")
    raw = np.asarray(Image.open(hand_root / "train_1.bmp").convert("RGB"))
    assert d.images.shape[1] == 2 and d.images[0].permute(1, 2, 0).numpy().tolist() == unmix_he(raw).tolist()


def test_missing_grade_file_is_a_note(hand_root: Path):
    (hand_root / "Grade.csv").unlink()
    assert "no Grade.csv (grades unknown)" in glas.load(hand_root, "train").notes


def test_stain_unmixing_equals_skimage_rgb2hed():
    rgb = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    rgb[0, 0] = 0  # the floored-log corner case
    assert np.allclose(hed_concentrations(rgb), rgb2hed(rgb), atol=1e-12)


def test_stain_unmixing_recovers_a_hand_made_stained_patch():
    # four 4x4 tiles of known (H, E) concentrations, coloured by the Beer-Lambert law (skimage's hed2rgb)
    conc = [(0.05, 0.0), (0.10, 0.0), (0.0, 0.03), (0.0, 0.06), (0.08, 0.04)]
    hed = np.zeros((4, 4 * len(conc), 3))
    for i, (h, e) in enumerate(conc):
        hed[:, 4 * i:4 * i + 4, 0], hed[:, 4 * i:4 * i + 4, 1] = h, e
    rgb = np.rint(hed2rgb(hed) * 255).astype(np.uint8)
    he = unmix_he(rgb).astype(float)
    got = [he[:, 4 * i:4 * i + 4].mean(axis=(0, 1)) for i in range(len(conc))]
    for (h, e), (gh, ge) in zip(conc, got):
        assert gh == pytest.approx(h / H_MAX * 255, abs=2) and ge == pytest.approx(e / E_MAX * 255, abs=2)
    assert got[1][0] > got[0][0] > got[2][0] and got[3][1] > got[2][1] > got[0][1]   # channel order
    assert got[1][0] / got[0][0] == pytest.approx(2, rel=0.05)                       # proportional to H
    assert got[3][1] / got[2][1] == pytest.approx(2, rel=0.05)                       # proportional to E


def test_stain_scaling_saturates_and_batch_matches():
    dark = np.full((2, 2, 3), 1, np.uint8)       # far beyond H_MAX: saturates instead of wrapping
    assert unmix_he(dark)[..., 0].tolist() == [[255, 255], [255, 255]]
    rgb = np.random.default_rng(2).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    batch = unmix_he_batch(torch.from_numpy(rgb).permute(0, 3, 1, 2))
    assert batch.shape == (2, 2, 5, 6) and batch[1].permute(1, 2, 0).numpy().tolist() == unmix_he(rgb[1]).tolist()
    he = np.array([[[40, 0], [0, 60]]], np.uint8)
    assert np.abs(unmix_he(he_to_rgb(he)).astype(int) - he).max() <= 2   # display colours unmix back
    with pytest.raises(ValueError, match="uint8"):
        unmix_he(rgb[0].astype(np.float32))


def test_synthetic_writer_layout_and_determinism(tmp_path: Path):
    a = write(tmp_path / "a", seed=3, n_train=4, n_test_a=1, n_test_b=1, width=48, height=40)
    b = write(tmp_path / "b", seed=3, n_train=4, n_test_a=1, n_test_b=1, width=48, height=40)
    c = write(tmp_path / "c", seed=4, n_train=4, n_test_a=1, n_test_b=1, width=48, height=40)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(["Grade.csv"] + [f"{s}{x}.bmp" for s in ("train_1", "train_2", "train_3", "train_4",
                                                                      "testA_1", "testB_1") for x in ("", "_anno")])
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "train_1.bmp").read_bytes() != (c / "train_1.bmp").read_bytes()
    assert Image.open(a / "train_4.bmp").size == (36, 34)   # every fourth slide is smaller, as in GlaS
    anno = np.asarray(Image.open(a / "train_1_anno.bmp"))
    assert anno.max() >= 1                                  # instance labels, not already binary
    d = glas.load(a, "train", size=[32, 32], stain="hed")
    assert tuple(d.images.shape) == (4, 2, 32, 32) and 0.03 < d.masks.float().mean() < 0.6
    report = glas.check(a)
    assert "train: 4 images" in report and "testB: 1 images" in report and "grades:" in report
