"""`cnnlab study` (run or resume a study) and `cnnlab report` (write a run's or a study's report)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .errors import CnnlabError


def _cmd_study(a: argparse.Namespace) -> int:
    from .study import resume_study, run_study

    if a.resume:
        if a.study or a.set or a.out:
            # the plan (study file and --set values) is frozen in the study folder; changing it mid-way
            # would mix runs of two different studies in one table
            raise CnnlabError("cnnlab study --resume takes only the study folder",
                              "its plan.json already holds the study file and the --set values; --out is its folder")
        resume_study(Path(a.resume))
    elif a.study:
        run_study(Path(a.study), a.set, a.out)
    else:
        raise CnnlabError("cnnlab study needs a STUDY_YAML or --resume STUDY_DIR")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from .report.build import write_report

    path = write_report(Path(a.folder))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def register(sub) -> None:
    """Add the study and report subcommands to cnnlab's subparsers."""
    s = sub.add_parser("study", help="run every variant x grid point x seed of a study YAML, then its table and report")
    s.add_argument("study", nargs="?", metavar="STUDY_YAML", help="study file (see cnnlab.study)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every run of the study (stages included), e.g. data.root=...")
    s.add_argument("--out", metavar="FOLDER", help="where the study folder goes (default: the study file's 'out')")
    s.add_argument("--resume", metavar="STUDY_DIR", help="continue a study: finished runs are kept")
    s.set_defaults(func=_cmd_study)
    r = sub.add_parser("report", help="write report.md and a self-contained report.html for a run or study folder")
    r.add_argument("folder", metavar="RUN_DIR|STUDY_DIR")
    r.set_defaults(func=_cmd_report)
