"""Export of a trained tiny run: TorchScript / ONNX files that match PyTorch, with their preprocessing beside them."""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import train
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.inference.export import ATOL, RTOL, export_run, preprocess_path
from cnnlab.inference.predict import load_run, predict_paths
from conftest import tiny_recipe


@pytest.fixture(scope="module")
def run_dir(endovis_root, tmp_path_factory) -> Path:
    raw = tiny_recipe(endovis_root, tmp_path_factory.mktemp("runs"), train={"epochs": 1})
    return train(recipe_from_dict(raw))


def _reference(run_dir: Path):
    """The PyTorch model in fp32 on the CPU: what the export must reproduce."""
    return load_run(run_dir, device="cpu", precision="fp32").model


def _close(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= ATOL + RTOL * ref.abs().max()


def test_torchscript_export_reloads_and_matches_with_batch_sizes_1_and_3(run_dir, endovis_root, tmp_path):
    path = export_run(run_dir, "torchscript", tmp_path / "model.pt")
    ref = _reference(run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path))
    g = torch.Generator().manual_seed(5)
    for n in (1, 3):
        x = torch.randn(n, 3, 48, 64, generator=g)
        with torch.no_grad():
            _close(loaded(x), ref(x))
    spec = json.loads(preprocess_path(path).read_text())
    assert preprocess_path(path).name == "model.preprocess.json"
    ck = torch.load(run_dir / "best.pt", weights_only=True)
    mapping = json.loads((endovis_root / "mapping.json").read_text())
    assert spec["input_size"] == [48, 64] and spec["input"]["channel_order"] == "RGB"
    assert spec["input"]["batch"] == "dynamic" and spec["input"]["layout"] == "NCHW"
    assert spec["mean"] == ck["norm"]["mean"] and spec["std"] == ck["norm"]["std"]
    assert all(0 < m < 1 for m in spec["mean"])  # 0..1 units, not 0..255
    assert spec["class_names"] == ck["class_names"]
    assert spec["mask_encoding"]["values"] == [mapping[n] for n in ck["class_names"]]
    assert spec["verification"]["passed"] and spec["verification"]["batch_sizes"] == [1, 3]


def test_preprocess_spec_and_export_reproduce_predict(run_dir, endovis_root, tmp_path):
    """An application following the JSON with the exported file gets the masks `cnnlab predict` writes."""
    path = export_run(run_dir, "torchscript", tmp_path / "m.pt")
    spec = json.loads(preprocess_path(path).read_text())
    image_path = endovis_root / "segmentation/test/2/2_input.jpg"
    predict_paths(load_run(run_dir, device="cpu", precision="fp32"), [image_path], tmp_path / "pred")
    pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 255
    x = (pixels - np.array(spec["mean"], dtype=np.float32)) / np.array(spec["std"], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logits = torch.jit.load(str(path))(torch.from_numpy(x.transpose(2, 0, 1).copy())[None])
    mask = np.array(spec["mask_encoding"]["values"])[logits.argmax(1)[0].numpy()]
    written = np.asarray(Image.open(tmp_path / "pred" / "2_input_mask.png"))
    assert (mask == written).mean() > 0.99  # fp32 both ways; only exact logit ties could differ
    assert spec["test_time_flips"] is None  # one pass: the run has no train.tta


def test_onnx_export_matches_in_onnxruntime(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = export_run(run_dir, "onnx", tmp_path / "model.onnx")
    ref = _reference(run_dir)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(6)
    for n in (1, 3):
        x = torch.randn(n, 3, 48, 64, generator=g)
        with torch.no_grad():
            _close(torch.from_numpy(session.run(None, {"image": x.numpy()})[0]), ref(x))
    spec = json.loads((tmp_path / "model.preprocess.json").read_text())
    assert spec["format"] == "onnx" and spec["verification"]["backend"] == "onnxruntime"
    assert spec["verification"]["max_abs_diff"] <= spec["verification"]["tolerance_value"]


def test_onnx_without_the_onnx_package_is_one_clear_line(run_dir, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(CnnlabError) as err:
        export_run(run_dir, "onnx", tmp_path / "model.onnx")
    assert "onnx" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "model.onnx").exists()


def test_onnx_without_onnxruntime_skips_the_check_with_a_note(run_dir, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    path = export_run(run_dir, "onnx", tmp_path / "model.onnx")
    check = json.loads(preprocess_path(path).read_text())["verification"]
    assert check["passed"] is None and "onnxruntime is not installed" in check["skipped"]


def test_a_mismatching_export_is_refused(run_dir, tmp_path, monkeypatch):
    real_load = torch.jit.load

    class Perturbed(torch.nn.Module):  # what a broken exporter would produce: outputs off by 1e-2
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) + 1e-2

    def perturbed(*args, **kwargs):
        return Perturbed(real_load(*args, **kwargs))

    monkeypatch.setattr(torch.jit, "load", perturbed)
    with pytest.raises(CnnlabError, match="differs from torch"):
        export_run(run_dir, "torchscript", tmp_path / "model.pt")


def test_export_errors(run_dir, tmp_path):
    export_run(run_dir, "torchscript", tmp_path / "model.pt")
    with pytest.raises(CnnlabError, match="never overwrites"):
        export_run(run_dir, "torchscript", tmp_path / "model.pt")
    with pytest.raises(ConfigError, match="torchscript"):
        export_run(run_dir, "tflite", tmp_path / "model.tflite")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CnnlabError) as err:
        export_run(tmp_path / "empty_run", "torchscript")
    assert "best.pt" in str(err.value) and "\n" not in str(err.value)


def test_cli_export(run_dir, tmp_path, monkeypatch, capsys):
    from cnnlab import cli

    assert cli.main(["export", str(run_dir), "--format", "torchscript"]) == 0
    default = run_dir / "export" / f"{run_dir.name}.torchscript.pt"
    assert default.is_file() and (run_dir / "export" / f"{run_dir.name}.torchscript.preprocess.json").is_file()
    assert "matches torch" in capsys.readouterr().out
