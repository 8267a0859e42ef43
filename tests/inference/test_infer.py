"""Inference on a trained tiny run: masks in the data set's encoding, sliding window, flip TTA, re-evaluation."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.config import DataConfig, recipe_from_dict
from cnnlab.data.loading import load_split
from cnnlab.engine.run import train
from cnnlab.engine.runtime import resolve_runtime
from cnnlab.engine.steps import Normalizer, predict_logits
from cnnlab.errors import CnnlabError, DataError
from cnnlab.inference.evaluate import evaluate_run
from cnnlab.inference.predict import (
    MaskEncoding,
    TrainedRun,
    list_inputs,
    load_run,
    output_stems,
    predict_paths,
)
from cnnlab.inference.sliding_window import sliding_window, window_starts, window_weights
from conftest import tiny_recipe

FP32 = resolve_runtime("cpu", "fp32", False)


@pytest.fixture(scope="module")
def run_dir(endovis_root, tmp_path_factory) -> Path:
    return train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path_factory.mktemp("runs"))))


@pytest.fixture(scope="module")
def test_split(endovis_root):
    return load_split(DataConfig(format="endovis", root=str(endovis_root)), "test")


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _toy_run(model: nn.Module, task: str, class_names: list[str], encoding: MaskEncoding,
             size: tuple[int, int] = (16, 16)) -> TrainedRun:
    """A TrainedRun around a hand-made model (fp32 CPU, identity normalisation)."""
    return TrainedRun(model.eval(), FP32, Normalizer((0.0,) * 3, (1.0,) * 3), class_names, 3, size, task, encoding)


def _write_rgb(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), "RGB").save(path)
    return path


# ----------------------------------------------------------------------------- predict on the trained run

def test_predict_writes_mapping_grey_levels_equal_to_argmax_of_predict_logits(run_dir, endovis_root, test_split,
                                                                              tmp_path):
    run = load_run(run_dir)
    result = predict_paths(run, [endovis_root / "segmentation" / "test"], tmp_path / "pred")
    mapping = json.loads((endovis_root / "mapping.json").read_text())
    levels = np.array([mapping[name] for name in run.class_names])
    expected = predict_logits(run.scorer(4), test_split).argmax(1).numpy()
    assert len(result["images"]) == len(test_split)  # the *_mask.png files beside the inputs are not inputs
    for name, exp in zip(test_split.names, expected):
        mask = _png(tmp_path / "pred" / f"{name}_input_mask.png")
        assert set(np.unique(mask).tolist()) <= set(mapping.values())
        np.testing.assert_array_equal(mask, levels[exp])
        areas = json.loads((tmp_path / "pred" / f"{name}_input_areas.json").read_text())["classes"]
        counts = np.bincount(exp.reshape(-1), minlength=len(levels))
        assert [areas[n]["pixels"] for n in run.class_names] == counts.tolist()
        assert sum(a["fraction"] for a in areas.values()) == pytest.approx(1.0)
        over = _png(tmp_path / "pred" / f"{name}_input_overlay.png")  # the image, then its legend strip below
        assert over.shape[0] > exp.shape[0] and over.shape[1] >= exp.shape[1]  # narrow images: widened, not cut


def test_predict_without_overlays_writes_the_same_masks_and_no_pictures(run_dir, endovis_root, tmp_path, capsys):
    """--no-overlays: the masks and class areas byte for byte as with overlays, no *_overlay.png, none listed."""
    images = str(endovis_root / "segmentation" / "test")
    assert _main(["predict", str(run_dir), images, "--out", str(tmp_path / "with")], None) == 0
    assert _main(["predict", str(run_dir), images, "--out", str(tmp_path / "without"), "--no-overlays"], None) == 0
    assert "class areas of" in capsys.readouterr().out
    with_files = {p.name for p in (tmp_path / "with").iterdir()}
    without = {p.name for p in (tmp_path / "without").iterdir()}
    assert without == {n for n in with_files if not n.endswith("_overlay.png")} and without != with_files
    for name in without - {"predict.json"}:
        assert (tmp_path / "with" / name).read_bytes() == (tmp_path / "without" / name).read_bytes(), name
    entries = json.loads((tmp_path / "without" / "predict.json").read_text())["images"]
    assert entries and all(e["overlay"] is None for e in entries)


def test_predict_resizes_to_training_size_and_back(run_dir, endovis_root, test_split, tmp_path):
    run = load_run(run_dir, precision="fp32")
    big = np.asarray(Image.open(endovis_root / "segmentation/test/0/0_input.jpg").resize((128, 96), Image.NEAREST))
    src = _write_rgb(tmp_path / "big.png", big)
    predict_paths(run, [src], tmp_path / "pred")
    mask = _png(tmp_path / "pred" / "big_mask.png")
    assert mask.shape == (96, 128)
    small = predict_logits(run.scorer(1), test_split, torch.tensor([0])).argmax(1)[0].numpy()
    levels = np.array(run.encoding.values)
    agree = (mask == np.kron(levels[small], np.ones((2, 2), dtype=levels.dtype))).mean()
    assert agree > 0.9


def test_sliding_window_at_training_size_equals_plain_prediction(run_dir, endovis_root, tmp_path):
    run = load_run(run_dir)
    folder = endovis_root / "segmentation" / "test"
    predict_paths(run, [folder], tmp_path / "plain")
    predict_paths(run, [folder], tmp_path / "window", window=run.input_size)
    for name in ("0", "1", "2", "3"):
        np.testing.assert_array_equal(_png(tmp_path / "plain" / f"{name}_input_mask.png"),
                                      _png(tmp_path / "window" / f"{name}_input_mask.png"))


def test_predict_refuses_to_overwrite_and_reports_missing_best_pt(run_dir, endovis_root, tmp_path):
    run = load_run(run_dir)
    image = endovis_root / "segmentation/test/1/1_input.jpg"
    predict_paths(run, [image], tmp_path)
    before = (tmp_path / "1_input_mask.png").read_bytes()
    with pytest.raises(CnnlabError, match="never overwrites"):
        predict_paths(run, [image], tmp_path)
    assert (tmp_path / "1_input_mask.png").read_bytes() == before
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(CnnlabError) as err:
        load_run(empty)
    assert "best.pt" in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- evaluate

def test_evaluate_on_validation_reproduces_summary_exactly(run_dir, tmp_path):
    summary = json.loads((run_dir / "summary.json").read_text())
    result, path = evaluate_run(run_dir, split="validation", out=tmp_path)
    assert result["metrics"] == summary["validation"]
    assert json.loads(path.read_text())["metrics"] == summary["validation"]
    assert path.name == "evaluate_validation.json"
    _, second = evaluate_run(run_dir, split="validation", out=tmp_path)
    assert second.name == "evaluate_validation-2.json"
    assert json.loads(path.read_text())["metrics"] == summary["validation"]  # the first file is untouched


def test_evaluate_on_another_data_set_of_the_same_format(run_dir, tmp_path):
    from cnnlab.data.synthetic import endovis

    other = endovis.write(tmp_path / "other", seed=7, n_train=2, n_val=2, n_test=5, n_color_train=1,
                          n_color_val=1, height=48, width=64)
    result, _ = evaluate_run(run_dir, data_root=other, split="test", out=tmp_path / "eval")
    data = load_split(DataConfig(format="endovis", root=str(other)), "test")
    run = load_run(run_dir)
    pred = predict_logits(run.scorer(4), data).argmax(1)
    assert result["n_images"] == 5 and result["data_root"] == str(other)
    assert result["metrics"]["pixel_accuracy"] == pytest.approx((pred == data.masks.long()).double().mean().item())


def test_evaluate_refuses_a_data_set_with_other_classes(run_dir, endovis_root, tmp_path):
    other = tmp_path / "renamed"
    shutil.copytree(endovis_root, other)
    mapping = json.loads((other / "mapping.json").read_text())
    mapping["Renamed_Tool"] = mapping.pop("Other")
    (other / "mapping.json").write_text(json.dumps(mapping))
    with pytest.raises(DataError, match="differ"):
        evaluate_run(run_dir, data_root=other, split="test", out=tmp_path)


# ----------------------------------------------------------------------------- sliding window

def test_window_starts_and_weights():
    assert window_starts(100, 32, 0.25) == [0, 24, 48, 68]   # stride 24, last tile flush with the end
    assert window_starts(32, 32, 0.25) == [0]
    assert window_starts(20, 32, 0.5) == [0]
    w = window_weights(8, 12, "cosine")
    assert (w > 0).all() and torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))
    assert w[3:5, 5:7].min() > w[0, 0] * 50


def test_sliding_window_with_a_pointwise_model_is_exact_everywhere():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1).eval()
    predict = lambda b: model(b).softmax(1)  # noqa: E731
    for shape in [(3, 50, 70), (3, 10, 13)]:  # larger than the window (uneven tiling), smaller (padded)
        x = torch.randn(shape)
        out = sliding_window(predict, x, (16, 24), overlap=0.25, batch_size=3)
        assert out.shape == (4, *shape[1:])
        torch.testing.assert_close(out, predict(x[None])[0], atol=1e-5, rtol=1e-5)


def test_sliding_window_agrees_with_full_image_in_the_interior():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    predict = lambda b: model(b).softmax(1)  # noqa: E731
    x = torch.randn(3, 50, 70)
    with torch.no_grad():
        full = predict(x[None])[0]
    errors = {}
    for blend in ("cosine", "constant"):
        out = sliding_window(predict, x, (16, 24), overlap=0.25, batch_size=4, blend=blend)
        errors[blend] = (out - full).abs()[:, 2:-2, 2:-2]  # away from the image border (radius 2 model)
    assert errors["cosine"].max() < 0.03 and errors["cosine"].mean() < 1e-3
    # smooth blending down-weights the tile borders, where zero padding changed the result
    assert errors["cosine"].mean() < errors["constant"].mean() / 3


# ----------------------------------------------------------------------------- flip TTA

# ----------------------------------------------------------------------------- encodings, classification, inputs

def test_voc_palette_binary_and_index_encodings(tmp_path):
    torch.manual_seed(0)
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3))
    src = _write_rgb(tmp_path / "in" / "x.png", img)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    for k, enc in [(21, MaskEncoding("voc_palette", list(range(21)))), (2, MaskEncoding("binary", [0, 255])),
                   (3, MaskEncoding("indices", [0, 1, 2]))]:
        model = nn.Conv2d(3, k, 1)
        run = _toy_run(model, "segmentation", [f"c{i}" for i in range(k)], enc)
        predict_paths(run, [src], tmp_path / enc.kind)
        expected = model(x).argmax(1)[0].numpy()
        written = Image.open(tmp_path / enc.kind / "x_mask.png")
        np.testing.assert_array_equal(np.asarray(written), np.array(enc.values)[expected])
        if enc.kind == "voc_palette":
            from cnnlab.data.voc_colors import VOC_PALETTE

            assert written.mode == "P" and written.getpalette()[: 3 * 21] == VOC_PALETTE[: 3 * 21]


def test_two_channel_stain_runs_get_unmixed_inputs(tmp_path):
    from cnnlab.data.stain import unmix_he

    torch.manual_seed(0)
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3))
    src = _write_rgb(tmp_path / "he.png", img)
    model = nn.Conv2d(2, 2, 1)
    run = _toy_run(model, "segmentation", ["background", "gland"], MaskEncoding("binary", [0, 255]))
    run.in_channels, run.norm = 2, Normalizer((0.5, 0.25), (0.2, 0.1))
    run.recipe = recipe_from_dict({"data": {"format": "glas", "options": {"stain": "hed"}}})
    predict_paths(run, [src], tmp_path / "out")
    stains = torch.from_numpy(unmix_he(img.astype(np.uint8))).permute(2, 0, 1)[None].float() / 255
    expected = model(run.norm(stains)).argmax(1)[0].numpy() * 255
    np.testing.assert_array_equal(_png(tmp_path / "out" / "he_mask.png"), expected)


def test_classification_run_saves_probabilities(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    paths = [_write_rgb(tmp_path / "in" / f"{i}.png", rng.integers(0, 256, (16, 16, 3))) for i in range(3)]
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    names = ["cat", "dog", "fox", "owl"]
    run = _toy_run(model, "classification", names, MaskEncoding("indices", [0, 1, 2, 3]))
    predict_paths(run, [tmp_path / "in"], tmp_path / "out", batch_size=2)
    with open(tmp_path / "out" / "probabilities.csv") as f:
        rows = list(csv.DictReader(f))
    x = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in paths]).float() / 255
    expected = model(x).softmax(1)
    assert list(rows[0]) == ["image", "predicted", *names]
    for row, p in zip(rows, expected):
        got = torch.tensor([float(row[n]) for n in names])
        torch.testing.assert_close(got, p, atol=1e-6, rtol=1e-5)
        assert row["predicted"] == names[int(p.argmax())]


def test_list_inputs_skips_junk_and_masks_and_recurses_one_level(tmp_path):
    img = np.zeros((4, 4, 3))
    top = _write_rgb(tmp_path / "a.png", img)
    sub = _write_rgb(tmp_path / "s" / "a.png", img)
    _write_rgb(tmp_path / "s" / "a_mask.png", img)
    _write_rgb(tmp_path / "s" / "deeper" / "b.png", img)  # two levels down: not included
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "._a.png").write_bytes(b"\0")
    (tmp_path / "notes.txt").write_text("x")
    files, notes = list_inputs([tmp_path])
    assert files == [top, sub]
    assert output_stems(files) == [f"{tmp_path.name}_a", "s_a"]
    assert any("mask" in n for n in notes)
    assert list_inputs([tmp_path / "._a.png", top])[0] == [top]  # named junk is skipped too
    numbered = [_write_rgb(tmp_path / "n" / f"{i}.png", img) for i in (10, 2, 1)]
    assert list_inputs([tmp_path / "n"])[0] == sorted(numbered, key=lambda p: int(p.stem))
    with pytest.raises(DataError, match="no such file"):
        list_inputs([tmp_path / "missing.png"])


# ----------------------------------------------------------------------------- command line

def _main(argv: list[str], monkeypatch) -> int:
    from cnnlab import cli

    return cli.main(argv)


def test_cli_predict_evaluate_and_one_line_errors(run_dir, endovis_root, tmp_path, monkeypatch, capsys):
    folder = str(endovis_root / "segmentation" / "test")
    assert _main(["predict", str(run_dir), folder, "--out", str(tmp_path / "p"), "--tta", "--window", "32x32",
                  "--batch-size", "3"], monkeypatch) == 0
    assert len(list((tmp_path / "p").glob("*_mask.png"))) == 4
    assert not load_run(run_dir).recipe.augment.hflip  # taught no symmetry: --tta has nothing to average
    said = json.loads((tmp_path / "p" / "predict.json").read_text())
    assert said["tta_flips"] == [] and any("nothing to average" in n for n in said["notes"])
    assert _main(["evaluate", str(run_dir), "--split", "validation", "--out", str(tmp_path / "e")], monkeypatch) == 0
    assert (tmp_path / "e" / "evaluate_validation.json").is_file()
    capsys.readouterr()
    assert _main(["predict", str(tmp_path), folder, "--out", str(tmp_path / "q")], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "best.pt" in err and err.count("\n") == 1


def test_the_checkpoint_keeps_the_mask_encoding_so_moved_data_do_not_matter(run_dir, endovis_root):
    from dataclasses import replace

    from cnnlab.data.mask_encoding import resolve_encoding
    from cnnlab.engine.checkpoint import load_checkpoint

    ck = load_checkpoint(run_dir / "best.pt")
    mapping = json.loads((endovis_root / "mapping.json").read_text())
    levels = [mapping[name] for name in ck["class_names"]]
    assert ck["mask_encoding"] == {"kind": "grey_levels", "values": levels}
    run = load_run(run_dir)
    moved = replace(run.recipe, data=replace(run.recipe.data, root="/nonexistent/moved"))
    encoding, notes = resolve_encoding(moved, ck["class_names"], ck)
    assert encoding.values == levels and notes == []
    assert resolve_encoding(moved, ck["class_names"], {})[0].kind == "indices"  # what older checkpoints got


def test_summary_evaluate_and_report_give_the_multi_class_per_image_mean(run_dir, tmp_path):
    """Issue 30: multi-class runs report the mean over images of each image's mean Dice over its classes present
    (metrics.per_image; its hand-computed example is in test_own_data_per_image.py), named as such."""
    from cnnlab.report.build import write_run_report

    s = json.loads((run_dir / "summary.json").read_text())
    per = s["per_image"]
    assert len(s["class_names"]) > 2 and per["images"] == s["n_images"] and 0 <= per["dice_mean_per_image"] <= 1
    result, _ = evaluate_run(run_dir, out=tmp_path, progress=False)
    assert result["per_image"]["dice_mean_per_image"] == pytest.approx(per["dice_mean_per_image"], abs=1e-6)
    report = write_run_report(run_dir).read_text()
    assert "per-image mean Dice over the classes present in each image" in report
