"""`cnnlab boundary`: side-by-side boundary metrics of trained binary runs agree with each run's own summary."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab.cli import main
from conftest import train_binary_glas


@pytest.fixture(scope="module")
def glas_run(tmp_path_factory) -> Path:
    return train_binary_glas(tmp_path_factory.mktemp("bc"), "noskip")


def test_boundary_metrics_match_the_run_summary(glas_run: Path, tmp_path: Path, capsys):
    from cnnlab.inference.boundary import compare_boundaries

    path, metrics = compare_boundaries([glas_run], tmp_path / "b.png")
    own = json.loads((glas_run / "summary.json").read_text())["binary"]
    (got,) = metrics.values()
    for key in ("per_image_dice_mean", "boundary_dice_mean", "boundary_f1_mean"):
        assert got[key] == pytest.approx(own[key], abs=1e-9), key
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["boundary", str(glas_run), str(glas_run), "--out", str(tmp_path / "c.png")]) == 0
    assert "boundary F1" in capsys.readouterr().out
