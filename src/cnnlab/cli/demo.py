"""`cnnlab demo`: synthesize the EndoVis course data if missing and train the tuned course recipe at CPU size."""
from __future__ import annotations

from pathlib import Path

from cnnlab.config import load_recipe
from cnnlab.engine.run import train
from cnnlab.errors import CnnlabError
from cnnlab.logs import get_logger
from cnnlab.report.tables import print_run_table

log = get_logger(__name__)

# CPU size: half resolution keeps the 2-core demo within minutes; everything else is recipe (c) as written.
DEMO_OVERRIDES = ["data.size=[128, 160]", "train.epochs=25", "train.patience=8", "model.params.width=16"]
DEMO_SYNTH = {"n_train": 120, "n_val": 24, "n_test": 24, "n_color_train": 24, "n_color_val": 8}


def find_recipe(rel: str) -> Path:
    """A recipe shipped in the repository's recipes/ folder (cwd first, then beside the package source)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (base / "recipes" / rel).is_file():
            return base / "recipes" / rel
    raise CnnlabError(f"recipe recipes/{rel} not found", "run the demo from the cnnlab repository folder")


def ensure_data(data: Path) -> None:
    """Write the synthetic course data once."""
    from cnnlab.data.synthetic import endovis

    if not (data / "segmentation").is_dir():
        log.info(f"writing synthetic EndoVis course data to {data} ...")
        endovis.write(data, seed=0, **DEMO_SYNTH)


def run_demo_study(data: Path, out: Path) -> Path:
    """The course question (does colorization pre-training help?) at demo size, as a study with its table."""
    from cnnlab.report.build import write_study_report
    from cnnlab.study.runner import run_study

    ensure_data(data)
    study_dir = run_study(find_recipe("endovis/study_demo.yaml"), [f"data.root={data}"], out=out)
    log.info(f"report: {write_study_report(study_dir)}")
    return study_dir


def run_demo(data: Path, out: Path, epochs: int | None = None) -> Path:
    """Synthesize (once) and train; prints the results table and the run dir."""
    ensure_data(data)
    overrides = [*DEMO_OVERRIDES, f"data.root={data}", f"out={out}", "name=demo-endovis-c-tuned"]
    if epochs:
        overrides.append(f"train.epochs={epochs}")
    recipe = load_recipe(find_recipe("endovis/c_tuned.yaml"), overrides)
    run_dir = train(recipe)
    print_run_table(run_dir)
    from cnnlab.report.build import write_run_report

    log.info(f"report: {write_run_report(run_dir)}")
    return run_dir
