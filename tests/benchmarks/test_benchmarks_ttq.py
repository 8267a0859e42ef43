"""benchmarks/time_to_quality.py: the seconds-to-threshold rule, the plain side's recipe fidelity (schedule, initial
weights), the engine's events read back, and the smoke mode's JSON on synthetic data."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import time_to_quality as ttq  # noqa: E402
import ttq_plain  # noqa: E402
from cnnlab.config import load_recipe  # noqa: E402
from cnnlab.data.synthetic.endovis import write  # noqa: E402
from cnnlab.engine.fit import TrainState, lr_at  # noqa: E402
from cnnlab.engine.run import _setup  # noqa: E402
from cnnlab.tasks import task_for  # noqa: E402

HISTORY = [(10.0, 0.50), (20.0, None), (30.0, 0.81), (40.0, 0.79), (50.0, 0.85), (60.0, 0.90)]


@pytest.mark.parametrize("threshold, expected", [(0.80, 30.0), (0.85, 50.0), (0.90, 60.0), (0.5, 10.0),
                                                 (0.95, None)])
def test_seconds_to_is_the_first_time_at_or_above_the_threshold(threshold, expected):
    # 0.79 after 0.81 does not undo the first hit; exactly 0.85 counts (>=); None Dice (no metric) is skipped
    assert ttq.seconds_to(HISTORY, threshold) == expected


def test_seconds_to_on_an_empty_history_or_one_without_dice():
    assert ttq.seconds_to([], 0.8) is None
    assert ttq.seconds_to([(5.0, None)], 0.0) is None


def test_ratio_to_plain_and_its_lower_bound():
    assert ttq.ratio_to_plain(100.0, 25.0, 300.0) == {"ratio": 4.0, "at_least": False}
    # the plain loop never got there in 300 s: at least 300 / 60
    assert ttq.ratio_to_plain(None, 60.0, 300.0) == {"ratio": 5.0, "at_least": True}
    assert ttq.ratio_to_plain(100.0, None, 300.0) is None


def test_a_contender_stops_at_the_top_threshold_or_the_cap_after_an_epoch():
    row = {"epoch": 3, "epoch_s": 10.0, "train_s": 30.0, "val_dice": 0.84}
    assert ttq._stop([row], cap_s=60.0, stop_at=0.85) is None
    assert ttq._stop([{**row, "val_dice": 0.85}], cap_s=60.0, stop_at=0.85) == "reached"
    assert ttq._stop([row], cap_s=30.0, stop_at=0.85) == "cap"  # trained the cap's seconds: no further epoch
    assert ttq._stop([], cap_s=0.0, stop_at=0.85) is None       # nothing trained yet


def _recipe(root: Path, extra: list[str] | None = None):
    return load_recipe(REPO / "recipes" / "endovis" / "f_imagenet_unet.yaml",
                       [f"data.root={root}", "data.size=[64, 80]", "data.cache=false",
                        "model.name=fcn_efficientnet_lite0",
                        "model.params={weights: none, imagenet_norm: true, decoder_width: 8}", *(extra or [])])


def test_plain_schedule_equals_cnnlabs_learning_rate_every_epoch(tmp_path):
    r = _recipe(tmp_path, ["train.epochs=15"])  # warm-up 2, cosine (recipe f)
    factors = [ttq_plain.lr_factor(e, r.optim.warmup_epochs, r.train.epochs, r.optim.schedule) for e in range(15)]
    engine = [lr_at(e, r, TrainState()) for e in range(15)]
    assert [r.optim.lr * f for f in factors] == pytest.approx(engine, rel=1e-12)
    # hand-computed points: warm-up 1/3 and 2/3, then cosine from the full rate
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[2 + 13 // 2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 6 / 13)))


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """The synthetic course layout (what `cnnlab data synth endovis` writes), small and at 64x80 already."""
    return write(tmp_path_factory.mktemp("ttq") / "endovis", seed=0, n_train=8, n_val=4, n_test=0,
                 n_color_train=0, n_color_val=0, height=64, width=80)


def test_plain_side_starts_from_the_engines_initial_weights(synth):
    r = _recipe(synth, ["model.params={weights: none, imagenet_norm: true, decoder_width: 8}"])
    plain, _ = ttq_plain.seeded_model_and_data(r)
    engine_model = _setup(r, task_for(r.task))[2]
    a, b = plain.state_dict(), engine_model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k].to(a[k].device).contiguous()) for k in a)


def test_engine_events_become_cumulative_training_seconds():
    spawn = 1_700_000_000.0
    iso = "2023-11-14T22:13:{:02d}.000+00:00"  # spawn + 0 s is 22:13:20 UTC
    events = [{"event": "data", "seconds": 1.5, "time": iso.format(21)},
              {"event": "phase_start", "phase": "train", "epoch": 1, "time": iso.format(25)},
              {"event": "epoch", "epoch": 1, "seconds": 4.0, "val_dice_mean": 0.5, "lr": 0.1, "time": iso.format(31)},
              {"event": "phase_start", "phase": "train", "epoch": 2, "time": iso.format(32)},
              {"event": "epoch", "epoch": 2, "seconds": 6.0, "val_dice_mean": 0.7, "lr": 0.2, "time": iso.format(40)}]
    rows, start, decode = ttq.engine_history(events, spawn)
    assert [(r["epoch"], r["train_s"], r["val_dice"]) for r in rows] == [(1, 4.0, 0.5), (2, 10.0, 0.7)]
    assert [r["wall_s"] for r in rows] == pytest.approx([11.0, 20.0])
    assert start == pytest.approx(5.0) and decode == 1.5


def test_smoke_mode_writes_every_contender_with_its_epochs(synth, tmp_path):
    out = tmp_path / "ttq.json"
    ttq.main(["--smoke", "--in-process", "--data", str(synth), "--threads", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["size"] == [64, 80] and res["thresholds"] == [0.8, 0.85] and res["smoke"] is True
    assert set(res["contenders"]) == {"cnnlab", "plain", "course_unet"}
    assert res["machine"]["cpu"]["avx2"] in (True, False, None)
    for key, side in res["contenders"].items():
        h = side["history"]
        assert [r["epoch"] for r in h] == [1, 2], key  # 2 epochs, whatever the Dice
        assert h[1]["train_s"] == pytest.approx(h[0]["epoch_s"] + h[1]["epoch_s"])
        assert all(0.0 <= r["val_dice"] <= 1.0 for r in h)
        for t in ("0.8", "0.85"):
            s = ttq.seconds_to([(r["train_s"], r["val_dice"]) for r in h], float(t))
            assert side["summary"]["to"][t]["train_s"] == s
        assert set(res["ratios_vs_plain"][key]) == {"0.8", "0.85"}
    assert res["contenders"]["plain"]["kind"] == "plain"
    assert any(o.startswith("model.name=fcn_efficientnet_lite0") for o in res["contenders"]["cnnlab"]["overrides"])
