"""LaTeX pieces shared by the run and study reports: escaping, booktabs tables, figures, the conventions paragraph."""
from __future__ import annotations

import re
import textwrap
import unicodedata
from pathlib import Path

from cnnlab.engine.rundir import write_text_atomic
from cnnlab.tasks import TASKS

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\ensuremath{<}",
            ">": r"\ensuremath{>}", "|": r"\ensuremath{|}", "±": r"\ensuremath{\pm}", "Δ": r"\ensuremath{\Delta}",
            "—": "--", "×": r"\ensuremath{\times}", "-": "-{}", '"': "''"}
# a hyphen before a hyphen ('--no-cache' is no en dash); a quote opening a word as an opening quote (`` ` ``: 'dice_ce'
# was typeset with two closing quotes), any other double quote closing; the rest of the text as in _ESCAPES
_ESCAPE_RE = re.compile("(?P<hyphen>-(?=-))|(?:^|(?<=[\\s(\\[]))(?P<open>['\"])|"
                        + "|".join(re.escape(k) for k in _ESCAPES if k != "-"))
HEADER = "% written by cnnlab ({what} of {source}); \\input this file; needs \\usepackage{{booktabs,graphicx}}\n"
TEXT_WIDTH_PT = 397.0  # 5.5 in, NeurIPS's text width and report.tex's: wide tables are set smaller or split to fit
_CHAR_PT = {"\\small": 4.6, "\\footnotesize": 4.1}  # mean character width of table cells (digits 0.5 em, bold wider)
_COL_PAD_PT = 12.0  # booktabs/tabular \tabcolsep on both sides


def _escape_one(m: re.Match) -> str:
    if m.group("open"):
        return "`" if m.group("open") == "'" else "``"
    return _ESCAPES[m.group(0)]


def tex_escape(text: object) -> str:
    """Plain text (class, variant, run names, labels) safe in LaTeX text mode, OT1 or T1 font encoding alike;
    Greek letters as math letters (greek), which every engine and font typesets; the surrogate escape of a
    non-UTF-8 byte in a name as its text, \\udce9 (it cannot be written to a UTF-8 file)."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return greek(_ESCAPE_RE.sub(_escape_one, text))


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


def tt(name: object) -> str:
    """A name in typewriter type that may break after _ / - and spaces: long run and variant names overflowed the
    line in running text."""
    return "\\texttt{" + re.sub(r"(\\_|/|-\{\}|-)", r"\1\\allowbreak{}", tex_escape(name)) + "}"


def wrapped(text: str, width: int = 42) -> str:
    """Plain text escaped, in lines of at most `width` characters stacked in one cell (a nested tabular), so a long
    row label keeps a table narrow instead of splitting it."""
    lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]
    if len(lines) == 1:
        return tex_escape(text)
    body = "\\\\".join(tex_escape(t) for t in lines)
    return f"\\begin{{tabular}}[t]{{@{{}}l@{{}}}}{body}\\end{{tabular}}"


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


def visible_chars(cell: str) -> int:
    """About how many characters a LaTeX cell shows: the longer line of a stacked cell, markup left out."""
    cell = re.sub(r"\\begin\{tabular\}\[\w\]\{@\{\}\w@\{\}\}|\\end\{tabular\}", "", cell)
    lines = cell.split("\\\\")
    strip = lambda t: re.sub(r"\\ensuremath\{\\?\w*.?\}", "x", re.sub(r"\\[a-zA-Z]+\{\}", "x", t))
    return max(len(re.sub(r"\\[a-zA-Z]+\*?|[{}$^]", "", strip(t)).strip()) for t in lines)


def column_specs(align: str) -> list[str]:
    """'lp{0.3\\linewidth}rr' -> ['l', 'p{0.3\\linewidth}', 'r', 'r']."""
    return re.findall(r"[lrc]|p\{[^}]*\}", align)


def _col_widths(headers: list[str], rows: list[list[str]], size: str, specs: list[str]) -> list[float]:
    """Estimated widths in pt: a p{F\\linewidth} column is its fraction of the text, any other its longest cell."""
    out = []
    for spec, col in zip(specs, zip(headers, *rows)):
        frac = re.fullmatch(r"p\{([\d.]+)\\linewidth\}", spec)
        out.append(float(frac.group(1)) * TEXT_WIDTH_PT + _COL_PAD_PT if frac else
                   max(visible_chars(c) for c in col) * _CHAR_PT[size] + _COL_PAD_PT)
    return out


def _fit(headers: list[str], rows: list[list[str]], keep: int, specs: list[str]) -> tuple[str, list[list[int]]]:
    """The font size and the column groups of each part: \\small if the table fits TEXT_WIDTH_PT, else
    \\footnotesize, else split at \\footnotesize into parts that each repeat the first `keep` columns. Never
    scaled: a \\resizebox shrank a study's tables to 2-6 pt."""
    for size in _CHAR_PT:
        widths = _col_widths(headers, rows, size, specs)
        if sum(widths) <= TEXT_WIDTH_PT or sum(widths[:keep]) > TEXT_WIDTH_PT / 2:  # parts would not help
            return size, [list(range(len(headers)))]
    parts, used = [[]], sum(widths[:keep])
    for i in range(keep, len(headers)):
        if parts[-1] and used + widths[i] > TEXT_WIDTH_PT:
            parts.append([])
            used = sum(widths[:keep])
        parts[-1].append(i)
        used += widths[i]
    return size, [list(range(keep)) + p for p in parts]


def _caption_lines(caption: str) -> list[str]:
    """Caption above the table with space below it (not on the \\toprule): the caption package's top position
    where the paper loads it, else the skip the standard classes put above a caption."""
    return ["  \\ifdefined\\captionsetup\\captionsetup{position=top}\\fi", f"  \\caption{{{caption}}}",
            "  \\ifdefined\\captionsetup\\else\\vspace{\\abovecaptionskip}\\fi"]


def table_tex(headers: list[str], rows: list[list[str]], caption: str, label: str, source: str,
              align: str | None = None, keep: int = 1) -> str:
    """Booktabs table floats; headers and rows must already be LaTeX (escaped). Caption above, NeurIPS style.
    A table too wide for the text at \\footnotesize is split into parts (see _fit), labelled LABEL, LABEL-2, ..."""
    specs = column_specs(align or "l" + "r" * (len(headers) - 1))
    size, parts = _fit(headers, rows, keep, specs)
    lines = [HEADER.format(what="table", source=source)]
    for n, cols in enumerate(parts, 1):
        cap = caption if n == 1 else f"{caption.split('. ')[0].rstrip('.')} (continued)."
        if len(parts) > 1:
            cap += f" Part {n} of {len(parts)}."
        lines += ["\\begin{table}[t]", "  \\centering", *_caption_lines(cap),
                  f"  \\label{{{label if n == 1 else f'{label}-{n}'}}}", f"  {size}",
                  f"  \\begin{{tabular}}{{{''.join(specs[i] for i in cols)}}}", "    \\toprule",
                  "    " + " & ".join(headers[i] for i in cols) + " \\\\", "    \\midrule"]
        lines += ["    " + " & ".join(r[i] for i in cols) + " \\\\" for r in rows]
        lines += ["    \\bottomrule", "  \\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def figure_tex(file: str, caption: str, label: str, source: str, width: str = "\\linewidth") -> str:
    """A figure float including one file that sits beside it (report.tex's folder, or \\graphicspath)."""
    size = f"width={width},height=0.7\\textheight,keepaspectratio"  # tall figures stay on one page
    return "\n".join([HEADER.format(what="figure", source=source), "\\begin{figure}[t]", "  \\centering",
                      f"  \\includegraphics[{size}]{{{file}}}", f"  \\caption{{{caption}}}",
                      f"  \\label{{{label}}}", "\\end{figure}", ""])


APPENDIX = ("run_notes",)  # pieces report.tex puts after \\appendix, not among the results


def document_tex(title: str, pieces: list[str], fallbacks: list[str] | None = None,
                 preamble: tuple[str, ...] = ("\\documentclass{article}", "\\usepackage[utf8]{inputenc}",
                                              "\\usepackage{booktabs}", "\\usepackage{graphicx}")) -> str:
    """The standalone report: preamble (latex_template's, the class line first) plus one \\input per piece, the
    run notes in an appendix; compiled with `pdflatex report.tex` (or lualatex or xelatex, which need no
    inputenc). fallbacks: unicode_fallbacks of the pieces, for pdflatex only."""
    unicode = ["% names in other scripts: pdflatex shows them as code points (lines below; copy them into your",
               "% paper's preamble with the pieces); lualatex with a font that has them shows the characters",
               "\\ifdefined\\pdftexversion", *fallbacks, "\\fi"] if fallbacks else []
    body = [f"\\input{{{p}}}" for p in pieces if p not in APPENDIX]
    appendix = [f"\\input{{{p}}}" for p in pieces if p in APPENDIX]
    return "\n".join([
        "% Standalone cnnlab report: run `pdflatex report.tex` in this folder. To use the pieces in a paper, copy",
        "% this folder next to it, add \\usepackage{booktabs,graphicx} and \\graphicspath{{FOLDER/}}, and",
        "% \\input{FOLDER/table_...} or \\input{FOLDER/fig_...} where they belong.",
        *preamble, *unicode, f"\\title{{{title}}}", "\\author{}", "\\date{}", "\\begin{document}", "\\maketitle",
        *body, *(["\\clearpage", "\\appendix", *appendix] if appendix else []), "\\end{document}", ""])


def notes_tex(notes: list[str], source: str) -> str:
    """The run's runtime notes (a fallback taken, a cache skipped) as a short list for the appendix: they are not
    results, and set inside the Results paragraph they overflowed the line."""
    items = [f"  \\item {tex_escape(n)}".replace("/", "/\\allowbreak{}") for n in notes]  # long paths break
    return "\n".join([f"% written by cnnlab (run notes of {source}); \\input this file",
                       "\\section{Run notes}", "\\begin{itemize}", *items, "\\end{itemize}", ""])


def write_pieces(folder: Path, title: str, pieces: dict[str, str], preamble: tuple[str, ...] | None = None) -> Path:
    """Write each piece as NAME.tex and report.tex that inputs them in order; returns report.tex."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in pieces.items():
        write_text_atomic(folder / f"{name}.tex", text)
    path = folder / "report.tex"
    fallbacks = unicode_fallbacks(title + "".join(pieces.values()))
    write_text_atomic(path, document_tex(title, list(pieces), fallbacks, *([preamble] if preamble else [])))
    return path


def conventions_tex(task: str, split: str) -> str:
    """The conventions paragraph of a task (named as summary.json names it) for a paper: its LaTeX text where it
    has one, else the plain paragraph of the study table, escaped; "" for a task cnnlab does not know."""
    t = TASKS.get(task)
    if t is not None and t.conventions_tex:
        return t.conventions_tex.format(split=tex_escape(split))
    return tex_escape(t.conventions_text().replace("`", "") if t is not None else "")
