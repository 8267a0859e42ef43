"""`cnnlab study` (run or resume a study), `cnnlab report` (write a run's or a study's report, md/html or LaTeX)
and `cnnlab compare` (one table of several hand-made runs)."""
from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_study(a: argparse.Namespace) -> int:
    from cnnlab.api.calls import run_study  # the function cnnlab.run_study is: the same runs, table and report

    if a.ray and a.study is None and a.ray.endswith((".yaml", ".yml")):  # `--ray STUDY.yaml`: argparse took the
        a.study, a.ray = a.ray, ""                                           # file for --ray's optional address
    run_study(a.study, a.set, a.out, a.workers, a.ray, a.retries, resume=a.resume)
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    if a.format == "latex":
        from cnnlab.report.latex import write_latex_report

        path = write_latex_report(Path(a.folder), a.template)
        print(f"wrote {path} and its \\input-able pieces (table_*.tex, fig_*.tex); compile: "
              f"cd {path.parent} && pdflatex report.tex")
        return 0
    from cnnlab.report.build import write_report

    if (Path(a.folder) / "tune.json").is_file():  # a cnnlab tune folder
        from cnnlab.report.tune import write_tune_report

        print(f"wrote {write_tune_report(Path(a.folder))}, report.md and report.html")
        return 0
    path = write_report(Path(a.folder))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def _cmd_compare(a: argparse.Namespace) -> int:
    from cnnlab.report.compare import compare, format_for

    text = compare([Path(d) for d in a.runs], format_for(a.out, a.format))
    if a.out:
        Path(a.out).write_text(text)
        print(f"wrote {a.out}")
    else:
        print(text, end="")
    return 0


def register(sub) -> None:
    """Add the study and report subcommands to cnnlab's subparsers."""
    s = sub.add_parser("study", help="run every variant x grid point x seed of a study YAML, then its table and report")
    s.add_argument("study", nargs="?", metavar="STUDY_YAML", help="study file (see cnnlab.study.runner)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every run of the study (stages included), e.g. data.root=...")
    s.add_argument("--out", metavar="FOLDER", help="where the study folder goes (default: the study file's 'out')")
    s.add_argument("--resume", metavar="STUDY_DIR", help="continue a study: finished runs are kept")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="N runs at once on this machine, cores divided between them (train.threads = cores/N unless "
                        "set), one GPU each where GPUs exist (default: one run after another); with --ray: at most N "
                        "at once (default: as many as the resources fit)")
    s.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="the runs as Ray tasks (pip install 'cnnlab[ray]'): no ADDRESS starts Ray here; 'auto' or "
                        "ray://HOST:PORT joins a cluster (the study folder must be on a path every node sees); "
                        "each run asks for the study file's resources: {cpus: 1, gpus: 0} (--set resources.cpus=2)")
    s.add_argument("--retries", type=int, default=2, metavar="N",
                   help="with --workers/--ray: start a run whose worker died again up to N times, from its last "
                        "checkpoint (default 2)")
    s.set_defaults(func=_cmd_study)
    r = sub.add_parser("report", help="write report.md and a self-contained report.html for a run or study folder")
    r.add_argument("folder", metavar="RUN_DIR|STUDY_DIR")
    r.add_argument("--format", choices=["html", "md", "latex"], default="html",
                   help="html or md (default): report.md + report.html; latex: FOLDER/latex/report.tex with "
                        "booktabs tables and PDF figures as separate \\input-able files")
    r.add_argument("--template", default="article", metavar="article|neurips|STY",
                   help="latex only: the page of report.tex: article (default, 5.5 in text, Computer Modern), "
                        "neurips (NeurIPS's page and Times from standard packages) or the path of a downloaded "
                        "neurips_2024.sty; the \\input-able pieces are the same for all")
    r.set_defaults(func=_cmd_report)
    c = sub.add_parser("compare", help="one table of several runs' headline and per-class metrics (md, csv, latex)")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--format", choices=["md", "csv", "latex"], default=None,
                   help="default: from --out's suffix (.csv, .tex), else md")
    c.add_argument("--out", metavar="FILE", help="write the table here instead of printing it")
    c.set_defaults(func=_cmd_compare)
