"""Weights & Biases offline (train.log_to: [wandb], issue 34): a tiny run's offline files read back record by record
(LevelDB log blocks of wandb's own protobuf Records) and compared with metrics.csv, events.jsonl, summary.json and
the md5 of best.pt."""
from __future__ import annotations

import base64
import csv
import hashlib
import json
import struct
from pathlib import Path

import pytest

from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import train
from conftest import tiny_recipe

BLOCK = 32768  # wandb's .wandb files are LevelDB logs: 32 KiB blocks of records with 7-byte headers


def wandb_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, out, part = 7, [], b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        part = chunk if kind in (1, 2) else part + chunk  # full, first | middle, last
        if kind in (1, 4):
            out.append(pb.Record.FromString(part))
    return out


@pytest.mark.slow  # wandb starts its own service process: about 8 s on a busy 2-core CPU
def test_an_offline_wandb_run_holds_metrics_step_losses_finals_and_the_model(endovis_root, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline by default: no account, no network
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    run_dir = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", train={"log_to": ["wandb"]})))
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(path)
    kinds = lambda k: [getattr(r, k) for r in records if r.WhichOneof("record_type") == k]
    key = lambda item: item.key or "/".join(item.nested_key)
    (run,) = kinds("run")
    assert run.project == "tiny" and run.display_name == run_dir.name
    assert json.loads((run_dir / "tracking.json").read_text())["wandb"]["id"] == run.run_id
    history = [{key(i): json.loads(i.value_json) for i in h.item} for h in kinds("history")]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    epochs = [h for h in history if "epoch" in h]
    assert [h["epoch"] for h in epochs] == [int(r["epoch"]) for r in rows]
    assert [h["val/loss"] for h in epochs] == pytest.approx([float(r["val_loss"]) for r in rows], rel=1e-12)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    total = [e["total_steps"] for e in events if e["event"] == "epoch"][-1]
    assert [h["trainer/global_step"] for h in history if "train/step_loss" in h] == list(range(1, total + 1))
    summary = json.loads((run_dir / "summary.json").read_text())
    finals = {key(i): json.loads(i.value_json) for s in kinds("summary") for i in s.update}
    assert finals["final/dice_mean"] == pytest.approx(summary["metrics"]["dice_mean"], rel=1e-12)
    assert finals["figures/per_class_dice/_type"] == "image-file"
    config = {key(i): json.loads(i.value_json) for i in run.config.update}
    assert config["model.name"] == "unet" and config["optim.lr"] == 0.01
    (model,) = [a for a in kinds("artifact") if a.type == "model"]
    digests = {e.path: e.digest for e in model.manifest.contents}
    assert digests["best.pt"] == base64.b64encode(hashlib.md5((run_dir / "best.pt").read_bytes()).digest()).decode()
    assert "config.yaml" in digests and kinds("exit")[0].exit_code == 0
