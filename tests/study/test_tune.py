"""`cnnlab tune`: the space file's errors are one line before any folder exists; a tiny search on synthetic data
(two learning rates, one hopeless) read back from Optuna's own storage (the oracle) against the trials' run dirs
(config.yaml, metrics.csv); the median pruner stops the hopeless trial after an epoch below the median; a tune
interrupted mid-trial resumes the same study without repeating finished trials; best.yaml trains; `--workers 2`
gives the sequential trials."""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import optuna
import pytest
import yaml

from cnnlab.cli import main
from cnnlab.config import read_yaml, recipe_from_dict
from cnnlab.engine.run import train
from cnnlab.study.tune import TuneInterrupted, resume_tune, start_tune
from cnnlab.study.tune_trial import PRUNED_FILE, storage_url, trial_name
from conftest import interrupt_in_epoch, tiny_recipe

GOOD, BAD = 0.03, 1.0e-7  # Adam at 1e-7 does not move the weights in a few steps: its Dice stays where it began
EPOCHS = 2


@pytest.fixture(autouse=True)
def no_run_figures(monkeypatch):
    monkeypatch.setattr("cnnlab.engine.summary.write_run_figures", lambda *a, **k: [])


def _files(tmp: Path, root: Path, space: dict) -> tuple[Path, Path]:
    recipe = tiny_recipe(root, tmp / "unused", train={"epochs": EPOCHS, "threads": 1, "max_steps_per_epoch": 1})
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    (tmp / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    return tmp / "tiny.yaml", tmp / "space.yaml"


def _trials(tune_dir: Path) -> list:
    """The trials as Optuna's storage holds them (read with Optuna itself, not cnnlab's reader)."""
    name = json.loads((tune_dir / "tune.json").read_text())["study_name"]
    return optuna.load_study(study_name=name, storage=storage_url(tune_dir)).get_trials()


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _run_dir(tune_dir: Path, trial) -> Path:
    return tune_dir / "runs" / trial.user_attrs["run_dir"]


@pytest.fixture(scope="module")
def searched(endovis_root: Path, tmp_path_factory) -> Path:
    """4 trials over two learning rates, median pruner after 1 finished trial, from epoch 1 on."""
    tmp = tmp_path_factory.mktemp("tune")
    recipe, space = _files(tmp, endovis_root, {"optim.lr": [GOOD, BAD], "tune": {
        "sampler": "random", "seed": 6, "startup_trials": 1, "warmup_epochs": 0}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("cnnlab.engine.summary.write_run_figures", lambda *a, **k: [])
        return start_tune(recipe, space, trials=4, out=tmp / "tunes")


@pytest.mark.parametrize("space, says", [
    ({"optim.lrr": {"log": [1.0e-4, 1.0e-2]}}, "unknown config key 'optim.lrr' — did you mean 'lr'?"),
    ({"optim.lr": {"log": [0, 1.0e-2]}}, "a log range must be above 0"),
    ({"optim.lr": {"range": [0.1, 0.01]}}, "LOW must be below HIGH"),
    ({"optim.lr": {"uniform": [0.1, 0.2]}}, "unknown form 'uniform'"),
    ({"model.name": ["unet", "unett"]}, "unknown model.name 'unett'"),
    ({"train.batch_size": {"int": [0, 4]}}, "train.batch_size = 0"),
    ({"data.test": ["test", ""]}, "data.test is set by cnnlab tune itself"),
    ({"optim.lr": [0.1], "tune": {"prunr": "median"}}, "unknown tune setting 'prunr' — did you mean 'pruner'?"),
])
def test_space_file_errors_are_one_line_before_any_folder(space, says, endovis_root, tmp_path, capsys):
    recipe, space_file = _files(tmp_path, endovis_root, space)
    code = main(["tune", str(recipe), "--space", str(space_file), "--trials", "2", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_1e_minus_4_written_without_a_dot_is_a_number(endovis_root, tmp_path):
    from cnnlab.study.tune_space import load_space
    (tmp_path / "s.yaml").write_text("optim.lr: {log: [1e-4, 1e-2]}\n")
    p = load_space(tmp_path / "s.yaml", tiny_recipe(endovis_root, tmp_path)).params[0]
    assert (p.kind, p.low, p.high) == ("log", 1e-4, 1e-2)


def test_without_optuna_tune_is_one_line_naming_the_extra(endovis_root, tmp_path, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    recipe, space = _files(tmp_path, endovis_root, {"optim.lr": [0.1]})
    assert main(["tune", str(recipe), "--space", str(space), "--trials", "2", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'cnnlab[tune]'" in err and len(err.strip().splitlines()) == 1


def test_storage_holds_each_trial_with_its_run_dir_params_and_best_validation_score(searched: Path):
    trials = _trials(searched)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert {t.params["optim.lr"] for t in trials} == {GOOD, BAD}  # the seed draws both
    dirs = sorted(p.name for p in (searched / "runs").iterdir())
    assert sorted(t.user_attrs["run_dir"] for t in trials) == dirs  # one run dir per trial
    for t in trials:
        run_dir = _run_dir(searched, t)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["optim"]["lr"] == t.params["optim.lr"] and config["data"]["test"] == ""
        dice = [float(r["val_dice_mean"]) for r in _rows(run_dir)]
        # each epoch reported as the run wrote it (metrics.csv prints more digits than a double holds)
        assert t.intermediate_values == pytest.approx(dict(enumerate(dice, 1)), rel=1e-12)
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == max(dice) and len(dice) == EPOCHS
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["test_split"] is False  # the search never read the test split


def test_the_search_finds_the_good_learning_rate(searched: Path):
    trials = _trials(searched)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    assert best.params["optim.lr"] == GOOD
    assert read_yaml(searched / "best.yaml")["optim"]["lr"] == GOOD
    assert all(t.value < best.value for t in complete if t.params["optim.lr"] == BAD)


def test_a_trial_below_the_median_at_its_epoch_is_pruned_before_its_last_epoch(searched: Path):
    trials = _trials(searched)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the hopeless learning rate should have been pruned"
    for t in pruned:
        run_dir = _run_dir(searched, t)
        epochs = len(_rows(run_dir))
        assert epochs < EPOCHS and (run_dir / "summary.json").is_file()  # stopped early, then finished
        assert json.loads((run_dir / PRUNED_FILE).read_text())["epoch"] == epochs
        # the median, at that epoch, of the trials finished before it (by hand from their metrics.csv)
        before = [u for u in trials if u.state == optuna.trial.TrialState.COMPLETE and u.number < t.number]
        median = statistics.median(float(_rows(_run_dir(searched, u))[epochs - 1]["val_dice_mean"]) for u in before)
        assert t.intermediate_values[epochs] < median


def test_the_report_and_the_confirmation_study(searched: Path, capsys):
    assert main(["report", str(searched)]) == 0  # cnnlab report knows a tune folder
    text = (searched / "tune.md").read_text()
    assert "validation split only" in text and "optuna-dashboard sqlite:///" in text
    assert "first use of the test split ('test')" in text
    best = max((t for t in _trials(searched) if t.value is not None and t.state.name == "COMPLETE"),
               key=lambda t: t.value)
    assert f"{trial_name(best.number)}: validation dice_mean {best.value:.4f}" in text
    assert (searched / "figures" / "tune_history.png").is_file()
    assert "data:image/png;base64," in (searched / "report.html").read_text()  # self-contained
    confirm = yaml.safe_load((searched / "confirm.yaml").read_text())
    assert confirm["evaluate"] == "test" and confirm["seeds"] == [0, 1, 2]
    from cnnlab.study.plan import load_study
    plan = load_study(searched / "confirm.yaml")  # a valid study file, as written
    assert {r.seed for r in plan.runs} == {0, 1, 2}


def test_best_yaml_trains_with_the_test_split(searched: Path, tmp_path: Path):
    raw = read_yaml(searched / "best.yaml")
    run_dir = train(recipe_from_dict(raw, ["train.epochs=1", f"out={tmp_path}"]))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_split"] is True and summary["evaluated_on"] == "test"


def test_an_interrupted_tune_resumes_the_same_study_without_repeating_trials(endovis_root, tmp_path, monkeypatch):
    recipe, space = _files(tmp_path, endovis_root, {"optim.lr": {"log": [1.0e-3, 1.0e-1]},
                                                    "tune": {"pruner": "none"}})
    real = interrupt_in_epoch(monkeypatch, epoch=EPOCHS + 2)  # trial 1, as its epoch 2 begins
    with pytest.raises(TuneInterrupted, match="resume with: cnnlab tune --resume"):
        start_tune(recipe, space, trials=3, out=tmp_path / "tunes")
    monkeypatch.setattr("cnnlab.engine.run.train_one_epoch", real)
    tune_dir = next((tmp_path / "tunes").iterdir())
    first = _trials(tune_dir)
    assert [t.state.name for t in first] == ["COMPLETE", "RUNNING"]
    kept = sorted((tune_dir / "runs").iterdir())
    resume_tune(tune_dir)
    trials = _trials(tune_dir)
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state.name == "COMPLETE" for t in trials)
    runs = sorted((tune_dir / "runs").iterdir())
    assert len(runs) == 3 and kept == runs[:2]  # trial 1 finished in its own run dir, no duplicate
    assert [t.params for t in trials[:2]] == [t.params for t in first]
    assert trials[0].params == {"optim.lr": 0.01}  # trial 0 ran the base recipe's own value, inside the space
    events = [json.loads(line)["event"] for line in (runs[0] / "events.jsonl").read_text().splitlines()]
    assert events.count("start") == 1  # trial 0 was not trained again
    assert (runs[1] / "history.yaml").is_file() and len(_rows(runs[1])) == EPOCHS  # resumed at epoch 2


@pytest.mark.slow
def test_two_workers_give_the_sequential_trials(endovis_root, tmp_path):
    recipe, space = _files(tmp_path, endovis_root, {"optim.lr": {"log": [1.0e-3, 1.0e-1]},
                                                    "tune": {"pruner": "none", "startup_trials": 4}})
    sequential = start_tune(recipe, space, trials=2, out=tmp_path / "seq")
    parallel = start_tune(recipe, space, trials=2, out=tmp_path / "par", workers=2)
    a, b = _trials(sequential), _trials(parallel)
    assert [(t.number, t.params, t.value) for t in a] == [(t.number, t.params, t.value) for t in b]
    assert all(t.state.name == "COMPLETE" for t in b)


def test_the_confirmation_split_is_the_test_split_only_where_the_data_has_one(endovis_root, tmp_path):
    from cnnlab.study.tune import held_out_test
    raw = tiny_recipe(endovis_root, tmp_path)
    assert held_out_test(raw, []) == "test"
    assert held_out_test(raw, ['data.test="holdout"']) is None  # no such split: the report says validation again


@pytest.mark.parametrize("pruner", ["median", "halving"])
def test_warmup_epochs_are_never_pruned_and_the_next_one_may_be(pruner):
    from cnnlab.study.tune_trial import make_pruner
    study = optuna.create_study(direction="maximize", pruner=make_pruner(
        {"pruner": pruner, "startup_trials": 0, "warmup_epochs": 2}))
    for _ in range(3):  # good trials: 1.0 at every epoch
        good = study.ask()
        for epoch in (1, 2, 3):
            good.report(1.0, epoch)
            good.should_prune()  # as every trial asks (successive halving records its rungs then)
        study.tell(good, 1.0)
    bad, said = study.ask(), []
    for epoch in (1, 2, 3):
        bad.report(0.0, epoch)
        said.append(bad.should_prune())
    assert said == [False, False, True]


def test_a_tune_killed_between_optunas_ask_and_the_plan_runs_that_trial_on_resume(endovis_root, tmp_path):
    recipe, space = _files(tmp_path, endovis_root, {"optim.lr": [0.01, 0.02], "tune": {"pruner": "none"}})
    tune_dir = start_tune(recipe, space, trials=1, out=tmp_path / "tunes", sets=["train.epochs=1"])
    first = _trials(tune_dir)  # the one trial of the budget: the recipe's own value, queued, then run
    assert [(t.state.name, t.params) for t in first] == [("COMPLETE", {"optim.lr": 0.01})]
    name = json.loads((tune_dir / "tune.json").read_text())["study_name"]
    asked = optuna.load_study(study_name=name, storage=storage_url(tune_dir)).ask(
        {"optim.lr": optuna.distributions.CategoricalDistribution([0.01, 0.02])})  # the kill came here
    resume_tune(tune_dir, trials=2)
    trials = _trials(tune_dir)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    config = yaml.safe_load((_run_dir(tune_dir, trials[1]) / "config.yaml").read_text())
    assert config["optim"]["lr"] == asked.params["optim.lr"] and config["name"] == "trial0001"
