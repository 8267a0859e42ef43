"""Issue 29: `cnnlab new` with folder names that are not UTF-8, and a failed `new` leaving no file.

Oracles: the written recipe read back by the YAML loader (its paths byte for byte equal to the folders on disk,
os.fsencode), the readers reading every image through it, the folder listing after a failure."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab.new.classify as nc
import cnnlab.new.recipe as nr
from cnnlab.cli import main
from cnnlab.config import load_recipe
from cnnlab.data.formats import folders, imagefolder
from cnnlab.new.estimate import StepTimes
from cnnlab.new.files import create_text


@pytest.fixture(autouse=True)
def _no_step_timing(monkeypatch):
    fake = lambda r, c, k, batch: StepTimes(0.01, 0.001, batch, 1, "cpu, fp32")  # noqa: E731
    monkeypatch.setattr(nc, "measure_steps", fake)
    monkeypatch.setattr(nr, "measure_steps", fake)


def _png(path: bytes, arr: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(os.fsdecode(path))


def _class_folders(base: Path) -> bytes:
    root = os.path.join(os.fsencode(base), b"im\xe9ges")  # Latin-1 bytes: not UTF-8
    rng = np.random.default_rng(0)
    for k, name in enumerate([b"caf\xe9", b"th\xe9"]):
        for i in range(12):
            _png(os.path.join(root, name, b"%d.png" % i), (rng.integers(0, 50, (8, 8)) + 100 * k).astype(np.uint8))
    return root


def test_new_on_class_folders_with_latin1_names_writes_a_recipe_that_reads_them(tmp_path):
    """Before: UnicodeEncodeError traceback and a 0-byte recipe, so the retry said the recipe already exists."""
    root = _class_folders(tmp_path)
    out = tmp_path / "r.yaml"
    assert main(["new", "--task", "classification", "--images", os.fsdecode(root), "--out", str(out)]) == 0
    r = load_recipe(out)
    assert os.fsencode(r.data.root) == root
    train = imagefolder.load(Path(r.data.root), r.data.train, r.data.size, **r.data.options)
    assert sorted(os.fsencode(c) for c in train.class_names) == [b"caf\xe9", b"th\xe9"]
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["r.yaml"]  # no temporary file left


def test_new_on_image_and_mask_folders_with_latin1_names(tmp_path):
    base = os.path.join(os.fsencode(tmp_path), b"donn\xe9es")
    rng = np.random.default_rng(0)
    for i in range(10):
        _png(os.path.join(base, b"images", b"\xe9chantillon%d.png" % i), rng.integers(0, 256, (24, 32), np.uint8))
        mask = np.zeros((24, 32), np.uint8)
        mask[:8] = 255
        _png(os.path.join(base, b"masks", b"\xe9chantillon%d.png" % i), mask)
    out = tmp_path / "seg.yaml"
    code = main(["new", "--images", os.fsdecode(os.path.join(base, b"images")), "--masks",
                 os.fsdecode(os.path.join(base, b"masks")), "--out", str(out)])
    assert code == 0
    r = load_recipe(out)
    train = folders.load(Path(r.data.root), r.data.train, r.data.size, **r.data.options)
    assert len(train) > 0 and all(os.fsencode(n).startswith(b"\xe9chantillon") for n in train.names)


def test_a_failed_new_leaves_no_file_and_the_retry_works(tmp_path, monkeypatch):
    root = _class_folders(tmp_path)
    out = tmp_path / "r.yaml"
    real = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        nr.make_recipe("classification", os.fsdecode(root), None, out)
    assert not [p for p in tmp_path.iterdir() if p.is_file()]  # neither the recipe nor a temporary file
    monkeypatch.setattr(os, "fsync", real)
    assert main(["new", "--task", "classification", "--images", os.fsdecode(root), "--out", str(out)]) == 0


def test_create_text_never_overwrites(tmp_path):
    out = tmp_path / "r.yaml"
    out.write_text("theirs")
    with pytest.raises(Exception, match="already exists"):
        create_text(out, "mine")
    assert out.read_text() == "theirs" and len(list(tmp_path.iterdir())) == 1
