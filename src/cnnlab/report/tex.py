"""LaTeX pieces shared by the run and study reports: escaping, booktabs tables, figures, the conventions paragraph."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from cnnlab.engine.rundir import write_text_atomic
from cnnlab.metrics.names import TASK_CONVENTIONS_TEX, task_conventions

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\ensuremath{<}",
            ">": r"\ensuremath{>}", "|": r"\ensuremath{|}", "±": r"\ensuremath{\pm}", "Δ": r"\ensuremath{\Delta}",
            "—": "--", "×": r"\ensuremath{\times}"}
_ESCAPE_RE = re.compile("|".join(re.escape(k) for k in _ESCAPES))
HEADER = "% written by cnnlab ({what} of {source}); \\input this file; needs \\usepackage{{booktabs,graphicx}}\n"
# shrink a table to the line width only when it is wider (graphicx's \width is the natural width here)
FIT_OPEN = "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"


def tex_escape(text: object) -> str:
    """Plain text (class, variant, run names, labels) safe in LaTeX text mode, OT1 or T1 font encoding alike;
    Greek letters as math letters (greek), which every engine and font typesets."""
    return greek(_ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], str(text)))


# Greek in pdflatex: inputenc stops at "Unicode character not set up" (a class named α-cell); math letters need no
# package (textgreek needs the LGR fonts, often not installed). Capitals that look Latin are Latin letters.
_GREEK = dict(zip("αβγδεζηθικλμνξπρςστυφχψωΓΔΘΛΞΠΣΥΦΨΩ", (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi rho varsigma sigma tau upsilon phi "
    "chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega").split()))
_GREEK_LATIN = dict(zip("οΑΒΕΖΗΙΚΜΝΟΡΤΧ", "oABEZHIKMNOPTX"))
_ACCENTS = {"\u0301": "acute", "\u0300": "grave", "\u0308": "ddot", "\u0342": "tilde", "\u0304": "bar"}
_GREEK_RE = re.compile("[\u0370-\u03ff\u1f00-\u1fff]")


def _greek_letter(ch: str) -> str:
    base, *marks = unicodedata.normalize("NFD", ch)
    if base in _GREEK_LATIN:
        math = f"\\mathrm{{{_GREEK_LATIN[base]}}}"
    elif base in _GREEK:
        math = "\\" + _GREEK[base]
    else:  # a Greek sign with no math letter (a numeral sign, a coronis): its code point
        return f"[U+{ord(ch):04X}]"
    for mark in marks:
        if mark in _ACCENTS:
            math = f"\\{_ACCENTS[mark]}{{{math}}}"
    return f"\\ensuremath{{{math}}}"


def greek(text: str) -> str:
    """Greek letters (accented ones too) as math letters: Δέλτα -> \\Delta\\acute{\\epsilon}\\lambda\\tau\\alpha."""
    return _GREEK_RE.sub(lambda m: _greek_letter(m.group(0)), text)


def unicode_fallbacks(text: str) -> list[str]:
    """\\DeclareUnicodeCharacter lines for pdflatex, for the letters of other scripts in text (CJK, Cyrillic,
    Arabic ...; emoji): inputenc knows Latin and common punctuation only and would stop at the first of them. Each
    is typeset as its code point, [U+6F22]; the .tex keeps the real characters for lualatex/xelatex with a font
    that has them."""
    chars = sorted({c for c in text if ord(c) >= 0x370 and (unicodedata.category(c)[0] in "LNM" or ord(c) >= 0x1F000)})
    return [f"\\DeclareUnicodeCharacter{{{ord(c):04X}}}{{\\texttt{{[U+{ord(c):04X}]}}}}" for c in chars]


def signed(text: str) -> str:
    """Typeset the signs of numbers as math plus/minus (a text hyphen is too short for a minus sign)."""
    return re.sub(r"(?<![\w.}])([+-])(?=\d)", r"$\1$", text)


def slug(name: str) -> str:
    """A label-safe form of a run or study name, so two reports in one paper get distinct \\label's."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "cnnlab"


def stacked(top: str, bottom: str, align: str = "c", pos: str = "b") -> str:
    """Two lines in one table cell (a nested tabular: no extra package), to keep wide tables narrow."""
    return f"\\begin{{tabular}}[{pos}]{{@{{}}{align}@{{}}}}{top}\\\\{bottom}\\end{{tabular}}"


def header(label: str) -> str:
    """A column header, its parenthesised convention on a second line ('Dice fg (strict)')."""
    head, sep, rest = label.partition(" (")
    return stacked(tex_escape(head), tex_escape(sep.strip() + rest)) if sep else tex_escape(label)


def bold_best(rows: list[list[str]], columns: list[int], lower: list[bool]) -> list[list[str]]:
    """Bold the best value of each listed column (rows as display strings; the value is the cell's first number,
    e.g. the mean of 'mean ± std'). Ties at the shown precision are all bold; a column with fewer than two
    distinct values gets no bold, as nothing stands out."""
    out = [list(r) for r in rows]
    for col, low in zip(columns, lower):
        vals = {}
        for i, r in enumerate(rows):
            m = re.match(r"\s*([+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)", r[col])
            if m:
                vals[i] = m.group(1)
        if len({float(v) for v in vals.values()}) < 2:
            continue  # one value, or all equal: nothing stands out
        best = (min if low else max)(float(v) for v in vals.values())
        for i, v in vals.items():
            if float(v) == best:
                out[i][col] = f"\\textbf{{{out[i][col]}}}"
    return out


def table_tex(headers: list[str], rows: list[list[str]], caption: str, label: str, source: str,
              align: str | None = None) -> str:
    """A booktabs table float; headers and rows must already be LaTeX (escaped). Caption above, NeurIPS style."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = [HEADER.format(what="table", source=source), "\\begin{table}[t]", "  \\centering",
             f"  \\caption{{{caption}}}", f"  \\label{{{label}}}", "  \\small", "  " + FIT_OPEN.rstrip("\n"),
             f"  \\begin{{tabular}}{{{align}}}", "    \\toprule", "    " + " & ".join(headers) + " \\\\",
             "    \\midrule"]
    lines += ["    " + " & ".join(r) + " \\\\" for r in rows]
    lines += ["    \\bottomrule", "  \\end{tabular}}", "\\end{table}", ""]
    return "\n".join(lines)


def figure_tex(file: str, caption: str, label: str, source: str, width: str = "\\linewidth") -> str:
    """A figure float including one file that sits beside it (report.tex's folder, or \\graphicspath)."""
    size = f"width={width},height=0.7\\textheight,keepaspectratio"  # tall figures stay on one page
    return "\n".join([HEADER.format(what="figure", source=source), "\\begin{figure}[t]", "  \\centering",
                      f"  \\includegraphics[{size}]{{{file}}}", f"  \\caption{{{caption}}}",
                      f"  \\label{{{label}}}", "\\end{figure}", ""])


def document_tex(title: str, pieces: list[str], fallbacks: list[str] | None = None) -> str:
    """The standalone report: preamble plus one \\input per piece, compiled with `pdflatex report.tex` (or lualatex
    or xelatex, which need no inputenc). fallbacks: unicode_fallbacks of the pieces, for pdflatex only."""
    unicode = ["% names in other scripts: pdflatex shows them as code points (lines below; copy them into your",
               "% paper's preamble with the pieces); lualatex with a font that has them shows the characters",
               "\\ifdefined\\pdftexversion", *fallbacks, "\\fi"] if fallbacks else []
    return "\n".join([
        "% Standalone cnnlab report: run `pdflatex report.tex` in this folder. To use the pieces in a paper, copy",
        "% this folder next to it, add \\usepackage{booktabs,graphicx} and \\graphicspath{{FOLDER/}}, and",
        "% \\input{FOLDER/table_...} or \\input{FOLDER/fig_...} where they belong.",
        "\\documentclass{article}", "\\usepackage[utf8]{inputenc}",
        # T1 only with Latin Modern (vector fonts); the pieces are escaped to work in OT1 and T1 alike
        "\\IfFileExists{lmodern.sty}{\\usepackage[T1]{fontenc}\\usepackage{lmodern}}{}", "\\usepackage{booktabs}",
        "\\usepackage{graphicx}", *unicode,
        f"\\title{{{title}}}", "\\author{}", "\\date{}", "\\begin{document}", "\\maketitle",
        *[f"\\input{{{p}}}" for p in pieces], "\\end{document}", ""])


def write_pieces(folder: Path, title: str, pieces: dict[str, str]) -> Path:
    """Write each piece as NAME.tex and report.tex that inputs them in order; returns report.tex."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in pieces.items():
        write_text_atomic(folder / f"{name}.tex", text)
    path = folder / "report.tex"
    write_text_atomic(path, document_tex(title, list(pieces), unicode_fallbacks(title + "".join(pieces.values()))))
    return path


def conventions_tex(task: str, split: str) -> str:
    """The conventions paragraph of a task for a paper (metrics.names): its LaTeX text where it has one, else the
    plain paragraph of the study table, escaped."""
    if task in TASK_CONVENTIONS_TEX:
        return TASK_CONVENTIONS_TEX[task].format(split=tex_escape(split))
    return tex_escape(task_conventions(task, unknown="").replace("`", ""))
