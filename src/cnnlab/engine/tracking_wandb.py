"""Weights & Biases as an experiment tracker (`train.log_to: [wandb]`, the optional extra `cnnlab[wandb]`).

Offline unless told otherwise: $WANDB_MODE (default `offline`) decides, so a run never needs an account or the
network; the run's files are kept in RUN_DIR/wandb/offline-run-*/ and `wandb sync RUN_DIR/wandb/offline-run-*`
uploads them later. The names are TensorBoard's and MLflow's (tracker_base): per-epoch metrics against `epoch`,
each step's training loss against `trainer/global_step`, the final metrics in the run summary, the figures as
images, the per-class scores as a table, and best.pt with config.yaml as a `model` artifact. The project is
train.mlflow_experiment (the recipe file's name), else the run's name; a study's run carries its variant, seed
and grid point in its config ($CNNLAB_MLFLOW_TAGS). RUN_DIR/tracking.json keeps the run's id, so a resume
continues the same W&B run.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from cnnlab.config import Recipe, asdict
from cnnlab.engine.mlflow_extras import MODEL_FILES, TAGS_ENV
from cnnlab.engine.run_files import FIGURES
from cnnlab.engine.tracker_base import STEP_LOSS_TAG, Tracker, final_scalars, flatten, number, scalar_tag

GLOBAL_STEP = "trainer/global_step"


def _tracking(run_dir: Path) -> dict:
    p = run_dir / "tracking.json"
    return json.loads(p.read_text()) if p.is_file() else {}


class WandbTracker(Tracker):
    def __init__(self, r: Recipe, run_dir: Path, first_epoch: int) -> None:
        import wandb  # optional extra cnnlab[wandb]

        super().__init__(run_dir)
        self.wandb = wandb
        saved = _tracking(run_dir)
        run_id = saved.get("wandb", {}).get("id") or uuid.uuid4().hex[:8]  # kept for a resume
        config = {**flatten(asdict(r)), **json.loads(os.environ.get(TAGS_ENV) or "{}")}
        self.run = wandb.init(project=r.train.mlflow_experiment or r.name, name=run_dir.name, id=run_id,
                              resume="allow", dir=str(run_dir), config=config, job_type="train",
                              mode=os.environ.get("WANDB_MODE", "offline"),
                              settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        self.run.define_metric("epoch")
        self.run.define_metric(GLOBAL_STEP)
        self.run.define_metric(STEP_LOSS_TAG, step_metric=GLOBAL_STEP)
        for prefix in ("train/loss", "val/*", "lr", "seconds", "images_per_s"):
            self.run.define_metric(prefix, step_metric="epoch")
        (run_dir / "tracking.json").write_text(json.dumps({**saved, "wandb": {
            "id": run_id, "project": self.run.project, "mode": os.environ.get("WANDB_MODE", "offline"),
            "dir": str(Path(self.run.dir).parent)}}, indent=1))

    def epoch(self, epoch: int, row: dict) -> None:
        self.run.log({**{scalar_tag(k): v for k, v in row.items() if k != "epoch" and number(v)}, "epoch": epoch})

    def steps(self, losses: list[tuple[int, float]]) -> None:
        for step, loss in losses:
            self.run.log({STEP_LOSS_TAG: loss, GLOBAL_STEP: step})

    def finish(self, run_dir: Path, summary: dict, step: int) -> None:
        self.run.summary.update(final_scalars(summary))
        images = {f"figures/{p.stem}": self.wandb.Image(str(p)) for p in sorted((run_dir / FIGURES).glob("*.png"))}
        if images:
            self.run.log(images)
        for block in ("per_class", "per_class_accuracy"):
            rows = summary.get(block) or {}
            if rows:
                cols = list(dict.fromkeys(k for p in rows.values() for k in p))
                self.run.log({"final/per_class": self.wandb.Table(
                    columns=["class", *cols], data=[[n, *(p.get(c) for c in cols)] for n, p in rows.items()])})
                break
        model = self.wandb.Artifact(f"model-{self.run.id}", type="model", metadata=summary.get("metrics", {}))
        for name in MODEL_FILES:
            if (run_dir / name).is_file():
                model.add_file(str(run_dir / name))
        self.run.log_artifact(model)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)

    def describe(self) -> str:
        return (f"wandb: logging run {self.run.id} of project '{self.run.project}' "
                f"({os.environ.get('WANDB_MODE', 'offline')}) under {self.run_dir / 'wandb'}")
