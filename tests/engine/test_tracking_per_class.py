"""Classification runs log each class's accuracy to TensorBoard and MLflow at the end, as segmentation runs log
per-class Dice/IoU: read back from both stores and compared with the best model's own predictions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab.config import recipe_from_dict
from cnnlab.data.loading import load_split
from cnnlab.engine.run import train
from cnnlab.engine.steps import predict_logits
from cnnlab.engine.tracking import final_scalars
from cnnlab.inference.predict import load_run


def test_final_scalars_name_per_class_accuracy_and_skip_counts():
    summary = {"metrics": {"accuracy": 0.75, "loss": 0.5},
               "per_class_accuracy": {"cat": {"accuracy": 0.5, "images": 2}, "dog": {"accuracy": 1.0, "images": 2},
                                      "emu": {"accuracy": None, "images": 0}}}
    assert final_scalars(summary) == {"final/accuracy": 0.75, "final/loss": 0.5,
                                      "final/per_class/accuracy/cat": 0.5, "final/per_class/accuracy/dog": 1.0}


@pytest.mark.slow  # MLflow's store migrations take about 10 s on a busy 2-core CPU
def test_per_class_accuracy_reaches_tensorboard_and_mlflow(tmp_path: Path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    raw = {"name": "digits", "task": "classification", "out": str(tmp_path / "runs"),
           "data": {"format": "digits", "root": ".", "val": "test"},
           "model": {"name": "mlp", "params": {"hidden": [16]}}, "loss": {"name": "cross_entropy"},
           "train": {"epochs": 1, "batch_size": 64, "progress": False, "log_to": ["tensorboard", "mlflow"],
                     "mlflow_uri": uri}}
    run_dir = train(recipe_from_dict(raw))

    run = load_run(run_dir)   # the oracle: best.pt's own predictions on the tested split, class by class
    data = load_split(run.recipe.data, "test")
    pred = predict_logits(run.scorer(64), data).argmax(1)
    expected = {}
    for k, name in enumerate(data.class_names):
        mine = data.labels == k
        expected[name] = int((pred[mine] == k).sum()) / int(mine.sum())
    assert len(set(expected.values())) > 1   # the classes differ: a mix-up of classes would show

    summary = json.loads((run_dir / "summary.json").read_text())
    assert {n: v["accuracy"] for n, v in summary["per_class_accuracy"].items()} == pytest.approx(expected)
    assert sum(v["images"] for v in summary["per_class_accuracy"].values()) == len(data)

    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    mlrun = MlflowClient(tracking_uri=uri).get_run(json.loads((run_dir / "tracking.json").read_text())
                                                   ["mlflow"]["run_id"])
    # TensorBoard: one text table of the classes (issue 34: not a single-point scalar card each); MLflow: metrics
    table = ea.Tensors("final/per_class/text_summary")[-1].tensor_proto.string_val[0].decode()
    for name, value in expected.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"{value:.4f}" in row.split(" | ")[1:], name
        tag = f"final/per_class/accuracy/{name}"
        assert mlrun.data.metrics[tag] == pytest.approx(value, rel=1e-12), name
