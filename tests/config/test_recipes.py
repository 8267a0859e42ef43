"""Every shipped recipe loads and builds its model; every shipped study plans all its runs; every shipped tune space
(`*_space.yaml`) is checked against the recipe its header names."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cnnlab.config import load_recipe
from cnnlab.models import build_model, check_model_params
from cnnlab.study.plan import load_study

ROOT = Path(__file__).resolve().parents[2] / "recipes"
SPACES = sorted(ROOT.rglob("*_space.yaml"))  # cnnlab tune --space files: recipe keys with ranges
FILES = [p for p in sorted(ROOT.rglob("*.yaml")) if p not in SPACES]
STUDIES = [p for p in FILES if "variants" in (yaml.safe_load(p.read_text()) or {})]
RECIPES = [p for p in FILES if p not in STUDIES]
GREY = {"mnist", "fashion_mnist", "digits", "endovis_colorization"}
DOWNLOADS = {"vgg16", "resnet18", "resnet34", "fcn_vgg16", "fcn_resnet34"}  # torchvision 'imagenet' = a download


def test_the_recipe_folder_is_found():
    assert len(RECIPES) > 50 and len(STUDIES) >= 8


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_loads_and_builds_its_model(path: Path):
    r = load_recipe(path)
    params = dict(r.model.params)
    if r.model.name in DOWNLOADS and params.get("weights") == "imagenet":
        params["weights"] = "none"  # offline here; the local-file path is tested in test_fcn_models/test_transfer
    if r.model.name == "vgg16":  # 134M parameters, 2 s to build: its keys are checked here, building in test_transfer
        check_model_params(r.model.name, params)
        return
    size = tuple(r.data.size or ((28, 28) if r.task == "classification" else (64, 64)))
    outputs = 3 if r.task == "colorization" else 4
    model = build_model(r.model.name, 1 if r.data.format in GREY else 3, outputs, size, params)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_study_plans_every_run(path: Path):
    plan = load_study(path)
    raw = yaml.safe_load(path.read_text())
    grid = 1
    for values in (raw.get("grid") or {}).values():
        grid *= len(values)
    expected = len(raw.get("stages") or {}) + len(raw["variants"]) * len(raw.get("seeds", [0])) * grid
    assert len(plan.runs) == expected and plan.baseline in plan.variants


@pytest.mark.parametrize("path", SPACES, ids=lambda p: str(p.relative_to(ROOT)))
def test_tune_space_is_checked_against_its_recipe(path: Path):
    from cnnlab.config import read_yaml
    from cnnlab.study.tune_space import load_space

    recipe = ROOT.parent / path.read_text().split("cnnlab tune ", 1)[1].split()[0]  # the command in its header
    keys = [line.split(":", 1)[0] for line in path.read_text().splitlines() if line and not line.startswith("#")]
    space = load_space(path, read_yaml(recipe))
    assert [p.key for p in space.params] == [k for k in keys if k != "tune"]
