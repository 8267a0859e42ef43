"""Issue 23: `cnnlab new` picks the decoder on the pretrained encoder from how thin the thinnest class is: the U-Net
decoder for thin structures (vessels, membranes), the light FCN decoder for objects (new/structure.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab.new.budget as nb
from cnnlab.config import load_recipe
from cnnlab.data.formats.folders import Encoding
from cnnlab.new.structure import THIN_FRACTION, Thinnest, boundary_pixels, thinnest_class
from test_new_defaults import _new, timed  # noqa: F401  (the fixture: step times stood in by pixel count)

BINARY = Encoding("binary", (0, 255), ("background", "vessel"), (0, 0))


def test_boundary_pixels_by_hand():
    region = np.zeros((6, 7), bool)
    region[1:5, 1:6] = True                  # a 4x5 block: 4*5 - 2*3 inner = 14 boundary pixels
    assert boundary_pixels(region) == 14
    line = np.zeros((5, 5), bool)
    line[2] = True                           # a 1-pixel line: every pixel is boundary
    assert boundary_pixels(line) == 5


def _mask_files(folder: Path, masks: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i, m in enumerate(masks):
        p = folder / f"m{i}.png"
        Image.fromarray(m).save(p)
        paths.append(p)
    return paths


def test_thinnest_class_is_the_strip_with_its_half_width(tmp_path: Path):
    m = np.zeros((100, 200), np.uint8)
    m[40:42, :] = 255                        # a 2-pixel strip across: area 400, boundary 400 -> half-width 1
    [path] = _mask_files(tmp_path / "m", [m])
    t = thinnest_class([path], BINARY, ["background", "vessel"])
    assert t.name == "vessel" and t.half_width_px == pytest.approx(1.0)
    assert t.fraction == pytest.approx(1.0 / 200) and t.thin
    blob = np.zeros((100, 200), np.uint8)
    blob[20:80, 50:150] = 255                # a 60x100 block: area 6000, boundary 316 -> 19 px = 9.5% of 200
    [path] = _mask_files(tmp_path / "b", [blob])
    t = thinnest_class([path], BINARY, ["background", "vessel"])
    assert t.name == "vessel" and t.half_width_px == pytest.approx(6000 / 316)
    assert not t.thin and t.fraction > THIN_FRACTION


def _vessel_pairs(base: Path, n: int, h: int, w: int, thin: bool) -> tuple[Path, Path]:
    """RGB noise images with masks of 2-pixel lines (thin) or one big block (an object)."""
    rng = np.random.default_rng(1)
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(base / "images" / f"s{i}.png")
        mask = np.zeros((h, w), np.uint8)
        if thin:
            mask[10::16, :] = 255
            mask[11::16, :] = 255
        else:
            mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
        Image.fromarray(mask).save(base / "masks" / f"s{i}_mask.png")
    return base / "images", base / "masks"


@pytest.mark.skipif(not nb.weights_installed(), reason="the ImageNet weights package is not installed")
@pytest.mark.parametrize("thin, model, key", [(True, "unet_efficientnet_lite0", "decoder_widths"),
                                              (False, "fcn_efficientnet_lite0", "decoder_width")])
def test_new_writes_the_decoder_the_masks_call_for(tmp_path: Path, timed, thin: bool, model: str,  # noqa: F811
                                                   key: str, capsys):
    images, masks = _vessel_pairs(tmp_path / "d", 12, 96, 128, thin)
    code, out = _new(tmp_path, images, masks)
    assert code == 0
    r = load_recipe(out)
    assert r.model.name == model and key in r.model.params and r.model.freeze_encoder_epochs == 2
    if thin:  # 2-pixel stripes: half-width 1 px, under 3 px at their own size, so the fifth (full-resolution) block
        assert r.model.params[key] == [128, 64, 32, 16, 16]
        assert "with a fifth block at full resolution" in out.read_text()
    text = out.read_text()
    assert ("# Decoder: U-Net decoder" in text) == thin and ("# Decoder: light FCN decoder" in text) != thin
    assert "thinnest class 'class_1'" in text
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("decoder: ")]
    assert len(said) == 1 and said[0].startswith("decoder: U-Net decoder" if thin else "decoder: light FCN decoder")


@pytest.mark.parametrize("fraction, half_width, fine", [(0.0034, 2.0, True), (0.0073, 2.99, True),
                                                         (0.0073, 3.0, False), (0.0073, 3.7, False),
                                                         (0.05, 1.0, False)])
def test_the_full_resolution_block_is_for_thin_classes_under_3_px(fraction, half_width, fine):
    """DRIVE's vessels (2.0 px) gained from the stride-1 block, ISBI's membranes (3.7 px) did not; a class that is
    not thin by its share of the long side gets the FCN decoder, so no U-Net block at all."""
    assert Thinnest("c", fraction, half_width).fine == fine
