"""Watching a run: plain progress lines without a terminal, events.jsonl, TensorBoard and MLflow round trips."""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from cnnlab.config import asdict, recipe_from_dict
from cnnlab.engine import checkpoint as checkpoint_mod
from cnnlab.engine import progress
from cnnlab.engine.progress import Bars
from cnnlab.engine.run import Interrupted, resume, train
from cnnlab.engine.run_files import read_events
from cnnlab.errors import ConfigError
from conftest import interrupt_after_first_last_pt, tiny_recipe

ANSI = "\x1b"


def _csv_rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader(open(run_dir / "metrics.csv")))


def _plain(clock: list[float]) -> tuple[Bars, io.StringIO]:
    out = io.StringIO()
    return Bars(Console(file=out, width=200), show=True, terminal=False), out


def test_plain_lines_come_each_tenth_or_30_s_never_within_5_s_and_not_at_the_end(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress, "_now", lambda: clock[0])
    bars, out = _plain(clock)
    with bars.bar("epoch 1/2", 100) as bar:
        # (time, images) -> line?  hand-worked with PLAIN_STEP 0.1, PLAIN_GAP_S 5, PLAIN_EVERY_S 30
        for t, n in [(1, 5),     # 5 %: under 5 s since the start -> no
                     (6, 10),    # 15 %: passed 10 %, 6 s after the start -> line 1 (next mark 20 %)
                     (7, 3),     # 18 %: 1 s after a line -> no
                     (12, 2),    # 20 %: reached 20 %, 6 s later -> line 2 (next mark 30 %)
                     (20, 1),    # 21 %: no new tenth, 8 s -> no
                     (43, 1),    # 22 %: no new tenth, but 31 s since line 2 -> line 3
                     (50, 78)]:  # 100 %: the last step prints nothing (the epoch line follows)
            clock[0] = t
            bar.advance(n, loss=0.5)
    lines = out.getvalue().splitlines()
    assert lines == ["  epoch 1/2: 15/100 images (15%), 2.5 img/s, ETA 0:34, loss 0.5000",
                     "  epoch 1/2: 20/100 images (20%), 1.7 img/s, ETA 0:48, loss 0.5000",
                     "  epoch 1/2: 22/100 images (22%), 0.5 img/s, ETA 2:32, loss 0.5000"]
    assert ANSI not in out.getvalue()


def test_plain_lines_of_a_phase_of_unknown_length_come_every_30_s(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress, "_now", lambda: clock[0])
    bars, out = _plain(clock)
    with bars.bar("reading data", None) as bar:
        for t in (10, 29, 31, 40, 60, 61.5):
            clock[0] = t
            bar.advance(1)
    assert out.getvalue().splitlines() == ["  reading data: 3 images, 0.1 img/s, 0:31 so far",
                                           "  reading data: 6 images, 0.1 img/s, 1:02 so far"]


def test_a_run_without_a_terminal_prints_bounded_plain_lines_in_every_phase(endovis_root, tmp_path, monkeypatch,
                                                                               capsys):
    """8 training images in steps of 1, 4 validation and 4 test images: with the 5 s gap removed, a line at each
    new tenth but not at the end: 7 per epoch, 3 per validation, 7 for the final 4 + 4 evaluated images."""
    monkeypatch.setattr(progress, "PLAIN_GAP_S", 0.0)
    r = recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs",
                                     train={"progress": True, "batch_size": 1, "eval_batch_size": 1}))
    train(r)
    out = capsys.readouterr().out
    assert ANSI not in out
    lines = out.splitlines()
    assert sum(ln.startswith("  epoch 1/2: ") for ln in lines) == 7
    assert sum(ln.startswith("  epoch 2/2: ") for ln in lines) == 7
    assert sum(ln.startswith("    validation: ") for ln in lines) == 6
    assert sum(ln.startswith("  testing best.pt on 'test': ") for ln in lines) == 7
    assert [ln[:11] for ln in lines if ln.startswith("epoch")] == ["epoch   1/2", "epoch   2/2"]
    assert lines[0] == "data: 8 train, 4 validation, 4 test images (3x48x64), read in " + lines[0].split(" in ")[-1]


_FIRST_LINE = """
import sys, importlib.abc
class Announce(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch":
            print("<torch imported>", flush=True)
        return None
sys.meta_path.insert(0, Announce())
from cnnlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # a fresh process imports torch and writes the report: about 15 s on a busy 2-core CPU
def test_cnnlab_train_says_what_it_does_before_importing_torch_and_pipes_get_no_control_codes(endovis_root,
                                                                                             tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(tiny_recipe(endovis_root, tmp_path / "runs", train={"progress": True})))
    proc = subprocess.run([sys.executable, "-c", _FIRST_LINE, "train", str(recipe)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"training tiny (segmentation, unet): reading {endovis_root} "
                        "(format endovis, splits train, validation, test)")
    assert lines[1] == "<torch imported>"
    assert ANSI not in proc.stdout + proc.stderr
    assert sum(ln.startswith("epoch ") for ln in lines) == 2


def test_events_follow_phases_and_epochs_like_metrics_csv_and_a_resume_appends(endovis_root, tmp_path,
                                                                                monkeypatch):
    r = recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs"))
    real_save = interrupt_after_first_last_pt(monkeypatch)
    with pytest.raises(Interrupted):
        train(r)
    monkeypatch.setattr(checkpoint_mod, "atomic_save", real_save)
    run_dir = next((tmp_path / "runs").iterdir())
    first = read_events(run_dir / "events.jsonl")
    assert first[-1]["event"] == "end" and first[-1]["status"] == "interrupted"
    resume(run_dir)
    events = read_events(run_dir / "events.jsonl")
    assert events[:len(first)] == first  # appended, nothing rewritten
    kinds = [e["event"] for e in events]
    assert kinds.count("start") == 2 and kinds.count("end") == 2
    assert [e["resumed_at_epoch"] for e in events if e["event"] == "run_dir"] == [None, 1]
    assert events[-1]["status"] == "finished"

    epochs = [e for e in events if e["event"] == "epoch"]
    rows = _csv_rows(run_dir)
    assert [e["epoch"] for e in epochs] == [1, 2] == [int(row["epoch"]) for row in rows]
    for e, row in zip(epochs, rows):
        for key, text in row.items():  # a class's IoU undefined on the split (in neither truth nor prediction):
            # null in the event, an empty cell in metrics.csv
            assert e[key] is None if text == "" else e[key] == pytest.approx(float(text), rel=1e-12), key
        assert e["steps"] == 2  # 8 training images in batches of 4
    assert [e["total_steps"] for e in epochs] == [2, 4]  # the resumed run counts on from events.jsonl

    ends = [e for e in events if e["event"] == "phase_end"]
    decode = [e for e in ends if e["phase"] == "decode"]
    assert [e["images"] for e in decode] == [16, 16]  # 8 + 4 + 4 images decoded, by each process
    assert [(e["epoch"], e["images"], e["steps"]) for e in ends if e["phase"] == "train"] == [(1, 8, 2), (2, 8, 2)]
    assert [(e["epoch"], e["images"]) for e in ends if e["phase"] == "validate"] == [(1, 4), (2, 4)]
    test = [e for e in ends if e["phase"] == "test"]
    assert len(test) == 1 and test[0]["images"] == 8 and test[0]["split"] == "test"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert next(e for e in events if e["event"] == "summary")["metrics"] == summary["metrics"]


def test_tensorboard_event_files_hold_metrics_csv_final_metrics_figures_and_hparams(endovis_root, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from cnnlab.engine.tracking import scalar_tag

    r = recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", train={"log_to": ["tensorboard"]}))
    run_dir = train(r)
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    rows = _csv_rows(run_dir)
    assert scalar_tag("val_dice_mean") == "val/dice_mean" and scalar_tag("lr") == "lr"
    for column in rows[0]:
        if column == "epoch":
            continue
        logged = [(int(row["epoch"]), float(row[column])) for row in rows if row[column] != ""]  # '' = undefined
        got = ea.Scalars(scalar_tag(column)) if logged else []  # (a class's IoU with no pixel on either side)
        assert [s.step for s in got] == [e for e, _ in logged], column
        assert [s.value for s in got] == pytest.approx([v for _, v in logged], rel=1e-6), column
    summary = json.loads((run_dir / "summary.json").read_text())
    assert ea.Scalars("final/dice_mean")[-1].value == pytest.approx(summary["metrics"]["dice_mean"], rel=1e-6)
    assert ea.Scalars("hp_metric")[-1].value == pytest.approx(summary["metrics"]["dice_mean"], rel=1e-6)
    # issue 34: per-class finals are one text table, not a single-point scalar card per class and metric
    assert not [t for t in ea.Tags()["scalars"] if "per_class" in t]
    (text,) = [t for t in ea.Tags()["tensors"] if t.startswith("final/per_class")]
    table = ea.Tensors(text)[-1].tensor_proto.string_val[0].decode()
    for name, scores in summary["per_class"].items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert ("—" if scores["dice"] is None else f"{scores['dice']:.4f}") in row.split(" | ")[1], name
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    total = [e["total_steps"] for e in events if e["event"] == "epoch"][-1]
    steps = ea.Scalars("train/step_loss")  # every optimiser step's own loss, at the run's step count
    assert [s.step for s in steps] == list(range(1, total + 1))
    assert sum(s.value for s in steps[:total // 2]) / (total // 2) == pytest.approx(float(rows[0]["train_loss"]),
                                                                                      rel=1e-5)
    assert {"figures/loss_curves", "figures/overlays", "figures/per_class_dice"} <= set(ea.Tags()["images"])
    content = ea.PluginTagToContent("hparams")
    start = next(plugin_data_pb2.HParamsPluginData.FromString(v).session_start_info for v in content.values()
                 if plugin_data_pb2.HParamsPluginData.FromString(v).HasField("session_start_info"))
    assert start.hparams["train.epochs"].number_value == 2
    assert start.hparams["model.name"].string_value == "unet"
    assert 10 <= len(start.hparams) <= 30 and "train.channels_last" not in start.hparams  # a curated list
    assert {k for k, v in start.hparams.items() if v.HasField("bool_value")} == set()  # booleans shown as text


@pytest.mark.slow  # creating an MLflow sqlite store runs its schema migrations (about 10 s on a busy 2-core CPU)
def test_mlflow_store_holds_params_metric_history_and_artifacts_across_a_resume(endovis_root, tmp_path,
                                                                                   monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from cnnlab.cli import main
    from cnnlab.engine.tracking import flatten, scalar_tag
    from cnnlab.inference.predict import load_run

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    raw = tiny_recipe(endovis_root, tmp_path / "runs", train={"log_to": ["mlflow"], "mlflow_uri": uri})
    real_save = interrupt_after_first_last_pt(monkeypatch)
    with pytest.raises(Interrupted):
        train(recipe_from_dict(raw))
    monkeypatch.setattr(checkpoint_mod, "atomic_save", real_save)
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny")
    (stopped,) = client.search_runs([exp.experiment_id])
    assert stopped.info.status == "KILLED"
    # through the CLI: report.html is logged after the CLI writes it
    assert main(["train", "--resume", str(run_dir)]) == 0
    (run,) = client.search_runs([exp.experiment_id])  # the resume continued the same MLflow run
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    flat = flatten(asdict(recipe_from_dict(raw)))
    assert run.data.params == {k: str(v) for k, v in flat.items()}
    rows = _csv_rows(run_dir)
    for column in ("train_loss", "val_loss", "val_dice_mean", "lr", "images_per_s"):
        # TensorBoard's names (val/loss), the same in both trackers
        history = sorted(client.get_metric_history(run.info.run_id, scalar_tag(column)), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx([float(row[column]) for row in rows], rel=1e-12)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.data.metrics["final/dice_mean"] == pytest.approx(summary["metrics"]["dice_mean"], rel=1e-12)
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "metrics.csv", "config.yaml", "events.jsonl", "report.html", "report.md",
            "figures"} <= files
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} >= {"figures/loss_curves.png",
                                                                                   "figures/per_class_dice.png"}
    # issue 34: opens on the runs table, says where it came from, and holds a model that loads back
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "cnnlab train" and tags["cnnlab.data.root"] == str(endovis_root.resolve())
    assert re.fullmatch(r"[0-9a-f]{16}", tags["cnnlab.data.fingerprint"])
    if importlib.util.find_spec("psutil"):  # MLflow's system metrics, sampled while the run trained
        assert 0 <= run.data.metrics["system/cpu_utilization_percentage"] <= 100
    steps = client.get_metric_history(run.info.run_id, "train/step_loss")
    assert len(steps) == sum(json.loads(line).get("steps", 0) for line in (run_dir / "events.jsonl").read_text()
                             .splitlines() if '"event": "epoch"' in line)
    model = Path(client.download_artifacts(run.info.run_id, "model", str(tmp_path / "dl")))
    assert {p.name for p in model.iterdir()} >= {"best.pt", "config.yaml"}
    loaded, own = load_run(model, "cpu").model.state_dict(), load_run(run_dir, "cpu").model.state_dict()
    assert list(loaded) == list(own) and all(torch.equal(loaded[k], own[k]) for k in own)
    # the experiment is the recipe file's, not the run's name: --set name=... makes no new experiment
    (tmp_path / "seg.yaml").write_text(yaml.safe_dump({**raw, "train": {**raw["train"], "epochs": 1}}))
    assert main(["train", str(tmp_path / "seg.yaml"), "--set", "name=other"]) == 0
    (other,) = client.search_runs([client.get_experiment_by_name("seg").experiment_id])
    assert other.info.run_name.startswith("other-") and client.get_experiment_by_name("other") is None


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow"])
def test_a_missing_extra_is_one_line_before_any_folder(tracker, endovis_root, tmp_path, monkeypatch, capsys):
    import importlib.util

    from cnnlab.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else real(name, *a))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(tiny_recipe(endovis_root, tmp_path / "runs", train={"log_to": [tracker]})))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"cnnlab: error: train.log_to: {tracker} needs the '{tracker}' package, which is not installed "
                   f"— pip install 'cnnlab[{tracker}]', or remove {tracker} from train.log_to")
    assert not (tmp_path / "runs").exists()


def test_log_to_names_are_checked_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="unknown train.log_to entry 'tensorbord' — did you mean 'tensorboard'"):
        recipe_from_dict(tiny_recipe(tmp_path, tmp_path, train={"log_to": ["tensorbord"]}))


def test_every_file_reader_counts_each_decoded_model_input_for_the_decode_bar(tmp_path):
    """The decode phase's count (bar and events.jsonl `images`) comes from the readers; the image-folder and
    colorization readers counted nothing (a 10,000-digit class-folder run logged `images: 0`)."""
    from cnnlab.data.formats import endovis_color, imagefolder
    from cnnlab.data.formats.common import DECODE_HOOKS
    from cnnlab.data.synthetic import classification as syn_cls
    from cnnlab.data.synthetic import endovis as syn_endo

    counted: list[int] = []
    DECODE_HOOKS.append(lambda: counted.append(1))
    try:
        root = syn_cls.write_image_folders(tmp_path / "png", seed=0, n_train=12, n_test=5, size=8)
        assert len(imagefolder.load(root, "Train")) == 12 and len(counted) == 12
        counted.clear()
        eroot = syn_endo.write(tmp_path / "endo", n_train=1, n_val=1, n_test=1, n_color_train=3, n_color_val=2,
                               height=16, width=20)
        assert len(endovis_color.load(eroot, "train_cor")) == len(counted) == 3
    finally:
        DECODE_HOOKS.pop()


def test_a_run_whose_tracker_is_gone_resumes_without_it_by_the_hinted_command(endovis_root, tmp_path, monkeypatch,
                                                                               capsys):
    """Issue 29: trackers are not part of the experiment. A run that logged to TensorBoard, resumed where the
    extra is missing, is refused with a command that resumes it without the tracker; that command works and
    history.yaml records the change."""
    import importlib.util
    import shlex

    import yaml

    from cnnlab.cli import main

    run = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs",
                                             train={"epochs": 1, "log_to": ["tensorboard"]})))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err.strip()
    command = f"cnnlab train --resume {run} --set 'train.log_to=[]'"
    assert err == ("cnnlab: error: train.log_to: tensorboard needs the 'tensorboard' package, which is not installed "
                   f"— pip install 'cnnlab[tensorboard]', or resume without it: {command}")
    assert main([*shlex.split(command)[1:], "--set", "train.epochs=2"]) == 0
    history = yaml.safe_load((run / "history.yaml").read_text())["resumes"]
    assert history[-1]["overrides"] == ["train.log_to=[]", "train.epochs=2"]
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 2
