"""A study whose runs log to MLflow is one parent run with every run nested under it, in every executor
(one after another, `--workers 2`; `--ray` in test_study_parallel.py, where one Ray start serves both): read back
with MlflowClient from a temporary sqlite store and compared with each run's metrics.csv and the study's own files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from cnnlab.engine.tracking import scalar_tag
from cnnlab.errors import ConfigError
from cnnlab.study.plan import find_run_dir, load_study
from cnnlab.study.runner import resume_study, run_study
from conftest import tiny_recipe

pytest.importorskip("mlflow")

RUNS = ["a__seed0", "b__seed0", "a__seed1", "b__seed1"]
COLUMNS = ("train_loss", "val_loss", "val_dice_mean", "lr")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module: creating one runs MLflow's schema migrations (seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'store.db'}"


@pytest.fixture(scope="module")
def study_file(endovis_root: Path, tmp_path_factory, store: str) -> Path:
    """Variants a and b (b at a lower learning rate), seeds 0 and 1, 1 epoch; the runs log to MLflow via --set."""
    tmp = tmp_path_factory.mktemp("mls")
    recipe = tiny_recipe(endovis_root, tmp / "unused", train={"epochs": 1, "threads": 1})
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    study = {"name": "mlstudy", "base": "tiny.yaml", "out": str(tmp / "studies"), "seeds": [0, 1],
             "variants": {"a": [], "b": ["optim.lr=0.003"]}}
    (tmp / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return tmp / "study.yaml"


def _sets(store: str) -> list[str]:
    return ['train.log_to=["mlflow"]', f"train.mlflow_uri={store}"]


def _rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader(open(run_dir / "metrics.csv")))


def _assert_one_parent_with_its_runs(study_dir: Path, store: str) -> None:
    """The parent run named like the study holds the study's params and files; each run is a child in the same
    experiment whose metric history is its metrics.csv."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    saved = json.loads((study_dir / "tracking.json").read_text())["mlflow"]
    parent = client.get_run(saved["run_id"])
    assert parent.info.run_name == "mlstudy" and parent.info.status == "FINISHED"
    assert client.get_experiment(parent.info.experiment_id).name == "mlstudy"
    assert json.loads(parent.data.params["study.variants"]) == ["a", "b"]
    assert json.loads(parent.data.params["study.seeds"]) == [0, 1]
    assert json.loads(parent.data.params["variant.b.set"])[-1] == "optim.lr=0.003"
    assert parent.data.tags["cnnlab.study_dir"] == str(study_dir.resolve())
    table = json.loads((study_dir / "study.json").read_text())
    a_row = next(r for r in table["rows"] if r["variant"] == "a")
    assert parent.data.metrics["a/dice_mean_mean"] == pytest.approx(a_row["stats"]["dice_mean"]["mean"], rel=1e-12)
    files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"table.md", "table.csv", "study.json", "plan.json", "study.yaml"} <= files

    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.run_name.rsplit("-", 2)[0] for c in children) == sorted(RUNS)
    for child in children:
        assert child.info.status == "FINISHED"
        run_dir = Path(child.data.tags["cnnlab.run_dir"])
        assert run_dir == find_run_dir(study_dir / "runs", child.info.run_name.rsplit("-", 2)[0]).resolve()
        rows = _rows(run_dir)
        name = child.info.run_name.rsplit("-", 2)[0]  # e.g. b__seed1: its variant and seed as tags to group by
        assert (child.data.tags["cnnlab.variant"], child.data.tags["cnnlab.seed"]) == tuple(name.split("__seed"))
        assert child.data.tags["cnnlab.grid"] == "-"
        for column in COLUMNS:
            history = sorted(client.get_metric_history(child.info.run_id, scalar_tag(column)), key=lambda m: m.step)
            assert [m.step for m in history] == [int(r["epoch"]) for r in rows], column
            assert [m.value for m in history] == pytest.approx([float(r[column]) for r in rows], rel=1e-12), column
        summary = json.loads((run_dir / "summary.json").read_text())
        assert child.data.metrics["final/dice_mean"] == pytest.approx(summary["metrics"]["dice_mean"], rel=1e-12)


@pytest.mark.slow  # MLflow's store migrations and 4 runs that each log to it: about 30 s on a busy 2-core CPU
def test_a_sequential_study_is_one_parent_run_with_its_runs_nested(study_file: Path, store: str, tmp_path: Path):
    from mlflow import MlflowClient

    from cnnlab.cli import main

    sets = [a for s in _sets(store) for a in ("--set", s)]
    assert main(["study", str(study_file), *sets, "--out", str(tmp_path)]) == 0
    (study_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    _assert_one_parent_with_its_runs(study_dir, store)
    run_id = json.loads((study_dir / "tracking.json").read_text())["mlflow"]["run_id"]
    files = {f.path for f in MlflowClient(tracking_uri=store).list_artifacts(run_id)}
    assert {"report.md", "report.html"} <= files   # written by the CLI after the study, then logged
    resume_study(study_dir)                          # every run kept: the same parent, ended again, no new runs
    assert json.loads((study_dir / "tracking.json").read_text())["mlflow"]["run_id"] == run_id
    _assert_one_parent_with_its_runs(study_dir, store)


@pytest.mark.slow  # worker processes import MLflow and torch's compiler once each: about 40 s
def test_workers_nest_their_runs_under_the_study(study_file: Path, store: str, tmp_path: Path):
    study_dir = run_study(study_file, _sets(store), out=tmp_path, workers=2)
    _assert_one_parent_with_its_runs(study_dir, store)


def test_runs_logging_to_two_stores_are_refused_before_the_study_folder(study_file: Path, tmp_path: Path):
    study = yaml.safe_load(study_file.read_text())
    study["base"] = str(study_file.parent / "tiny.yaml")
    study["variants"]["b"].append(f"train.mlflow_uri=sqlite:///{tmp_path / 'b.db'}")  # a variant's own store
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError, match=r"would log to 2 MLflow stores .* one parent run in one store"):
        run_study(tmp_path / "two.yaml", ['train.log_to=["mlflow"]', f"train.mlflow_uri=sqlite:///{tmp_path}/a.db"],
                  out=tmp_path / "s")
    assert not (tmp_path / "s").exists() and not (tmp_path / "a.db").exists()


def test_the_store_is_the_runs_own_and_none_without_mlflow(study_file: Path, monkeypatch):
    from cnnlab.study.mlflow_parent import study_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert study_store(Path("/s/x"), load_study(study_file)) is None
    plan = load_study(study_file, ['train.log_to=["mlflow"]'])
    assert study_store(Path("/s/x"), plan) == "sqlite:////s/x/runs/mlflow.db"   # beside the runs, as for a run
