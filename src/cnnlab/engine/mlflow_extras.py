"""What an MLflow run of cnnlab carries besides its params and metrics (engine/tracking.py), so that the MLflow UI
shows it as its users expect:

- the experiment tagged mlflow.experimentKind = custom_model_development: MLflow 3 opens an untagged experiment in
  its GenAI "Traces" view, this tag opens it on the runs table;
- run tags: the source (mlflow.source.name/type, and mlflow.source.git.commit where the working folder is a git
  checkout), the data (cnnlab.data.root, and cnnlab.data.fingerprint: the digest of every data file's path, size
  and times, the decoded cache's key, so two runs on changed data differ), and for a run of a study its variant,
  seed and grid point (cnnlab.variant, cnnlab.seed, cnnlab.grid; $CNNLAB_MLFLOW_TAGS, set by the study worker);
- system metrics (CPU, memory, disk, network; GPU where present) every 10 s as `system/...`, MLflow's own
  monitor, where psutil is installed (the mlflow extra brings it); no server needed;
- the model: best.pt with config.yaml (and summary.json) under the artifact path model/, which cnnlab.load_run
  reads back as a run folder once downloaded. Not mlflow.pytorch.log_model: its pickled module needs cnnlab's
  classes importable at load time anyway, and best.pt is what every cnnlab command reads.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

from cnnlab.config import Recipe
from cnnlab.data.cache import fingerprint
from cnnlab.engine.run_files import BEST, CONFIG, SUMMARY

KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
TAGS_ENV = "CNNLAB_MLFLOW_TAGS"  # JSON object of extra run tags: a study run's variant, seed and grid point
MODEL_FILES = (BEST, CONFIG, SUMMARY)
MODEL_PATH = "model"


def git_commit(folder: Path) -> str | None:
    """The commit checked out in `folder` (the working folder of the run), or None outside a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def run_tags(r: Recipe) -> dict[str, str]:
    """Source, data and study tags of a new MLflow run."""
    tags = {"mlflow.source.name": "cnnlab train", "mlflow.source.type": "LOCAL", "cnnlab.data.root":
            str(Path(r.data.root).expanduser().resolve()), "cnnlab.data.format": r.data.format}
    commit = git_commit(Path.cwd())
    if commit:
        tags["mlflow.source.git.commit"] = commit
    root = Path(r.data.root).expanduser()
    digest = fingerprint(root, r.data.options) if root.exists() else None
    if digest:
        tags["cnnlab.data.fingerprint"] = digest[0][:16]
    extra = os.environ.get(TAGS_ENV)
    if extra:
        tags.update({k: str(v) for k, v in json.loads(extra).items()})
    return tags


def mark_experiment(client, exp_id: str) -> None:
    """Open the experiment on its runs table (see the module docstring); kept if already set."""
    exp = client.get_experiment(exp_id)
    if exp.tags.get(KIND_TAG) is None:
        client.set_experiment_tag(exp_id, KIND_TAG, KIND)


def log_model(client, run_id: str, run_dir: Path) -> None:
    """best.pt with the files that make it a loadable run folder, under model/."""
    for name in MODEL_FILES:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name), MODEL_PATH)


def system_monitor(run_id: str, uri: str, resumed: bool):
    """MLflow's system-metrics monitor of the run, started; None where psutil is missing (it samples with it)."""
    if importlib.util.find_spec("psutil") is None:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor  # optional extra cnnlab[mlflow]

    monitor = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=uri)
    monitor.start()
    return monitor
