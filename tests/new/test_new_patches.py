"""Issue 31: `cnnlab new` trains on patches at the images' own size for thin structures, and where the thinnest class
would shrink under a few pixels at the whole-image size the budget allows; on whole images otherwise
(new/patching.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import cnnlab.new.budget as nb
from cnnlab.config import load_recipe
from cnnlab.engine.windows import window_starts
from cnnlab.new.estimate import Estimate, StepTimes
from cnnlab.new.patching import MIN_HALF_WIDTH, NATIVE_SHARE, PatchChoice, choose_patch, windows_per_image
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


@pytest.mark.skipif(not nb.weights_installed(), reason="the ImageNet weights package is not installed")
def test_thin_structures_at_their_own_size_get_patches_timed_as_patches(tmp_path: Path, timed,  # noqa: F811
                                                                        capsys):
    images, masks = _vessel_pairs(tmp_path / "d", 12, 96, 128, True)  # 2-pixel lines: thin at any size
    code, out = _new(tmp_path, images, masks, "--minutes", "90")
    r, text = load_recipe(out), out.read_text()
    assert code == 0 and r.data.size is None and r.data.patch == [64, 64]  # 2/3 of the 96-px short side
    assert "# Resolution: patches of 64x64 at the images' own size (96x128 median)" in text
    assert "\nresolution: patches of 64x64 at the images' own size" in capsys.readouterr().out  # said, too
    assert "of the long side (under 1.5%), thin structures: on DRIVE" in text
    # the candidate sizes' steps were timed at their patch (the stand-in times count pixels), validation by
    # windows: a 96x128 image is 2 x 3 windows of 64x64 at overlap 0.5
    assert timed == [[64, 64]]  # every candidate size cuts the same patch: timed once, not once per candidate
    assert "image(s) x 6 sliding windows x" in text
    # the stand-in epoch (4 steps of 4.1 s) fits 329 times in 90 minutes: MAX_PATCH_EPOCHS, not 60
    assert r.train.epochs == nb.MAX_PATCH_EPOCHS == 240 and "240 epochs x" in text


def test_the_patch_rule_by_hand():
    vessel = Thinnest("vessel", 0.0034, 2.0)   # DRIVE: half-width 2.0 px at 584x565, thin (under 1.5% of 584)
    native = choose_patch(vessel, [584, 565], (584, 565))   # thin structures: patches even at their own size
    assert native.patch == [384, 384] and native.why.endswith(
        "184 epochs (the whole budget) 0.8246; ISBI's membranes: a tie (0.8095 against 0.8080)")
    assert ("thinnest class 'vessel': half-width 2.0 px = 0.34% of the long side (under 1.5%), thin structures"
            in native.why)
    assert native.patch[0] == round(565 * NATIVE_SHARE / 32) * 32  # 376.7 -> 384: the nearest multiple of 32
    at_512 = choose_patch(vessel, [512, 480], (584, 565))   # sqrt(512 * 480) = 495.7, but at most 2/3 of 565
    assert at_512.patch == [384, 384] and "under 1.5 px" not in at_512.why  # 1.75 px: thin, not shrunk away
    at_256 = choose_patch(vessel, [256, 240], (584, 565))   # 0.88 px: shrunk under MIN_HALF_WIDTH
    assert at_256.patch == [224, 224] and "0.9 px at 256x240, under 1.5 px" in at_256.why  # 247.9 -> 224
    membrane = Thinnest("membrane", 3.7 / 512, 3.7)         # ISBI 2012: 512x512 slices
    assert choose_patch(membrane, [512, 512], (512, 512)).patch == [352, 352]  # 341.3 -> 352
    tiny = choose_patch(vessel, [32, 32], (48, 584))  # 0.1 px, but a 48-px short side holds no 64-px patch
    assert tiny.patch is None and "short side (48 px) is under the smallest patch (64 px)" in tiny.why
    wide = Thinnest("instrument", 0.029, 9.3)  # the course's thinnest instrument class at 320x256: objects
    own = choose_patch(wide, [256, 320], (256, 320))
    assert own.patch is None and own.why.startswith("whole images at 256x320, their own size:")
    shrunk = choose_patch(wide, [160, 128], (256, 320))       # 4.6 px >= MIN_HALF_WIDTH: whole images
    assert shrunk.patch is None and "(not under 1.5 px), and it is no thin structure" in shrunk.why
    assert choose_patch(wide, [32, 32], (256, 320)).patch == [64, 64]        # 0.9 px: patches of at least 64
    assert MIN_HALF_WIDTH == 1.5 and NATIVE_SHARE == 2 / 3


def test_patch_runs_may_train_more_epochs_than_whole_image_runs():
    """An epoch of patches sees part of each image: the budget fills up to MAX_PATCH_EPOCHS, not MAX_EPOCHS."""
    est = Estimate(StepTimes(1.0, 0.0, 2, 1, "cpu"), steps=5, n_val=0, epochs=1)  # 5 s per epoch
    whole = nb.SizeChoice([64, 64], dataclasses.replace(est, epochs=nb.epochs_for(5.0, 900.0)), [], 900.0, True)
    assert whole.estimate.epochs == nb.MAX_EPOCHS == 60  # 180 would fit the 900 s
    assert nb.with_most_epochs(whole, nb.MAX_PATCH_EPOCHS).estimate.epochs == 180  # as many as fit
    assert nb.with_most_epochs(whole, 100).estimate.epochs == 100
    slow = dataclasses.replace(whole, estimate=dataclasses.replace(est, steps=15))  # 15 s: 60 fit
    assert nb.with_most_epochs(slow, 100).estimate.epochs == 60
    floor = dataclasses.replace(slow, budget_s=60.0)  # 4 fit; the floor of 12 stands (over the budget, stated)
    assert nb.with_most_epochs(floor, 100).estimate.epochs == 12


def test_validation_of_a_patch_run_counts_its_sliding_windows():
    """DRIVE's 584x565 images by 384x384 windows at overlap 0.5: rows at 0, 192, 200 and columns at 0, 181 (the
    last flush with the edge), 6 windows; whole images are one forward pass each."""
    assert windows_per_image(PatchChoice([384, 384], ""), (584, 565), 0.5) == 6
    assert windows_per_image(PatchChoice(None, ""), (584, 565), 0.5) == 1
    est = Estimate(StepTimes(1.0, 0.5, 2, 2, "cpu"), steps=2, n_val=3, epochs=4, windows=6)
    assert (est.train_s, est.val_s, est.epoch_s, est.total_s) == (2.0, 9.0, 11.0, 44.0)  # 3 images x 6 x 0.5 s
    assert est.epoch_line().endswith("validation 3 image(s) x 6 sliding windows x 0.5 s")
