"""A vanished class is never silent (issue 39): per-class IoU in every validation, the worst class on the epoch
line, one warning line per class in the ground truth but never predicted (summary.json, the end of the run,
`cnnlab evaluate`), the per-class IoU chart, and train.select: miou."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from cnnlab.config import recipe_from_dict
from cnnlab.engine.recipe_check import check_names
from cnnlab.engine.run import train
from cnnlab.errors import ConfigError
from cnnlab.metrics.confusion import ConfusionMatrix
from cnnlab.metrics.per_class import (
    class_iou_metrics,
    never_predicted,
    pixel_shares,
    vanished_warnings,
    worst_class,
)
from cnnlab.report.build import write_run_report
from cnnlab.tasks.segmentation import Segmentation
from conftest import tiny_recipe

NAMES = ["road", "pole", "sign", "sky"]


def _cm(truth: list[int], pred: list[int]) -> ConfusionMatrix:
    cm = ConfusionMatrix(len(NAMES), 255)
    cm.update(torch.tensor(pred), torch.tensor(truth))
    return cm


def test_warning_fires_once_per_class_in_the_truth_never_predicted():
    # truth: road x5, pole x2, sign x1, one void; prediction: road everywhere but one sky pixel. pole and sign are
    # in the ground truth and never predicted; sky is predicted but not in the truth (no warning: it is not missing)
    cm = _cm([0, 0, 0, 0, 0, 1, 1, 2, 255], [0, 0, 0, 0, 3, 0, 0, 0, 1])
    assert never_predicted(cm, NAMES) == ["pole", "sign"]
    assert pixel_shares(cm) == pytest.approx([5 / 8, 2 / 8, 1 / 8, 0.0])  # the void pixel is not counted
    entries = Segmentation().test_entries(_split(), cm, None)
    lines = vanished_warnings(entries, "test", "runs/r")
    assert len(lines) == 2
    assert lines[0].startswith("warning: class 'pole' is in the ground truth of 'test' (25.00% of its pixels) but "
                               "never predicted") and "'sign'" in lines[1] and "12.50%" in lines[1]
    assert all("\n" not in line for line in lines)


def test_warning_stays_silent_when_every_class_in_the_truth_is_predicted():
    # pole predicted once (wrongly placed: IoU 0, but predicted); sign absent from both truth and prediction
    cm = _cm([0, 0, 1, 1, 3], [0, 1, 0, 0, 3])
    assert never_predicted(cm, NAMES) == []
    assert vanished_warnings(Segmentation().test_entries(_split(), cm, None), "val", "r") == []
    assert vanished_warnings({"metrics": {"accuracy": 1.0}}, "test", "r") == []  # classification summaries: nothing


def _split():
    from cnnlab.data.types import SegData

    return SegData(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), torch.zeros(1, 1, 1, dtype=torch.uint8), ["a"], NAMES,
                   255)


def test_class_iou_metrics_and_worst_class_by_hand():
    # road: TP 3, FP 1 (pole pixel), FN 1 -> 3/5; pole: TP 1, FN 1 -> 1/2; sign: none anywhere -> None; sky: 1/1
    cm = _cm([0, 0, 0, 0, 1, 1, 3], [0, 0, 0, 3, 0, 1, 3])
    got = class_iou_metrics(cm, NAMES)
    assert got == {"iou/road": pytest.approx(3 / 5), "iou/pole": pytest.approx(1 / 2), "iou/sign": None,
                   "iou/sky": pytest.approx(1 / 2)}
    row = {f"val_{k}": v for k, v in got.items()} | {"val_iou_mean": 0.5}
    assert worst_class(row) == ("pole", pytest.approx(0.5))  # ties: the first; None is skipped, iou_mean is not a class
    assert worst_class({"val_loss": 1.0}) is None


def test_select_miou_scores_by_mean_iou():
    seg = Segmentation()
    metrics = {"dice_mean": 0.8, "iou_mean": 0.6}
    assert seg.selection_score(metrics) == 0.8 and seg.selection_score(metrics, "miou") == 0.6


def test_select_is_checked_in_one_line(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown train.select 'mIoU'"):
        recipe_from_dict(tiny_recipe(tmp_path, tmp_path, train={"select": "mIoU"}))
    check_names(recipe_from_dict(tiny_recipe(tmp_path, tmp_path, train={"select": "miou"})))  # segmentation: yes
    classify = recipe_from_dict({"task": "classification", "data": {"format": "mnist"},
                                 "model": {"name": "course_cnn"}, "loss": {"name": "cross_entropy"},
                                 "train": {"select": "miou"}})
    with pytest.raises(ConfigError, match="unknown train.select for a classification run 'miou'"):
        check_names(classify)


@pytest.fixture(scope="module")
def tiny_run(endovis_root: Path, tmp_path_factory) -> Path:
    """Two short epochs of a tiny U-Net on the 8-class EndoVis stand-in, selected by mean IoU: small classes are
    never predicted after so few steps."""
    raw = tiny_recipe(endovis_root, tmp_path_factory.mktemp("vanish"),
                      train={"threads": 1, "max_steps_per_epoch": 1, "select": "miou"})
    return train(recipe_from_dict(raw))


def test_run_records_per_class_iou_and_warns_for_every_vanished_class(tiny_run: Path):
    s = json.loads((tiny_run / "summary.json").read_text())
    with open(tiny_run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(f"val_iou/{n}" in rows[0] for n in s["class_names"])
    missing = [n for n, p in s["per_class"].items() if p["in_ground_truth"] and p["iou"] == 0]
    assert s["never_predicted"] and set(s["never_predicted"]) <= set(missing)
    assert len(s["warnings"]) == len(s["never_predicted"])
    log = (tiny_run / "train.log").read_text()
    assert all(w in log for w in s["warnings"])  # the end of the run says each in one line
    # the epoch line names the worst class and the selection metric, mean IoU
    epoch_lines = [line for line in log.splitlines() if "epoch   2/2" in line]
    worst = min((float(v), k[len("val_iou/"):]) for k, v in rows[-1].items() if k.startswith("val_iou/") and v)
    assert epoch_lines and f"worst {worst[1]} IoU {worst[0]:.2f}" in epoch_lines[0]
    assert "iou_mean" in epoch_lines[0]
    best = max(rows, key=lambda r: float(r["val_iou_mean"]))  # train.select: miou picked best.pt
    assert s["best_epoch"] == int(best["epoch"])


def test_evaluate_warns_and_the_report_draws_iou_beside_pixel_share(tiny_run: Path, capsys):
    from cnnlab.cli import main

    assert main(["evaluate", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    result = json.loads(sorted(tiny_run.glob("evaluate_test*.json"))[-1].read_text())
    assert result["warnings"] and all(w in out for w in result["warnings"])
    assert "share of pixels" in out and all(n in out for n in result["class_names"])
    assert '"iou/' not in out  # the per-class IoU is in the table, not repeated on the metrics line
    write_run_report(tiny_run)
    assert (tiny_run / "figures" / "per_class_iou.png").is_file()


def test_the_warnings_command_trains_the_runs_recipe_with_class_weights(tiny_run: Path, capsys):
    """The hint in the warning is a command that works: the run's own config.yaml, trained again with ENet class
    weights in dice_ce's cross-entropy, as a new run dir beside the first."""
    import shlex

    from cnnlab.cli import main
    from cnnlab.engine.checkpoint import load_checkpoint

    warning = json.loads((tiny_run / "summary.json").read_text())["warnings"][0]
    command = shlex.split(warning.split("class weights bring rare classes back: ", 1)[1].split(" (docs/", 1)[0])
    assert command[:3] == ["cnnlab", "train", str(tiny_run / "config.yaml")]
    assert main([*command[1:], "--set", "name=weighted", "--set", "train.epochs=1"]) == 0
    (again,) = tiny_run.parent.glob("weighted-*")
    ck = load_checkpoint(again / "best.pt")
    assert ck["recipe"]["loss"] == {"name": "dice_ce", "params": {"scheme": "enet_log"}}
    assert len(ck["class_weights"]) == len(ck["class_names"])
