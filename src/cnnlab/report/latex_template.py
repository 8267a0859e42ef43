"""The page layout of the standalone LaTeX report (`cnnlab report FOLDER --format latex --template ...`) and the
matplotlib settings that give its figures the document's fonts.

article: the standard article class with a 5.5 in text width (NeurIPS's) and Latin Modern (Computer Modern)
text; figures in Latin Modern too where TeX installed its OpenType files (else DejaVu Serif), maths in
matplotlib's cm. neurips: NeurIPS's page (5.5 x 9 in text, 10 pt Times) rebuilt from standard packages, since
neurips_2024.sty cannot be installed offline; figures in STIX, matplotlib's bundled Times-like serif. A path to a
.sty file (a downloaded neurips_2024.sty) is copied beside report.tex and loaded with [preprint], with the
neurips figure fonts.

Figures are drawn at sizes meant for a 5.5 in text width (the caller's figsize), so 8-9 pt figure text stays 8-9 pt
in the paper; the pieces are the same for every template, only report.tex's preamble differs."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from matplotlib import font_manager

from cnnlab.errors import CnnlabError

TEXT_WIDTH_IN = 5.5
_COMMON = ["\\usepackage[utf8]{inputenc}", "\\usepackage{booktabs}", "\\usepackage{graphicx}",
           "\\usepackage[tableposition=top,font=small,labelfont=bf]{caption}", "\\usepackage{url}"]
# Latin Modern (the article's font) where TeX installed it, else DejaVu Serif: matplotlib's bundled cmr10 has TeX's
# own encoding, so '_', '±' and 'Δ' came out as blanks, 'ffi' and boxes
_CM_RC = {"font.family": "serif", "font.serif": ["Latin Modern Roman", "DejaVu Serif"], "mathtext.fontset": "cm",
          "axes.formatter.use_mathtext": True}
_LM_FILES = ("lmroman10-regular.otf", "lmroman10-bold.otf", "lmroman10-italic.otf")
_LM_DIRS = ("/usr/share/texmf/fonts/opentype/public/lm", "/usr/share/texlive/texmf-dist/fonts/opentype/public/lm",
            "/usr/local/texlive/texmf-dist/fonts/opentype/public/lm", "/usr/share/fonts/opentype/lmodern")
_TIMES_RC = {"font.family": "serif", "font.serif": ["STIXGeneral", "Times New Roman", "DejaVu Serif"],
             "mathtext.fontset": "stix", "axes.formatter.use_mathtext": True}
_SIZES_RC = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
             "legend.fontsize": 8, "figure.titlesize": 9}


@dataclass(frozen=True)
class Template:
    """A report.tex preamble (the class line first) and the matplotlib rcParams of its figures."""
    name: str
    preamble: tuple[str, ...]
    figure_rc: dict

    def install(self, folder: Path) -> None:
        """Copy a user's style file beside report.tex (a named template needs nothing)."""
        if self.name.endswith(".sty"):
            shutil.copy2(self.name, folder / Path(self.name).name)


def _article() -> Template:
    return Template("article", (
        "\\documentclass[10pt]{article}", *_COMMON,
        # T1 only with Latin Modern (vector fonts); the pieces are escaped to work in OT1 and T1 alike
        "\\IfFileExists{lmodern.sty}{\\usepackage[T1]{fontenc}\\usepackage{lmodern}}{}",
        "\\usepackage[letterpaper,textwidth=5.5in,textheight=9in,centering]{geometry}"), {**_CM_RC, **_SIZES_RC})


def _neurips() -> Template:
    return Template("neurips", (
        "\\documentclass[10pt]{article}", *_COMMON,
        "\\usepackage[T1]{fontenc}", "\\IfFileExists{mathptmx.sty}{\\usepackage{mathptmx}}{}",
        "\\usepackage[letterpaper,textwidth=5.5in,textheight=9in,top=1in,headheight=12pt,headsep=25pt,"
        "footskip=30pt]{geometry}", "\\setlength{\\parindent}{0pt}", "\\setlength{\\parskip}{5.5pt}"),
        {**_TIMES_RC, **_SIZES_RC})


def _style_file(path: str) -> Template:
    p = Path(path)
    if not p.is_file():
        raise CnnlabError(f"--template {path}: no such style file",
                          "download neurips_2024.sty and pass its path, or use --template neurips (the same page "
                          "from standard packages)")
    return Template(str(p), ("\\documentclass{article}", f"\\usepackage[preprint]{{{p.stem}}}", *_COMMON,
                             "\\usepackage[T1]{fontenc}"), {**_TIMES_RC, **_SIZES_RC})


@lru_cache(maxsize=1)
def latin_modern() -> bool:
    """Make TeX's Latin Modern Roman OpenType files known to matplotlib (it does not look in TeX's folders);
    False where they are not installed (the figures then use DejaVu Serif)."""
    found = False
    for folder in _LM_DIRS:
        for name in _LM_FILES:
            if (Path(folder) / name).is_file():
                font_manager.fontManager.addfont(str(Path(folder) / name))
                found = True
        if found:
            return True
    return False


TEMPLATES = {"article": _article, "neurips": _neurips}


def template(name: str) -> Template:
    """article, neurips, or the path of a .sty file."""
    if name.endswith(".sty"):
        return _style_file(name)
    latin_modern()
    if name not in TEMPLATES:
        raise CnnlabError(f"unknown LaTeX template {name!r}; valid: {', '.join(TEMPLATES)} or a path to a .sty file",
                          "cnnlab report RUN_DIR --format latex --template neurips")
    return TEMPLATES[name]()
