"""Issue 29: LaTeX reports with class names in other scripts compile with the documented `pdflatex report.tex`
(before: "Unicode character α (U+03B1) not set up for use with LaTeX"), and with lualatex.

Oracles: the TeX engines themselves (skipped cleanly where absent), pdftotext reading the PDF back."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from cnnlab.report.build import write_report
from cnnlab.report.latex import write_latex_report
from cnnlab.report.tex import tex_escape, unicode_fallbacks
from test_report_latex import run_dir  # noqa: F401 (the module's tiny trained run, a fixture)

NAMES = ["background", "α-cell", "Δέλτα", "漢字", "Жук", "caf\u00e9"]


def test_greek_letters_become_math_letters_and_other_scripts_get_fallbacks():
    assert tex_escape("α-cell") == r"\ensuremath{\alpha}-cell"
    assert tex_escape("Δέ") == r"\ensuremath{\Delta}\ensuremath{\acute{\epsilon}}"
    assert tex_escape("ΑΟ") == r"\ensuremath{\mathrm{A}}\ensuremath{\mathrm{O}}"
    assert unicode_fallbacks("漢 é ’ x") == [r"\DeclareUnicodeCharacter{6F22}{\texttt{[U+6F22]}}"]


@pytest.fixture
def script_run(run_dir: Path, tmp_path: Path) -> Path:  # noqa: F811
    d = tmp_path / "scripts-run"
    shutil.copytree(run_dir, d, ignore=shutil.ignore_patterns("*.pt", "latex"))
    s = json.loads((d / "summary.json").read_text())
    s["class_names"] = NAMES
    s["per_class"] = {n: {"dice": 0.1 * (i + 1), "iou": 0.05 * (i + 1), "in_ground_truth": True}
                      for i, n in enumerate(NAMES)}
    (d / "summary.json").write_text(json.dumps(s))
    return d


@pytest.mark.parametrize("engine", ["pdflatex", "lualatex"])
def test_a_report_with_greek_and_cjk_class_names_compiles(script_run: Path, engine: str):
    if shutil.which(engine) is None:
        pytest.skip(f"{engine} is not installed")
    folder = write_latex_report(script_run).parent
    done = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "report.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-2000:]
    if shutil.which("pdftotext") and engine == "pdflatex":
        text = subprocess.run(["pdftotext", str(folder / "report.pdf"), "-"], capture_output=True, text=True,
                              check=True).stdout
        assert "[U+6F22]" in text and "café" in text


def test_the_figures_draw_greek_cyrillic_and_cjk_class_names_not_empty_boxes(script_run: Path):
    """The figures' font list falls back glyph by glyph (DejaVu Serif, bundled with matplotlib, has Greek and
    Cyrillic; a CJK font where the system has one): before, a generic 'serif' gave matplotlib one font, and every
    glyph it lacked was drawn as an empty box, with a 'Glyph ... missing' warning as the only trace."""
    from cnnlab.report.latex_template import _CJK_FILES

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_latex_report(script_run)
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not [m for m in missing if "CJK" not in m], missing  # Greek and Cyrillic: always drawn
    if any(Path(f).is_file() for f in _CJK_FILES):
        assert missing == []


def test_a_class_name_with_a_non_utf8_byte_reaches_every_report(script_run: Path):
    """A Latin-1 class folder (caf\\xe9, held as the surrogate escape '\\udce9'): report.md/html and the LaTeX
    pieces failed with UnicodeEncodeError; now the byte is written as its escape, and the LaTeX compiles."""
    s = json.loads((script_run / "summary.json").read_text())
    s["per_class"] = {os.fsdecode(b"caf\xe9"): {"dice": 0.5, "iou": 0.3, "in_ground_truth": True},
                      "b": {"dice": 0.1, "iou": 0.05, "in_ground_truth": True}}
    (script_run / "summary.json").write_text(json.dumps(s))
    write_report(script_run)
    assert "caf\\udce9" in (script_run / "report.md").read_text()
    folder = write_latex_report(script_run).parent
    assert "caf\\textbackslash{}udce9" in (folder / "table_per_class.tex").read_text()
    if shutil.which("pdflatex"):
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"], cwd=folder,
                              capture_output=True, text=True, timeout=240, check=False)
        assert done.returncode == 0, done.stdout[-2000:]
