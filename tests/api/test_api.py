"""The Python API (issue 33): cnnlab.train writes what `cnnlab train` writes, with the same metrics; Run.predict on
an array gives the mask `cnnlab predict` writes for the same image file; `import cnnlab` does not import torch."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from conftest import tiny_recipe

TIMING = {"seconds", "images_per_s"}  # wall-clock columns: the only ones two identical runs may differ in


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def recipe_file(endovis_root, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("api")
    path = base / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(endovis_root, base / "runs",
                                                   train={"epochs": 1, "max_steps_per_epoch": 1})))
    return path


@pytest.fixture(scope="module")
def api_run(recipe_file) -> cnnlab.Run:
    return cnnlab.train(recipe_file, progress=False)


@pytest.mark.slow  # a second training and report (~4 s on a busy core)
def test_api_train_equals_cli_train(recipe_file, api_run, capsys):
    assert main(["train", str(recipe_file)]) == 0
    cli_dir = Path(capsys.readouterr().out.split("report: ")[-1].strip()).parent
    assert cli_dir != api_run.dir and cli_dir.parent == api_run.dir.parent
    assert cnnlab.load_run(cli_dir).metrics == api_run.metrics  # same recipe, same seed: the same numbers
    assert _rows(cli_dir) == _rows(api_run.dir)
    for name in ("report.html", "report.md", "summary.json", "best.pt", "config.yaml", "train.log"):
        assert (api_run.dir / name).is_file() and (cli_dir / name).is_file(), name
    assert api_run.history[0]["epoch"] == 1.0 and "val_loss" in api_run.history[0]


def test_predict_on_an_array_equals_cnnlab_predict_on_the_file(api_run, tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (40, 72, 3), dtype=np.uint8)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"img{i}.png")
    assert main(["predict", str(api_run.dir), str(tmp_path / "img0.png"), str(tmp_path / "img1.png"),
                 "--out", str(tmp_path / "out")]) == 0
    preds = api_run.predict(arrays)
    for i, p in enumerate(preds):
        written = np.asarray(Image.open(tmp_path / "out" / f"img{i}_mask.png"))
        assert p.mask.shape == arrays[i].shape[:2] == written.shape  # at the image's own size
        np.testing.assert_array_equal(p.mask, written)
        assert p.probabilities.shape == (len(p.class_names), *arrays[i].shape[:2])
        np.testing.assert_array_equal(p.labels, p.probabilities.argmax(0))
        np.testing.assert_allclose(p.probabilities.sum(0), 1.0, atol=1e-5)
    # a PIL image and a path give the same prediction as the array; one image in, one Prediction out
    one = api_run.predict(Image.open(tmp_path / "img1.png"))
    np.testing.assert_array_equal(one.probabilities, preds[1].probabilities)
    np.testing.assert_array_equal(api_run.predict(tmp_path / "img1.png").mask, preds[1].mask)


def test_predict_refuses_what_is_not_an_8_bit_image(api_run):
    with pytest.raises(CnnlabError, match="dtype float64"):
        api_run.predict(np.zeros((8, 8, 3)))
    with pytest.raises(CnnlabError, match="shape"):
        api_run.predict(np.zeros((8, 8, 5), np.uint8))


def test_evaluate_and_report(api_run):
    result = api_run.evaluate()
    assert result["split"] == "test" and result["metrics"] == pytest.approx(api_run.metrics, abs=1e-6)
    assert api_run.report().name == "report.html"


def test_keyword_overrides_take_dots_or_double_underscores(recipe_file):
    from cnnlab.api.calls import resolve_recipe

    r = resolve_recipe(recipe_file, ["optim.lr=0.5"], train__epochs=3, **{"data.size": [32, 32]})
    assert (r.train.epochs, r.optim.lr, r.data.size) == (3, 0.5, [32, 32])
    raw = yaml.safe_load(recipe_file.read_text())
    resolve_recipe(raw, train__epochs=5)
    assert raw["train"]["epochs"] == 1  # the caller's mapping is not changed


def test_import_cnnlab_does_not_import_torch():
    code = "import sys, cnnlab; assert 'torch' not in sys.modules; print(cnnlab.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == cnnlab.__version__ != ""


def test_bars_are_live_in_jupyter_where_ipywidgets_is_installed(monkeypatch):
    """rich draws live bars in a notebook through ipywidgets; without it they are plain lines, as in a log file."""
    import importlib.util

    from rich.console import Console

    from cnnlab.engine.progress import Bars

    notebook = Console(force_jupyter=True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "ipywidgets" else real(name))
    assert Bars(notebook, True).terminal is True
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets" else real(name))
    assert Bars(notebook, True).terminal is False
    assert Bars(Console(force_terminal=True), True).terminal is True
    assert Bars(Console(force_terminal=False, force_jupyter=False), True).terminal is False


def test_resume_from_python_trains_on_and_follows_the_runs_own_progress(api_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(api_run.dir, run_dir)
    capsys.readouterr()
    run = cnnlab.resume(run_dir, train__epochs=2)  # the recipe had progress off: no table printed
    assert [row["epoch"] for row in run.history] == [1.0, 2.0]
    out = capsys.readouterr().out  # the run's notes and warnings show; its table and report line do not
    assert "test split (" not in out and "report: " not in out and (run_dir / "report.html").is_file()
    assert "train.epochs=2" in (run_dir / "history.yaml").read_text()
