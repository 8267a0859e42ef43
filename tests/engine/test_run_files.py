"""A run's files have one owner (issue 32): engine/run_files.py reads summary.json, engine/checkpoint.py loads
best.pt and last.pt, and no other module does either on its own (checked on the real tree and shown to bite); the
typed checkpoint reader gives back what was saved."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import torch

from cnnlab.config import asdict, recipe_from_dict
from cnnlab.engine.checkpoint import atomic_save, read_checkpoint
from cnnlab.engine.fit import TrainState
from cnnlab.engine.run_files import has_summary, read_summary, require_summary, write_summary_file
from cnnlab.engine.steps import Normalizer
from cnnlab.errors import CnnlabError
from conftest import tiny_recipe

PKG = Path(__file__).resolve().parents[2] / "src" / "cnnlab"
SUMMARY_OWNER = "engine/run_files.py"
# torch.load: the run's checkpoints in engine/checkpoint.py; models/weights.py loads pre-trained weight files
# (ImageNet and the like, model.init), which are not a run's checkpoint.
TORCH_LOAD_OK = {"engine/checkpoint.py", "models/weights.py"}


def _is_call(node: ast.AST, module: str, names: tuple[str, ...]) -> bool:
    f = node.func if isinstance(node, ast.Call) else None
    return (isinstance(f, ast.Attribute) and f.attr in names and isinstance(f.value, ast.Name)
            and f.value.id == module)


def _mentions_summary(node: ast.AST) -> bool:
    return any((isinstance(n, ast.Constant) and isinstance(n.value, str) and "summary" in n.value)
               or (isinstance(n, ast.Name) and "summary" in n.id.lower()) for n in ast.walk(node))


def own_reads(pkg: Path) -> list[str]:
    """Every place outside the owners that loads a checkpoint with torch.load, parses summary.json with json (named
    by the literal or by run_files.SUMMARY), or spells its name as a literal: a part that needs the file (an
    artifact upload) takes run_files.SUMMARY, and reads it with run_files.read_summary."""
    found = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{rel}:{getattr(node, 'lineno', '?')}"
            if _is_call(node, "torch", ("load",)) and rel not in TORCH_LOAD_OK:
                found.append(f"{where} torch.load")
            if rel == SUMMARY_OWNER:
                continue
            if _is_call(node, "json", ("load", "loads")) and _mentions_summary(node):
                found.append(f"{where} json of summary.json")
            if isinstance(node, ast.Constant) and node.value == "summary.json":
                found.append(f"{where} 'summary.json'")
    return found


def test_only_the_owners_read_summary_json_and_load_checkpoints():
    assert own_reads(PKG) == []


def test_the_check_bites(tmp_path: Path):
    """Each way a part could read a run's files on its own is named, file and line."""
    pkg = tmp_path / "cnnlab"
    shutil.copytree(PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    tables, predict, compare = (pkg / "report" / "tables.py", pkg / "inference" / "predict.py",
                                pkg / "report" / "compare.py")
    tables.write_text(tables.read_text() + "\n\ndef _own(run_dir):\n"
                      "    return json.loads((run_dir / 'summary.json').read_text())\n")
    predict.write_text(predict.read_text() + "\n\ndef _own(path):\n"
                       "    return torch.load(path, weights_only=True)\n")
    compare.write_text(compare.read_text() + "\n\ndef _own(run_dir):\n"
                       "    return json.load(open(run_dir / SUMMARY))\n")
    found = own_reads(pkg)
    n_tables = len(tables.read_text().splitlines())
    assert f"report/tables.py:{n_tables} json of summary.json" in found
    assert f"report/tables.py:{n_tables} 'summary.json'" in found
    assert f"inference/predict.py:{len(predict.read_text().splitlines())} torch.load" in found
    assert f"report/compare.py:{len(compare.read_text().splitlines())} json of summary.json" in found
    assert len(found) == 4


def test_summary_round_trip_and_the_unfinished_run(tmp_path: Path):
    assert read_summary(tmp_path) is None and not has_summary(tmp_path)
    with pytest.raises(CnnlabError, match="no summary.json, the run has not finished") as e:
        require_summary(tmp_path, "resume it")
    assert e.value.hint == "resume it"
    write_summary_file(tmp_path, {"name": "x", "metrics": {"dice_mean": 0.5}})
    assert has_summary(tmp_path) and require_summary(tmp_path, "") == {"name": "x", "metrics": {"dice_mean": 0.5}}


def test_the_typed_checkpoint_gives_back_what_was_saved(tmp_path: Path, endovis_root: Path):
    recipe = recipe_from_dict(tiny_recipe(endovis_root, tmp_path))
    state = TrainState(epoch=3, best=0.5, best_epoch=2, history=[{"epoch": 1}])
    ck = {"model": {"w": torch.ones(2)}, "optimizer": {"state": {}}, "state": vars(state), "recipe": asdict(recipe),
          "norm": {"mean": [0.25, 0.5], "std": [0.125, 1.0]}, "class_names": ["bg", "fg"], "in_channels": 2,
          "input_size": [32, 48], "mask_encoding": {"kind": "grey_levels", "values": [0, 7]}}
    atomic_save(ck, tmp_path / "last.pt")
    got = read_checkpoint(tmp_path / "last.pt")
    assert got.norm == Normalizer((0.25, 0.5), (0.125, 1.0))
    assert got.train_state == state and got.best_epoch == 2 and got.scaler is None
    assert got.input_size == (32, 48) and got.in_channels == 2 and got.class_names == ["bg", "fg"]
    assert torch.equal(got.weights["w"], torch.ones(2))
    assert got.recipe() == recipe and got.recipe(["train.epochs=9"]).train.epochs == 9
    encoding, notes = got.encoding(got.recipe())
    assert (encoding.kind, encoding.values, notes) == ("grey_levels", [0, 7], [])
