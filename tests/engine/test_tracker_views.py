"""TensorBoard's HParams keys and per-class text table (engine/tracker_views.py), by hand-made inputs."""
from __future__ import annotations

from cnnlab.engine.tracker_views import HPARAM_KEYS, hp_metric, hparams, per_class_markdown


def test_hparams_are_a_short_list_with_booleans_as_text():
    flat = {k: 1 for k in HPARAM_KEYS} | {"data.size": None, "train.channels_last": True, "train.compile": False,
                                          "model.params.width": 4, "model.params.pretrained": True,
                                          "loss.params": "{}", "augment.hflip": True, "augment.vflip": False,
                                          "augment.rotate": 0.0, "augment.crop_scale": 0.8}
    got = hparams(flat)
    assert "data.size" not in got and "train.channels_last" not in got and "train.compile" not in got
    assert got["model.params.pretrained"] == "true" and got["augment.hflip"] == "true"
    assert "augment.vflip" not in got and "augment.rotate" not in got and got["augment.crop_scale"] == 0.8
    assert "loss.params" not in got and got["model.params.width"] == 4


def test_hp_metric_is_the_headline_score():
    assert hp_metric({"metrics": {"loss": 0.3, "dice_mean": 0.7}}) == 0.7
    assert hp_metric({"metrics": {"loss": 0.3, "accuracy": 0.9}}) == 0.9
    assert hp_metric({"metrics": {"loss": float("nan")}}) is None


def test_per_class_scores_are_one_markdown_table():
    s = {"evaluated_on": "test", "per_class": {"a|b": {"dice": 0.5, "iou": None, "in_ground_truth": True},
                                               "c": {"dice": 0.25, "iou": 0.125, "in_ground_truth": False}}}
    lines = per_class_markdown(s).splitlines()
    assert lines[2:] == ["| class | dice | iou | in_ground_truth |", "|---|---|---|---|",
                         "| a\\|b | 0.5000 | — | True |", "| c | 0.2500 | 0.1250 | False |"]
    assert per_class_markdown({"metrics": {}}) is None
