"""Recipe loading: unknown keys with a suggestion, types, ranges, inheritance and overrides."""
from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.config import load_recipe, recipe_from_dict
from cnnlab.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_override_types():
    r = recipe_from_dict({}, ["train.epochs=3", "optim.lr=1e-4", "data.size=[64, 80]", "model.params.width=8"])
    assert r.train.epochs == 3 and r.optim.lr == pytest.approx(1e-4)
    assert r.data.size == [64, 80] and r.model.params == {"width": 8}


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'.*did you mean 'epochs'"):
        recipe_from_dict({"train": {"epoch": 3}})


@pytest.mark.parametrize("override, key", [("optim.lr=-0.1", "optim.lr"), ("train.batch_size=0", "train.batch_size"),
                                           ("data.label_fraction=1.5", "data.label_fraction"),
                                           ("train.epochs=two", "train.epochs"), ("train.channels_last=maybe",
                                                                                  "train.channels_last"),
                                           ("augment.elastic=-2", "augment.elastic")])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        recipe_from_dict({}, [override])


def test_base_inheritance_of_course_recipes():
    c = load_recipe(REPO / "recipes/endovis/c_tuned.yaml")
    assert c.augment.hflip and c.loss.name == "dice_ce" and c.model.params["width"] == 24
    assert c.model.params["depth"] == 4  # inherited from (a) through (b)


def test_a_child_with_another_model_does_not_inherit_the_parents_model_params(tmp_path: Path):
    import yaml

    parent = {"name": "p", "task": "classification", "data": {"format": "digits", "root": "."},
              "model": {"name": "course_cnn", "params": {"pool_before_relu": True}, "init": None}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(parent))
    (tmp_path / "same.yaml").write_text(yaml.safe_dump({"base": "p.yaml", "model": {"params": {"dropout": 0.2}}}))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"base": "p.yaml", "model": {"name": "mlp"}}))
    assert load_recipe(tmp_path / "same.yaml").model.params == {"pool_before_relu": True, "dropout": 0.2}
    other = load_recipe(tmp_path / "other.yaml")
    assert other.model.name == "mlp" and other.model.params == {}


def test_missing_and_invalid_recipe_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \(line"):
        load_recipe(bad)
