"""Issue 18, own-data path: recipes from `cnnlab new` work from any directory (13), a corrupt JPEG fails the check
and `new` (15), the time estimate is measured and adds up (16), and image sizes are summarised, not listed (17)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab.new.budget as nb
import cnnlab.new.estimate as ne
import cnnlab.new.recipe as nr
from cnnlab.cli import main
from cnnlab.cli.data import folders_report
from cnnlab.config import load_recipe, recipe_from_dict
from cnnlab.data.formats import folders
from cnnlab.errors import DataError


def _pairs(base: Path, sizes: list[tuple[int, int]], colour: bool = False, ext: str = "png") -> None:
    """One image per (H, W) with a binary mask whose top third is foreground."""
    rng = np.random.default_rng(0)
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "masks").mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w, 3) if colour else (h, w), dtype=np.uint8)
        Image.fromarray(img).save(base / "images" / f"s{i}.{ext}")
        mask = np.zeros((h, w), np.uint8)
        mask[: h // 3] = 255
        Image.fromarray(mask).save(base / "masks" / f"s{i}_mask.png")


def _truncate(path: Path) -> None:
    """Keep the first half of the file: the header still reads, the pixels do not decode."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _fake_times(monkeypatch, train_step_s: float, eval_image_s: float, raising: bool = True) -> None:
    """A fixed measurement in place of timing real steps (raising=False: also where `new` timed nothing)."""
    monkeypatch.setattr(nr, "measure_steps", lambda r, c, k, batch: ne.StepTimes(train_step_s, eval_image_s, batch,
                                                                                   1, "cpu, fp32"), raising=raising)


# ---------------------------------------------------------------- 13: paths work from any directory
@pytest.mark.parametrize("layout", ["random", "split folders"])
def test_new_recipe_reads_its_data_from_another_directory(tmp_path, monkeypatch, layout):
    _fake_times(monkeypatch, 0.5, 0.05, raising=False)
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    elsewhere.mkdir()
    if layout == "random":
        _pairs(here / "small", [(32, 32)] * 8)
        images, masks, split, n = "small/images", "small/masks", "train", 6  # 8 - round(.15*8) - round(.15*8)
    else:
        _pairs(here / "ds" / "train", [(32, 32)] * 5)
        _pairs(here / "ds" / "test", [(32, 32)] * 3)
        images, masks, split, n = "ds/train/images", "ds/train/masks", "test", 3
    monkeypatch.chdir(here)
    out = nr.write_recipe("segmentation", images, masks, "r.yaml").resolve()
    monkeypatch.chdir(elsewhere)  # the user trains from another folder
    r = load_recipe(out)
    assert len(folders.load(Path(r.data.root), split, r.data.size, **r.data.options)) == n
    assert Path(r.data.root).is_absolute()
    assert "relative paths in a recipe resolve against the directory you run cnnlab from" in out.read_text()


# ---------------------------------------------------------------- 15: a corrupt JPEG is a failed check
def test_check_folders_fails_and_names_a_truncated_jpeg(tmp_path, capsys):
    _pairs(tmp_path, [(48, 48)] * 5, colour=True, ext="jpg")
    _truncate(tmp_path / "images" / "s2.jpg")
    args = ["data", "check", "folders", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks")]
    assert main(args) == 2
    cap = capsys.readouterr()
    assert "colour (3 channels)" in cap.out and "grey" not in cap.out  # the other four are colour photographs
    assert re.search(r"problems \(1\):\n\s+- \S*s2\.jpg: not a readable image", cap.out)
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnlab: error: 1 problem(s)")
    assert "cnnlab data check folders --images" in err[0]  # the hint is the command to run again


def test_check_folders_without_problems_exits_0(tmp_path, capsys):
    _pairs(tmp_path, [(48, 48)] * 5, colour=True, ext="jpg")
    assert main(["data", "check", "folders", "--images", str(tmp_path / "images"), "--masks",
                 str(tmp_path / "masks")]) == 0
    out = capsys.readouterr()
    assert "problems: none" in out.out and out.err == ""


def test_new_refuses_a_truncated_jpeg_naming_it(tmp_path, capsys):
    _pairs(tmp_path, [(48, 48)] * 5, colour=True, ext="jpg")
    _truncate(tmp_path / "images" / "s2.jpg")
    with pytest.raises(DataError, match=r"s2\.jpg: not a readable image.*no recipe written"):
        nr.write_recipe("segmentation", tmp_path / "images", tmp_path / "masks", tmp_path / "r.yaml")
    assert main(["new", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--out",
                 str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "s2.jpg" in err[0]
    assert not (tmp_path / "r.yaml").exists()


# ---------------------------------------------------------------- 16: the time estimate is measured and adds up
def _stated(text: str) -> tuple[int, float, float]:
    """(epochs, seconds per epoch, total seconds) as the train.epochs comment states them."""
    m = re.search(r"^  epochs: (\d+) +# (\d+) epochs x ([\d.]+) s = ([\d.]+) s", text, re.MULTILINE)
    assert m and m.group(1) == m.group(2), text
    return int(m.group(1)), float(m.group(3)), float(m.group(4))


@pytest.mark.parametrize("step_s, epochs, per_epoch, human", [
    # 14 train pairs / batch 4 = 3 steps x 10 s + 3 val images x 0.25 s = 30.75, shown as 30.8; the default
    # budget is 15 minutes (issue 23; 10 before): 900 // 30.8 = 29
    (10.0, 29, 30.8, "893.2 s (about 15 minutes)"),
    # 300.75 s shown as 301 s: too slow for 15 minutes, so the 12-epoch floor (issue 23; 15 before), and the total
    # says what that costs
    (100.0, 12, 301.0, "3612 s (about 60 minutes)"),
])
def test_time_estimate_is_steps_times_the_measured_step(tmp_path, monkeypatch, capsys, step_s, epochs, per_epoch,
                                                        human):
    _fake_times(monkeypatch, step_s, 0.25)
    monkeypatch.setattr(nb, "MIN_STEPS", 0)  # batch 4 kept: the minimum-steps rule is tested in test_new_min_steps
    _pairs(tmp_path, [(32, 32)] * 20)  # random split of 20: train 14, val 3, test 3
    out = tmp_path / "r.yaml"
    assert main(["new", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--out",
                 str(out)]) == 0
    text = out.read_text()
    r = load_recipe(out)
    assert r.train.batch_size == 4 and r.train.epochs == epochs
    n, e, total = _stated(text)
    assert (n, e) == (epochs, per_epoch) and total == pytest.approx(n * e, abs=0.01)
    assert f"~{per_epoch:g} s per epoch = 3 step(s) x {step_s:g} s" in text and "3 image(s) x 0.25 s" in text
    assert f"{n} epochs x {e:g} s = {total:g} s" in capsys.readouterr().out  # printed as written
    assert f"{n} epochs x {e:g} s = {human}" in text


def _tiny_recipe() -> object:
    return recipe_from_dict({"name": "t", "task": "segmentation", "data": {"format": "folders", "root": "x",
                             "size": [16, 16]}, "model": {"name": "unet", "params": {"width": 4, "depth": 2}},
                             "loss": {"name": "dice"}, "train": {"batch_size": 2, "precision": "fp32"}})


@pytest.mark.parametrize("scripted, step_s, calls", [
    ([5.0, 0.3, 0.5, 0.4, 0.2], 0.4, 5),  # warm-up dropped; 3 timed steps (under 1 s so far), median 0.4
    ([5.0, 2.0, 0.2], 2.0, 3),            # a slow step is timed once
])
def test_measure_steps_runs_real_steps_and_restores_the_process(monkeypatch, scripted, step_s, calls):
    seen: list[str] = []
    script = iter(scripted)

    def fake_timed(fn, device):
        fn()  # the real forward (+ backward + optimizer step) runs; only the clock is scripted
        seen.append(fn.__name__)
        return next(script)

    monkeypatch.setattr(ne, "_timed", fake_timed)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    t = ne.measure_steps(_tiny_recipe(), 1, 2, batch=2)
    assert t.train_step_s == step_s and t.eval_image_s == pytest.approx(0.2 / 2) and t.batch == 2
    assert seen == ["train_step"] * (calls - 1) + ["<lambda>"]
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)


def test_steps_per_epoch_drops_the_last_partial_batch_like_training():
    assert [ne.steps_per_epoch(n, 4) for n in (14, 16, 3, 1)] == [3, 4, 1, 1]


# ---------------------------------------------------------------- 17: sizes summarised in a short note
def test_three_hundred_distinct_sizes_make_a_short_note(tmp_path):
    sizes = [(8 + i % 20, 8 + i // 20) for i in range(300)]  # H 8..27 (15 each), W 8..22 (20 each)
    _pairs(tmp_path, sizes)
    d = folders.load(tmp_path, "train", size=[16, 16], split="random", fractions={"train": 1.0})
    note = next(n for n in d.notes if "native sizes" in n)
    assert len(note) < 200, note
    assert "300 distinct over 300 images" in note
    assert "min 8x8, median 17.5x15, max 27x22" in note  # per side: median H (17+18)/2, median W 15
    report, problems = folders_report(tmp_path / "images", tmp_path / "masks")
    assert problems == []
    assert "sizes (HxW): 300 distinct over 300 images; min 8x8" in report


def test_size_summary_names_the_most_common_sizes():
    sizes = [(100, 100)] * 10 + [(50, 60)] * 5 + [(70, 80)] * 2 + [(10 + i, 10) for i in range(6)]
    s = folders.summarize_sizes(sizes)
    assert s.endswith("; most common 100x100 (10), 50x60 (5), 70x80 (2)")
    assert s.startswith("9 distinct over 23 images; min 10x10, median 70x80, max 100x100")  # 12th of 23 per side
    assert folders.summarize_sizes([(32, 32)] * 4 + [(16, 8)]) == "32x32 (4), 16x8 (1)"  # few: all listed
