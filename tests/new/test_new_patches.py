"""Issue 31: `cnnlab new` trains on patches at the images' own size where the thinnest class would shrink under a
few pixels at the whole-image size the budget allows, and on whole images otherwise (new/patching.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

import cnnlab.new.budget as nb
from cnnlab.config import load_recipe
from cnnlab.engine.windows import window_starts
from cnnlab.new.estimate import Estimate, StepTimes
from cnnlab.new.patching import MIN_HALF_WIDTH, PatchChoice, choose_patch, windows_per_image
from cnnlab.new.structure import Thinnest
from test_new_decoder import _vessel_pairs
from test_new_defaults import _new, timed  # noqa: F401  (the fixture: step times stood in by pixel count)


@pytest.mark.skipif(not nb.weights_installed(), reason="the ImageNet weights package is not installed")
@pytest.mark.slow
@pytest.mark.parametrize("thin", [True, False])
def test_new_picks_patches_for_thin_structures_and_whole_images_for_objects(tmp_path: Path, timed,  # noqa: F811
                                                                            thin: bool):
    images, masks = _vessel_pairs(tmp_path / "d", 12, 192, 256, thin)  # 2-pixel lines, or one large block
    code, out = _new(tmp_path, images, masks)
    assert code == 0
    r, text = load_recipe(out), out.read_text()
    assert max(timed[-1]) < 256   # the stand-in step times make the budget shrink the images
    if thin:   # half-width 1 px at 192x256, under MIN_HALF_WIDTH at any smaller size
        assert r.data.size is None and r.data.patch is not None and r.data.patch[0] == r.data.patch[1]
        assert r.data.patch[0] % 32 == 0 and r.data.patch[0] <= 192
        assert "foreground_oversample: 0.0" in text and r.train.foreground_oversample == 0
        assert "# Resolution: patches of" in text and "sliding windows" in text
        side = r.data.patch[0]  # validation scores whole 192x256 images tile by tile: the Time line counts them
        tiles = len(window_starts(192, side, 0.5)) * len(window_starts(256, side, 0.5))
        assert tiles > 1 and f"image(s) x {tiles} sliding windows x" in text
    else:
        assert r.data.patch is None and r.data.size is not None and r.train.foreground_oversample == 0
        assert "# Resolution: whole images at" in text


def test_the_patch_rule_by_hand():
    vessel = Thinnest("vessel", 0.0034, 2.0)   # DRIVE: half-width 2.0 px at 584x565
    at_512 = choose_patch(vessel, [512, 480], (584, 565))   # 1.75 px at 512x480: measured a tie, whole images
    assert at_512.patch is None and "1.8 px at 512x480 (not under 1.5 px)" in at_512.why
    at_256 = choose_patch(vessel, [256, 240], (584, 565))   # 0.88 px
    assert at_256.patch == [224, 224] and "0.9 px at 256x240" in at_256.why  # sqrt(256 * 240) = 247.9 -> 224
    native = choose_patch(vessel, [584, 565], (584, 565))  # not shrunk: whole images, and the line says why
    assert native.patch is None and "their own size (nothing is shrunk" in native.why
    assert "not under" not in native.why  # 2.0 px here; a thinner class at its own size is not 'not under' 1.5
    tiny = choose_patch(vessel, [32, 32], (48, 584))  # 0.1 px, but a 48-px short side holds no 64-px patch
    assert tiny.patch is None and "short side (48 px) is under the smallest patch (64 px)" in tiny.why
    wide = Thinnest("instrument", 0.029, 9.3)  # the course's thinnest instrument class at 320x256
    assert choose_patch(wide, [160, 128], (256, 320)).patch is None         # 4.6 px >= MIN_HALF_WIDTH
    assert choose_patch(wide, [32, 32], (256, 320)).patch == [64, 64]        # 0.9 px: patches of at least 64
    assert MIN_HALF_WIDTH == 1.5


def test_validation_of_a_patch_run_counts_its_sliding_windows():
    """DRIVE's 584x565 images by 384x384 windows at overlap 0.5: rows at 0, 192, 200 and columns at 0, 181 (the
    last flush with the edge), 6 windows; whole images are one forward pass each."""
    assert windows_per_image(PatchChoice([384, 384], ""), (584, 565), 0.5) == 6
    assert windows_per_image(PatchChoice(None, ""), (584, 565), 0.5) == 1
    est = Estimate(StepTimes(1.0, 0.5, 2, 2, "cpu"), steps=2, n_val=3, epochs=4, windows=6)
    assert (est.train_s, est.val_s, est.epoch_s, est.total_s) == (2.0, 9.0, 11.0, 44.0)  # 3 images x 6 x 0.5 s
    assert est.epoch_line().endswith("validation 3 image(s) x 6 sliding windows x 0.5 s")
