"""docs/python.md's walk-through runs: every ```python block of the page, in order, in one namespace, from an empty
folder (so the page cannot go stale); README's "Use from Python" example names only what the API has."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

import cnnlab

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


@pytest.mark.slow  # cnnlab new and two epochs of its recipe (~5 s on a busy core)
def test_the_python_walk_through_runs(tmp_path, monkeypatch, capsys):
    """The timing of `new` is stood in (as in test_new_recipe.py: real step timing takes tens of seconds on a busy
    CPU and is tested in test_new_own_folders.py); everything else runs as written."""
    import cnnlab.new.recipe as nr
    from cnnlab.new.estimate import StepTimes

    monkeypatch.setattr(nr, "measure_steps", lambda r, c, k, batch: StepTimes(0.05, 0.01, batch, 1, "cpu, fp32"))
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(ROOT / "docs" / "python.md")
    assert len(blocks) == 7
    ns: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/python.md block {i + 1}", "exec"), ns)
    run = ns["run"]
    assert isinstance(run, cnnlab.Run) and (run.dir / "report.html").is_file()
    assert Path(tmp_path / "recipe.yaml").is_file() and run.recipe.train.epochs == 2
    assert len(run.history) == 2
    pred = ns["pred"]
    assert pred.mask.shape == (48, 48) and set(np.unique(pred.mask)) <= {0, 255}  # the masks' own 0/255
    assert Image.open(tmp_path / "overlay.png").size == (720, 240)
    assert ns["result"]["split"] == "val"


def test_the_readme_example_uses_only_the_api():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    code = _blocks_of(section)
    assert code, "README: 'Use from Python' has a python block"
    names = set(re.findall(r"cnnlab\.(\w+)", code)) | set(re.findall(r"run\.(\w+)", code))
    assert names <= set(cnnlab.__all__) | {"metrics", "predict", "evaluate", "report", "dir", "history"}
    compile(code, "README.md", "exec")  # valid Python


def _blocks_of(text: str) -> str:
    return "\n".join(BLOCK.findall(text))
