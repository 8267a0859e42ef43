"""Issue 29: hostile names (mathtext `$...$`, undecodable Latin-1 bytes) in figures, and a figure that cannot be
drawn never failing a finished run.

Oracles: the PNG files read back with Pillow (drawn, non-empty), the run's exit code, summary.json and report."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from cnnlab.cli import main
from cnnlab.data.types import SegData
from cnnlab.figures.classification import plot_confusion_matrix, plot_misclassified
from cnnlab.figures.run import seg_overlays
from cnnlab.figures.text import literal

HOSTILE = ["$\\write18$", os.fsdecode(b"caf\xe9"), "$\\input{x}$ 1", "a$b", "Δέλτα"]


def test_literal_escapes_dollars_and_replaces_undecodable_bytes():
    assert literal("$\\write18$") == "\\$\\write18\\$"
    assert literal(os.fsdecode(b"caf\xe9")) == "caf\ufffd"
    assert literal(b"caf\xe9") == "caf\ufffd"
    assert literal("Δέλτα") == "Δέλτα"


def _drawn(path: Path) -> None:
    with Image.open(path) as im:
        assert im.size[0] > 50 and np.asarray(im.convert("L")).std() > 0


def test_confusion_matrix_and_gallery_draw_hostile_class_names(tmp_path):
    """Before: ValueError from mathtext for `$\\write18$`, TypeError from FT2Font for 'caf\\udce9'."""
    k = len(HOSTILE)
    _drawn(plot_confusion_matrix(np.eye(k, dtype=int) * 3, HOSTILE, tmp_path / "cm.png"))
    images = torch.zeros(k, 1, 8, 8, dtype=torch.uint8)
    labels = torch.arange(k)
    _drawn(plot_misclassified(images, labels, (labels + 1) % k, HOSTILE, tmp_path / "mis.png"))


def test_overlays_draw_hostile_image_and_class_names(tmp_path):
    n = 4
    masks = torch.randint(0, 3, (n, 8, 8), dtype=torch.uint8)
    split = SegData(images=torch.randint(0, 255, (n, 3, 8, 8), dtype=torch.uint8), masks=masks,
                    names=HOSTILE[:n], class_names=["background", "$\\write18$", os.fsdecode(b"caf\xe9")])
    _drawn(seg_overlays(split, masks, torch.rand(n), tmp_path / "ov.png", k=2))


def _class_run(tmp_path: Path, names: list[bytes]) -> Path:
    root = tmp_path / "mine"
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        folder = os.path.join(os.fsencode(root), name)
        os.makedirs(folder)
        for i in range(10):
            arr = (rng.integers(0, 50, (8, 8)) + 100 * k).astype(np.uint8)
            Image.fromarray(arr).save(os.fsdecode(os.path.join(folder, f"{i}.png".encode())))
    raw = {"name": "cls", "task": "classification", "out": str(tmp_path / "runs"),
           "data": {"format": "imagefolder", "root": str(root), "train": "train", "val": "val", "test": "test",
                    "cache": False, "options": {"resplit": {"from": ".", "seed": 0, "train": 14, "val": 3,
                                                            "test": 3}}},
           "model": {"name": "mlp", "params": {"hidden": [8]}}, "loss": {"name": "cross_entropy"},
           "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 1, "batch_size": 4, "progress": False}}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    return recipe


def test_a_run_on_hostile_class_folders_finishes_with_its_figures_and_report(tmp_path):
    """Class folders `$\\write18$` and Latin-1 `caf\\xe9`: the run ended `failed` after its test phase, no report."""
    recipe = _class_run(tmp_path, [b"$\\write18$", b"caf\xe9"])
    assert main(["train", str(recipe)]) in (0, None)
    (run_dir,) = (tmp_path / "runs").iterdir()
    _drawn(run_dir / "figures" / "confusion_matrix.png")
    assert (run_dir / "report.html").is_file() and (run_dir / "report.md").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["epochs_run"] == 1
    image = os.fsdecode(os.path.join(os.fsencode(tmp_path / "mine"), b"caf\xe9", b"0.png"))
    assert main(["predict", str(run_dir), image, "--out", str(tmp_path / "p")]) == 0  # UnicodeEncodeError before
    assert "caf\\udce9" in (tmp_path / "p" / "probabilities.csv").read_text().splitlines()[0]


def test_a_figure_that_cannot_be_drawn_is_one_warning_and_the_run_finishes(tmp_path, monkeypatch, capsys):
    import cnnlab.figures.classification as figs

    def broken(*a, **kw):
        raise RuntimeError("no font\nfor this")

    monkeypatch.setattr(figs, "plot_confusion_matrix", broken)
    monkeypatch.setattr("cnnlab.tasks.classification.plot_confusion_matrix", broken)
    recipe = _class_run(tmp_path, [b"a", b"b"])
    assert main(["train", str(recipe)]) in (0, None)
    (run_dir,) = (tmp_path / "runs").iterdir()
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "were not drawn" in x]
    assert "RuntimeError: no font for this" in line
    assert (run_dir / "report.html").is_file() and (run_dir / "figures" / "loss_curves.png").is_file()
    assert "were not drawn" in (run_dir / "train.log").read_text()
