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
_CM_RC = {"mathtext.fontset": "cm", "axes.formatter.use_mathtext": True}
_CM_FONTS = ("Latin Modern Roman",)
_LM_FILES = ("lmroman10-regular.otf", "lmroman10-bold.otf", "lmroman10-italic.otf")
_LM_DIRS = ("/usr/share/texmf/fonts/opentype/public/lm", "/usr/share/texlive/texmf-dist/fonts/opentype/public/lm",
            "/usr/local/texlive/texmf-dist/fonts/opentype/public/lm", "/usr/share/fonts/opentype/lmodern")
_TIMES_RC = {"mathtext.fontset": "stix", "axes.formatter.use_mathtext": True}
_TIMES_FONTS = ("STIXGeneral", "Times New Roman")
# after the page's own font, glyph by glyph: DejaVu Serif (bundled with matplotlib: Greek, Cyrillic, symbols), then
# a CJK font where one is installed. A generic "serif" family gave matplotlib one font only, so Greek or Chinese
# class names came out as empty boxes in the figures while report.tex's text showed them.
_FALLBACK_FONTS = ("DejaVu Serif", "Noto Serif CJK SC", "Noto Sans CJK SC", "Droid Sans Fallback", "WenQuanYi Zen Hei")
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
        "\\usepackage[letterpaper,textwidth=5.5in,textheight=9in,centering]{geometry}"),
        {**_CM_RC, **_fonts(_CM_FONTS), **_SIZES_RC})


# Times where its font metrics are installed: mathptmx.sty comes with texlive-latex-recommended, but the fonts it
# loads (ptmr8t.tfm) with texlive-fonts-recommended, so the style file alone is no test. A font that cannot be
# loaded is probed quietly (pdfTeX/LuaTeX's \suppressfontnotfounderror) and the page keeps Computer Modern.
_TIMES_IF_INSTALLED = (
    "\\newif\\ifcnnlabtimes",
    "\\ifdefined\\suppressfontnotfounderror\\begingroup\\suppressfontnotfounderror=1 \\font\\cnnlabprobe=ptmr8t\\relax"
    "\\ifx\\cnnlabprobe\\nullfont\\else\\global\\cnnlabtimestrue\\fi\\endgroup\\fi",
    "\\ifcnnlabtimes\\IfFileExists{mathptmx.sty}{\\usepackage{mathptmx}}{}\\fi")


def _neurips() -> Template:
    return Template("neurips", (
        "\\documentclass[10pt]{article}", *_COMMON,
        "\\usepackage[T1]{fontenc}", *_TIMES_IF_INSTALLED,
        "\\usepackage[letterpaper,textwidth=5.5in,textheight=9in,top=1in,headheight=12pt,headsep=25pt,"
        "footskip=30pt]{geometry}", "\\setlength{\\parindent}{0pt}", "\\setlength{\\parskip}{5.5pt}"),
        {**_TIMES_RC, **_fonts(_TIMES_FONTS), **_SIZES_RC})


def _style_file(path: str) -> Template:
    p = Path(path)
    if not p.is_file():
        raise CnnlabError(f"--template {path}: no such style file",
                          "download neurips_2024.sty and pass its path, or use --template neurips (the same page "
                          "from standard packages)")
    return Template(str(p), ("\\documentclass{article}", f"\\usepackage[preprint]{{{p.stem}}}", *_COMMON,
                             "\\usepackage[T1]{fontenc}"), {**_TIMES_RC, **_fonts(_TIMES_FONTS), **_SIZES_RC})


def _fonts(page: tuple[str, ...]) -> dict:
    """font.family as the installed families in order (the page's font, then the fallbacks): matplotlib draws each
    glyph with the first family that has it."""
    _cjk_fallback()
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return {"font.family": [name for name in (*page, *_FALLBACK_FONTS) if name in installed]}


# the system's CJK fonts where Debian puts them: matplotlib's font list is a cache, built before they may have
# been installed, so they are added by file
_CJK_FILES = ("/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
              "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
              "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
              "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")


@lru_cache(maxsize=1)
def _cjk_fallback() -> None:
    known = {f.fname for f in font_manager.fontManager.ttflist}
    for path in _CJK_FILES:
        if Path(path).is_file() and path not in known:
            font_manager.fontManager.addfont(path)


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
