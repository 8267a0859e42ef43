"""The parts of cnnlab depend one way (pyproject's [tool.importlinter] layers contract), checked on the real tree
and shown to catch an upward import; no part may hide an import inside a function to dodge that order."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")
# Command modules import torch-heavy code when the command runs (importing torch takes seconds, `--help` should not
# wait); that is laziness for start-up time, not a cycle, and the layers contract still sees those imports.
# The package's own __init__.py is the same kind of laziness: `import cnnlab` (which `cnnlab --help` runs) gives the
# Python API (cnnlab.train ...) by importing cnnlab.api on first use.
LAZY_OK = {"cli", "__init__.py"}


def _lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is part of the dev install (make test)")
def test_the_layers_contract_holds_on_the_real_tree() -> None:
    result = _lint(ROOT / "src", ROOT)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is part of the dev install (make test)")
def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """A model that imports the engine (the knot issue 19 untied) is reported, naming both modules."""
    shutil.copytree(ROOT / "src" / "cnnlab", tmp_path / "src" / "cnnlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    blocks = tmp_path / "src" / "cnnlab" / "models" / "blocks.py"
    blocks.write_text(blocks.read_text() + "\n\ndef _late():\n    from cnnlab.engine import run  # noqa: F401\n")
    result = _lint(tmp_path / "src", tmp_path)
    assert result.returncode != 0
    assert "cnnlab.models.blocks -> cnnlab.engine.run" in result.stdout


def _function_level_cnnlab_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("cnnlab"):
                    found.append(f"{path.name}:{inner.lineno} {inner.module}")
                if isinstance(inner, ast.ImportFrom) and inner.level > 0:
                    found.append(f"{path.name}:{inner.lineno} relative import")
    return found


def test_no_part_imports_cnnlab_inside_a_function() -> None:
    pkg = ROOT / "src" / "cnnlab"
    offenders = []
    for path in sorted(pkg.rglob("*.py")):
        if path.relative_to(pkg).parts[0] in LAZY_OK:
            continue
        offenders += _function_level_cnnlab_imports(path)
    assert offenders == []


def test_every_test_folder_is_on_pytests_path():
    """tests/ mirrors the parts; a folder left out of pyproject's pythonpath breaks the imports of test modules
    that use another's fixtures (an ImportError at collection, far from its cause)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest itself depends on tomli there
        import tomli as tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["pythonpath"])
    folders = {f"tests/{d.name}" for d in (ROOT / "tests").iterdir() if d.is_dir() and any(d.glob("test_*.py"))}
    assert folders and folders <= listed, sorted(folders - listed)
