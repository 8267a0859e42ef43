"""Issue 29: a name ending in a newline is refused (the pattern's `$` matched before a final newline, so a run
folder with a newline in its name was made and the LaTeX header comment spilled onto a live line)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cnnlab.config import load_recipe
from cnnlab.errors import ConfigError
from cnnlab.study.plan import find_run_dir, load_study
from conftest import tiny_recipe


def test_a_run_name_with_a_trailing_newline_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tmp_path, tmp_path / "runs")))
    with pytest.raises(ConfigError, match="plain folder name"):
        load_recipe(recipe, ['name="x\\n"'])
    raw = tiny_recipe(tmp_path, tmp_path / "runs")
    raw["name"] = "x\n"
    recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="plain folder name"):
        load_recipe(recipe)
    assert load_recipe(recipe, ["name=x"]).name == "x"


@pytest.mark.parametrize("where", ["name", "variant"])
def test_study_names_with_a_trailing_newline_are_refused(tmp_path, where):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_recipe(tmp_path, tmp_path / "runs")))
    study = {"name": "s\n" if where == "name" else "s", "base": "tiny.yaml", "out": str(tmp_path / "studies"),
             "variants": {"a\n" if where == "variant" else "a": []}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError, match="letters, digits"):
        load_study(path)


def test_find_run_dir_wants_the_whole_folder_name(tmp_path: Path):
    (tmp_path / "a-20260101-000000\n").mkdir()
    assert find_run_dir(tmp_path, "a") is None
    (tmp_path / "a-20260101-000000").mkdir()
    assert find_run_dir(tmp_path, "a") == tmp_path / "a-20260101-000000"
