"""`cnnlab tune`: hyperparameter search with Optuna over a space of recipe keys (cnnlab.study.tune), then the
answer: best.yaml, confirm.yaml and tune.md (cnnlab.report.tune)."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from cnnlab.errors import CnnlabError


def _cmd_tune(a: argparse.Namespace) -> int:
    from cnnlab.report.tune import write_tune_report
    from cnnlab.study.tune import resume_tune, start_tune

    if a.ray and a.recipe is None and a.ray.endswith((".yaml", ".yml")):  # `--ray RECIPE.yaml`: argparse took
        a.recipe, a.ray = a.ray, ""                                          # the file for --ray's address
    if a.resume:
        if a.recipe or a.space or a.set or a.out:
            raise CnnlabError("cnnlab tune --resume takes only the tune folder (and --trials, --minutes, --workers, "
                              "--ray)", "its tune.json already holds the recipe, the space and the --set values")
        tune_dir = resume_tune(Path(a.resume), a.trials, a.minutes, a.workers, a.ray, a.retries)
    elif a.recipe and a.space:
        tune_dir = start_tune(Path(a.recipe), Path(a.space), a.trials, a.minutes, a.set, a.out, a.workers, a.ray,
                              a.retries)
    else:
        raise CnnlabError("cnnlab tune needs a RECIPE and --space SPACE.yaml, or --resume TUNE_DIR",
                          "e.g. cnnlab tune recipe.yaml --space space.yaml --trials 12")
    report = write_tune_report(tune_dir)
    print(f"report: {report}")
    if (tune_dir / "best.yaml").is_file():
        print(f"best recipe: cnnlab train {shlex.quote(str(tune_dir / 'best.yaml'))}")
        print(f"confirm (top 3 trials x 3 seeds, see tune.md): cnnlab study "
              f"{shlex.quote(str(tune_dir / 'confirm.yaml'))}")
    return 0


def register(sub) -> None:
    """Add the tune subcommand to cnnlab's subparsers."""
    t = sub.add_parser("tune", help="search recipe settings with Optuna (pip install 'cnnlab[tune]'), trials pruned "
                                    "by their per-epoch validation score; writes best.yaml and tune.md")
    t.add_argument("recipe", nargs="?", metavar="RECIPE", help="the recipe the search starts from")
    t.add_argument("--space", metavar="SPACE.yaml",
                   help="recipe keys and what trials may set them to, e.g. optim.lr: {log: [1.0e-4, 1.0e-2]}")
    t.add_argument("--trials", type=int, default=None, metavar="N", help="trials in all (a resume counts earlier ones)")
    t.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="no trial starts after M minutes (running ones finish)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every trial")
    t.add_argument("--out", metavar="FOLDER", help="where the tune folder goes (default: tunes)")
    t.add_argument("--resume", metavar="TUNE_DIR", help="continue a tune: finished trials are kept")
    t.add_argument("--workers", type=int, default=None, metavar="N",
                   help="N trials at once in worker processes (as cnnlab study --workers)")
    t.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="trials as Ray tasks (pip install 'cnnlab[ray]'); no ADDRESS starts Ray here")
    t.add_argument("--retries", type=int, default=2, metavar="N",
                   help="with --workers/--ray: start a trial whose worker died again up to N times")
    t.set_defaults(func=_cmd_tune)
