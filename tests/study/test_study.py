"""Studies end to end on tiny synthetic data (table, failures, resume, stage outputs), the study file checks, and
the statistics behind the table (oracles: hand computation, the stdlib statistics module, scipy if present)."""
from __future__ import annotations

import argparse
import base64
import csv
import json
import math
import shutil
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.report.build import write_study_report
from cnnlab.study.plan import load_study, read_failures
from cnnlab.study.runner import resume_study, run_study
from cnnlab.study.stats import excludes_zero, paired_difference, sample_std, t_quantile_975
from conftest import tiny_recipe

PNG = b"\x89PNG\r\n\x1a\n"


def _write_study(tmp: Path, root: Path, **extra) -> Path:
    """A tiny recipe and a study over it: stage 'pre', variants base / bad (diverges) / init (from the stage)."""
    recipe = tiny_recipe(root, tmp / "unused")
    recipe["train"]["epochs"] = 1
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    study = {"name": "tiny-study", "base": "tiny.yaml", "out": str(tmp / "studies"), "seeds": [0, 1],
             "stages": {"pre": []},
             "variants": {"base": [],
                          "bad": ["optim.lr=1e30", "loss.name=cross_entropy", "train.precision=fp32"],
                          "init": ["model.init={stage:pre}", "optim.lr=0.003"]}, **extra}
    (tmp / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return tmp / "study.yaml"


@pytest.fixture(scope="module")
def study_dir(endovis_root: Path, tmp_path_factory) -> Path:
    # per-run figures (overlays) cost most of a tiny run's time and are tested with training itself; the study's
    # own figures come from metrics.csv and summary.json and are all drawn here
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("cnnlab.engine.summary.write_run_figures", lambda *a, **k: [])
        folder = run_study(_write_study(tmp_path_factory.mktemp("study"), endovis_root))
    write_study_report(folder)  # what `cnnlab study` does after the runs (cnnlab.cli.study)
    yield folder


def _summary(study: Path, run: str) -> dict:
    (d,) = [p for p in (study / "runs").glob(f"{run}-*") if (p / "summary.json").is_file()]
    return json.loads((d / "summary.json").read_text())


def _rows(study: Path) -> dict[str, dict]:
    return {r["variant"]: r for r in json.loads((study / "study.json").read_text())["rows"]}


def test_table_holds_mean_and_sample_std_over_seeds(study_dir: Path):
    rows = _rows(study_dir)
    assert list(rows) == ["base", "bad", "init"]          # one row per variant (no grid)
    for variant in ("base", "init"):
        for metric in ("dice_mean", "dice_mean_foreground", "soft_dice_batch_mean", "pixel_accuracy"):
            vals = [_summary(study_dir, f"{variant}__seed{s}")["metrics"][metric] for s in (0, 1)]
            st = rows[variant]["stats"][metric]
            assert st["n"] == 2
            assert st["mean"] == pytest.approx(statistics.mean(vals), abs=1e-12)
            assert st["std"] == pytest.approx(statistics.stdev(vals), abs=1e-12)
    table = list(csv.DictReader(open(study_dir / "table.csv")))
    assert [r["variant"] for r in table] == ["base", "bad", "init"]
    base = rows["base"]["stats"]["dice_mean"]
    assert float(table[0]["dice_mean_mean"]) == pytest.approx(base["mean"])
    md = (study_dir / "table.md").read_text()
    assert f"{base['mean']:.4f} ± {base['std']:.4f}" in md
    assert "Dice (strict)" in md and "soft Dice/batch (course)" in md and "strict" in md.split("**")[0]


def test_difference_to_baseline_is_paired_over_seeds(study_dir: Path):
    d = _rows(study_dir)["init"]["vs_baseline"]["dice_mean"]
    diffs = [_summary(study_dir, f"init__seed{s}")["metrics"]["dice_mean"]
             - _summary(study_dir, f"base__seed{s}")["metrics"]["dice_mean"] for s in (0, 1)]
    mean = (diffs[0] + diffs[1]) / 2
    half = 12.7062 * abs(diffs[0] - diffs[1]) / math.sqrt(2) / math.sqrt(2)  # sd of two values = |a-b|/sqrt(2)
    assert d["n"] == 2 and d["seeds"] == [0, 1]
    assert d["mean"] == pytest.approx(mean, abs=1e-12)
    assert (d["low"], d["high"]) == (pytest.approx(mean - half, abs=1e-9), pytest.approx(mean + half, abs=1e-9))
    assert _rows(study_dir)["base"]["vs_baseline"] is None


def test_failing_run_is_marked_and_the_study_goes_on(study_dir: Path):
    bad = _rows(study_dir)["bad"]
    assert bad["n_finished"] == 0 and bad["n_planned"] == 2
    assert set(bad["failed"]) == {"0", "1"} and all("loss became nan" in m for m in bad["failed"].values())
    assert _rows(study_dir)["init"]["n_finished"] == 2      # runs after the failures still ran
    assert "0/2 (2 FAILED)" in (study_dir / "table.md").read_text()
    assert set(read_failures(study_dir)) == {"bad__seed0", "bad__seed1"}


def test_stage_output_is_the_init_of_dependent_runs(study_dir: Path):
    (stage,) = (study_dir / "runs").glob("stage__pre-*")
    (run,) = (study_dir / "runs").glob("init__seed0-*")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["init"] == str(stage / "best.pt")
    assert cfg["optim"]["lr"] == 0.003 and cfg["train"]["seed"] == 0 and cfg["train"]["epochs"] == 1
    transfer = json.loads((run / "transfer.json").read_text())
    assert transfer["loaded"] and not transfer["shape_mismatch"]   # same architecture: everything fits


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def test_study_report_embeds_its_figures(study_dir: Path):
    parser = _Images()
    parser.feed((study_dir / "report.html").read_text())
    assert len(parser.srcs) == len(list((study_dir / "figures").glob("*.png"))) == 3
    embedded = set()
    for src in parser.srcs:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        embedded.add(base64.b64decode(data))
    assert all(b.startswith(PNG) for b in embedded)
    assert embedded == {p.read_bytes() for p in (study_dir / "figures").glob("*.png")}
    md = (study_dir / "report.md").read_text()
    assert "(figures/headline.png)" in md and "(figures/differences.png)" in md and "(figures/loss_curves.png)" in md


def test_resume_keeps_finished_runs_and_redoes_the_rest(study_dir: Path, monkeypatch):
    monkeypatch.setattr("cnnlab.engine.summary.write_run_figures", lambda *a, **k: [])
    runs = study_dir / "runs"
    finished = {p: (p / "summary.json").stat().st_mtime_ns for p in runs.iterdir() if (p / "summary.json").is_file()}
    (interrupted,) = runs.glob("base__seed1-*")        # looks interrupted after its last epoch: last.pt, no summary
    (interrupted / "summary.json").unlink()
    (lost,) = runs.glob("init__seed1-*")               # never started
    lost_metrics = _summary(study_dir, "init__seed1")["metrics"]
    shutil.rmtree(lost)
    before = set(runs.iterdir())
    resume_study(study_dir)
    after = set(runs.iterdir())
    new = after - before
    assert {p.name.split("-")[0] for p in new} == {"init__seed1", "bad__seed0", "bad__seed1"}
    for p, mtime in finished.items():
        if p not in (interrupted, lost):
            assert (p / "summary.json").stat().st_mtime_ns == mtime, p.name   # not redone
    assert (interrupted / "summary.json").is_file()                      # resumed in its own folder
    assert _summary(study_dir, "init__seed1")["metrics"] == lost_metrics   # re-run reproduces it on CPU
    assert _rows(study_dir)["init"]["n_finished"] == 2


def test_cli_registers_study_and_report(study_dir: Path, capsys):
    from cnnlab.cli.study import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(["study", "--resume", str(study_dir), "--set", "train.epochs=3"])
    with pytest.raises(CnnlabError, match="--resume takes only the study folder"):
        a.func(a)
    (study_dir / "report.html").unlink()
    a = parser.parse_args(["report", str(study_dir)])
    assert a.func(a) == 0 and (study_dir / "report.html").is_file()
    with pytest.raises(CnnlabError, match="neither a run folder"):
        a = parser.parse_args(["report", str(study_dir / "figures")])
        a.func(a)


def test_plan_order_names_and_overrides(tmp_path: Path, endovis_root: Path):
    path = _write_study(tmp_path, endovis_root, grid={"data.label_fraction": [0.5, 1.0]},
                        common=["train.batch_size=2"], baseline="init")
    plan = load_study(path, ["data.val=validation"])
    names = [r.name for r in plan.runs]
    assert names[:3] == ["stage__pre", "base__label_fraction=0.5__seed0", "bad__label_fraction=0.5__seed0"]
    assert len(names) == 1 + 3 * 2 * 2 and names[-1] == "init__label_fraction=1.0__seed1"
    run = plan.runs[-1]
    assert run.overrides == ["train.batch_size=2", "data.val=validation", "model.init={stage:pre}",
                             "optim.lr=0.003", "data.label_fraction=1.0", "train.seed=1"]
    assert plan.baseline == "init" and plan.stages == ["pre"]


@pytest.mark.parametrize("extra, message", [
    ({"variant": {"a": []}}, "unknown study key 'variant'"),
    ({"variants": {"a": ["model.init={stage:nope}"]}}, "'{stage:nope}' names no stage"),
    ({"variants": {"a": ["train.epoch=3"]}}, "study run a__seed0: unknown config key 'train.epoch'"),
    ({"variants": {"a__b": []}}, "no '__'"),
    ({"seeds": [0, 0]}, "distinct integers"),
    ({"baseline": "nope"}, "names no variant"),
    ({"grid": {"data.label_fraction": 0.5}}, "non-empty lists"),
])
def test_bad_study_files_fail_before_training(tmp_path: Path, endovis_root: Path, extra, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_study(_write_study(tmp_path, endovis_root, **extra))
    assert not (tmp_path / "studies").exists()


def test_paired_difference_by_hand():
    a, b = [0.80, 0.75, 0.90], [0.70, 0.72, 0.85]          # differences 0.10, 0.03, 0.05
    d = paired_difference(a, b)
    sd = math.sqrt((0.04 ** 2 + 0.03 ** 2 + 0.01 ** 2) / 2)  # around the mean 0.06
    half = 4.3027 * sd / math.sqrt(3)
    assert d.n == 3 and d.mean == pytest.approx(0.06) and d.std == pytest.approx(sd)
    assert d.low == pytest.approx(0.06 - half) and d.high == pytest.approx(0.06 + half)
    assert d.low == pytest.approx(-0.02957, abs=1e-5) and not excludes_zero(d.low, d.high)
    assert excludes_zero(0.01, 0.2) and excludes_zero(-0.3, -0.1) and not excludes_zero(None, None)
    one = paired_difference([0.5], [0.4])
    assert one.mean == pytest.approx(0.1) and math.isnan(one.low) and one.as_dict()["low"] is None
    assert math.isnan(sample_std([1.0])) and sample_std([1.0, 3.0]) == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


# scipy.stats.t.ppf(0.975, df), rounded to 6 decimals (written out: importing scipy costs seconds)
EXACT_T975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 9: 2.262157, 29: 2.04523, 30: 2.042272,
              35: 2.030108, 59: 2.000995, 60: 2.000298, 100: 1.983972, 120: 1.97993, 500: 1.96472}


def test_t_quantiles_match_scipy_and_never_narrow():
    for df, exact in EXACT_T975.items():
        assert t_quantile_975(df) >= exact - 1e-4
        assert t_quantile_975(df) <= exact * 1.011
        if df <= 30 or df in (60, 120):
            assert t_quantile_975(df) == pytest.approx(exact, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_run_level_out_override_is_refused(tmp_path):
    from cnnlab.errors import ConfigError
    from cnnlab.study.plan import load_study

    study = tmp_path / "s.yaml"
    study.write_text("variants: {a: []}\n")
    with pytest.raises(ConfigError, match="places and names its runs itself"):
        load_study(study, ["out=elsewhere"])


def test_a_classification_study_states_the_accuracy_convention_not_dice(tmp_path: Path):
    recipe = {"name": "digits", "task": "classification", "data": {"format": "digits", "root": ".", "train": "train",
              "test": "test", "val_fraction": 0.1}, "model": {"name": "mlp"}, "loss": {"name": "cross_entropy"},
              "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 1, "progress": False}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    study = {"name": "cls", "base": "r.yaml", "out": str(tmp_path / "s"), "seeds": [0], "variants": {"a": []}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("cnnlab.engine.summary.write_run_figures", lambda *a, **k: [])
        folder = run_study(tmp_path / "study.yaml")
    results = json.loads((folder / "study.json").read_text())
    assert results["task"] == "classification" and results["conventions"].startswith("accuracy")
    md = (folder / "table.md").read_text()
    assert "accuracy = `accuracy`" in md and "Dice" not in md
