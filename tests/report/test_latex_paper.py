"""The LaTeX report as it goes into a paper (issue 34), checked where pdflatex exists by compiling it and reading
the PDF back (pdftotext, pdffonts): hostile names typeset as themselves (every LaTeX special, an \\input and a
\\write18 attempt), runtime notes in an appendix list and not in the Results paragraph, quotes and double hyphens
right, no table scaled (split instead) and no overfull box over 1 pt, every font embedded; --template neurips and a
user's .sty."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.report.latex import write_latex_report
from cnnlab.report.tex import TEXT_WIDTH_PT, _col_widths, column_specs, table_tex, tex_escape
from test_report_latex import run_dir, study_dir, study_report, tex_rows  # noqa: F401 (module fixtures)

HOSTILE = "x\\input{/etc/hostname}\\write18{touch pwned} #$%&_{}~^ 'q' --z"
NOTES = ["mapping.json is not valid JSON; classes named class_0..class_2",
         "decoded cache skipped (--no-cache): /very/long/path/to/a/cache/folder/that/has/no/spaces/in/it/at/all/x"]
needs_tex = pytest.mark.skipif(not all(shutil.which(t) for t in ("pdflatex", "pdftotext", "pdffonts", "pdfinfo")),
                               reason="pdflatex and poppler-utils not installed")


def test_escaping_quotes_and_double_hyphens():
    assert tex_escape("loss 'dice_ce' isn't") == "loss `dice\\_ce' isn't"  # opening quote opens, apostrophe stays
    assert tex_escape('a "b" c') == "a ``b'' c"
    assert tex_escape("--no-cache a-b") == "-{}-no-cache a-b"  # no en dash
    assert tex_escape("\\input{x}") == "\\textbackslash{}input\\{x\\}"


def test_a_wide_table_is_split_never_scaled():
    heads = ["variant", "seeds"] + [f"metric {i}" for i in range(12)]
    rows = [[f"v{r}", "3/3"] + ["0.6233 \\ensuremath{\\pm} 0.0321"] * 12 for r in range(3)]
    tex = table_tex(heads, rows, "Caption. More.", "tab:x", "src", keep=2)
    assert "resizebox" not in tex and "scalebox" not in tex
    parts = tex.split("\\begin{table}")[1:]
    assert len(parts) > 1 and all("\\footnotesize" in p for p in parts)
    assert re.findall(r"\\label\{([^}]*)\}", tex) == ["tab:x"] + [f"tab:x-{n}" for n in range(2, len(parts) + 1)]
    for p in parts:  # each part fits the text width by the same estimate, and repeats the two key columns
        head = p.split("\\toprule")[1].split("\\\\")[0].strip().split(" & ")
        assert head[:2] == heads[:2]
        assert sum(_col_widths(head, [], "\\footnotesize", column_specs("l" * len(head)))) <= TEXT_WIDTH_PT


def _compile(folder: Path) -> tuple[str, str]:
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    log = (folder / "report.log").read_text(errors="replace")
    over = [float(x) for x in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)]
    assert all(x <= 1.0 for x in over), over
    fonts = subprocess.run(["pdffonts", str(folder / "report.pdf")], capture_output=True, text=True, check=True)
    assert all(line.split()[-5] == "yes" for line in fonts.stdout.splitlines()[2:]), fonts.stdout  # emb column
    text = subprocess.run(["pdftotext", "-layout", str(folder / "report.pdf"), "-"], capture_output=True,
                          text=True, check=True).stdout
    return text, log


@pytest.fixture
def hostile_run(run_dir: Path, tmp_path: Path) -> Path:  # noqa: F811
    d = tmp_path / "hostile"
    shutil.copytree(run_dir, d, ignore=shutil.ignore_patterns("*.pt", "latex"))
    s = json.loads((d / "summary.json").read_text())
    s["name"], s["notes"] = HOSTILE, NOTES
    s["per_class"] = {HOSTILE: {"dice": 0.5, "iou": 0.3, "in_ground_truth": True}}
    (d / "summary.json").write_text(json.dumps(s))
    return d


@pytest.mark.slow
@needs_tex
def test_hostile_names_typeset_as_text_and_notes_go_to_the_appendix(hostile_run: Path, tmp_path: Path):
    folder = write_latex_report(hostile_run).parent
    text, log = _compile(folder)
    assert not (folder / "pwned").exists() and "hostname" not in log.split("(./report.aux)")[-1].split("\n")[0]
    flat = re.sub(r"\s+", " ", text)
    assert "x\\input{/etc/hostname}\\write18{touch pwned} #$%&_{}~^ ‘q’ --z" in flat  # literal, real quotes
    results = (folder / "results.tex").read_text()
    assert "mapping.json" not in results and "cache" not in results  # notes are not results
    appendix = flat.split("Run notes")[-1]
    assert "mapping.json is not valid JSON" in appendix and "skipped (--no-cache):" in appendix  # no en dash
    assert "Results." in flat and flat.index("Results.") < flat.index("Run notes")


@pytest.mark.slow
@needs_tex
def test_study_tables_fit_unscaled(study_report: Path):  # noqa: F811
    text, _ = _compile(study_report.parent)
    info = subprocess.run(["pdfinfo", str(study_report.parent / "report.pdf")], capture_output=True, text=True,
                          check=True).stdout
    assert 3 <= int(re.search(r"Pages:\s+(\d+)", info).group(1)) <= 6  # text, 6 tables, 3 figures: none blown up
    tables = " ".join((study_report.parent / f).read_text() for f in ("table_study.tex", "table_differences.tex"))
    assert "resizebox" not in tables and "\\caption" in tables
    caption = (study_report.parent / "table_study.tex").read_text().split("\\caption{")[1].split("}\n")[0]
    assert caption.count("split") == 1
    fonts = subprocess.run(["pdffonts", str(study_report.parent / "fig_headline.pdf")], capture_output=True,
                           text=True, check=True).stdout
    # a serif with every glyph (Latin Modern where TeX has it): matplotlib's cmr10 typeset '±' as 'ffi'
    assert ("LMRoman10" in fonts or "DejaVuSerif" in fonts) and "Cmr10" not in fonts and "DejaVuSans" not in fonts


@pytest.mark.slow
@needs_tex
def test_neurips_template_and_a_users_style_file(run_dir: Path, tmp_path: Path):  # noqa: F811
    d = tmp_path / "run"
    shutil.copytree(run_dir, d, ignore=shutil.ignore_patterns("*.pt", "latex"))
    assert main(["report", str(d), "--format", "latex", "--template", "neurips"]) == 0
    tex = (d / "latex" / "report.tex").read_text()
    assert "textwidth=5.5in" in tex and "mathptmx" in tex
    _compile(d / "latex")
    fonts = subprocess.run(["pdffonts", str(d / "latex" / "report.pdf")], capture_output=True, text=True).stdout
    # text and figures in a Times face where TeX has Times' metrics (texlive-fonts-recommended); with
    # texlive-latex-recommended alone mathptmx.sty is there but its fonts are not: the page compiles in Computer Modern
    times_tex = subprocess.run(["kpsewhich", "ptmr8t.tfm"], capture_output=True, text=True).stdout.strip()
    assert (("Times" in fonts or "NimbusRom" in fonts) if times_tex else "Times" not in fonts) and "STIX" in fonts
    sty = tmp_path / "neurips_2024.sty"
    sty.write_text("\\ProvidesPackage{neurips_2024}\\DeclareOption{preprint}{}\\ProcessOptions\\relax\n")
    write_latex_report(d, str(sty))
    assert (d / "latex" / "neurips_2024.sty").is_file()
    assert "\\usepackage[preprint]{neurips_2024}" in (d / "latex" / "report.tex").read_text()
    with pytest.raises(CnnlabError, match="valid: article, neurips"):
        write_latex_report(d, "iclr")
