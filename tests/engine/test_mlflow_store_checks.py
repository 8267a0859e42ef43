"""Issue 29: an MLflow store that cannot be reached or written is one line at the recipe check, before any data is
read or run dir made (before: minutes of silence after `data:` for a server that does not answer, ~107 s of
retries for a read-only sqlite store, then an empty run dir)."""
from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest
import yaml

from cnnlab.cli import main
from cnnlab.config import recipe_from_dict
from cnnlab.engine.tracker_check import check_tracking_store
from cnnlab.errors import ConfigError
from conftest import tiny_recipe
from test_one_line_errors import _read_only


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def _recipe(tmp_path: Path, uri: str) -> dict:
    return tiny_recipe(tmp_path / "data", tmp_path / "runs", train={"log_to": ["mlflow"], "mlflow_uri": uri})


def test_a_server_that_refuses_is_one_line_before_any_run_dir(tmp_path: Path, capsys):
    if importlib.util.find_spec("mlflow") is None:
        pytest.skip("the mlflow extra is not installed")
    uri = f"http://127.0.0.1:{_closed_port()}"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tmp_path, uri)))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"MLflow tracking server {uri}: cannot connect" in err and "train.log_to=[]" in err
    assert not (tmp_path / "runs").exists()


def test_a_read_only_sqlite_store_is_one_line(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    r = recipe_from_dict(_recipe(tmp_path, f"sqlite:///{store / 'mlflow.db'}"))
    check_tracking_store(r)  # writable: passes
    with _read_only(store), pytest.raises(ConfigError, match=r"store sqlite:///.*mlflow.db: .*store cannot be "
                                                              r"written"):
        check_tracking_store(r)


def test_no_mlflow_in_log_to_checks_nothing(tmp_path: Path):
    r = recipe_from_dict(tiny_recipe(tmp_path, tmp_path / "runs", train={"mlflow_uri": "http://127.0.0.1:9"}))
    check_tracking_store(r)
