"""Issue 29: reports treat names as text (report.md escapes HTML as report.html does)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from cnnlab.report.build import write_report
from cnnlab.text import markdown_table
from test_report_latex import run_dir  # noqa: F401 (the module's tiny trained run, a fixture)

EVIL = "<script>alert(1)</script>"


def test_report_md_escapes_html_in_names(run_dir: Path, tmp_path: Path):  # noqa: F811
    d = tmp_path / "run"
    shutil.copytree(run_dir, d, ignore=shutil.ignore_patterns("*.pt", "report.*"))
    s = json.loads((d / "summary.json").read_text())
    s["per_class"] = {n: {"dice": 0.5, "iou": 0.3, "in_ground_truth": True} for n in ("background", EVIL)}
    s["notes"] = [f"classes: background, {EVIL}"]
    (d / "summary.json").write_text(json.dumps(s))
    write_report(d)
    md = (d / "report.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "<script>" not in (d / "report.html").read_text()


def test_markdown_table_escapes_html_and_pipes():
    assert markdown_table(["a"], [["<b>x|y</b> & z"]]).splitlines()[-1] == "| &lt;b&gt;x\\|y&lt;/b&gt; & z |"
