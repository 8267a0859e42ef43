"""Plain text every part writes or reads the same way: markdown tables (table.md, report.md, `cnnlab compare`,
`cnnlab ensemble`) and sizes written AxB (`--window 256x256`, `--input 3x64x64`, a layer list's `256x256x3`).
It imports nothing of cnnlab, so every part may use it (the bottom line of the layers contract, beside `errors`);
a caller turns a size it cannot read into its own one-line error, naming its own option."""
from __future__ import annotations


def markdown_text(text) -> str:
    """Text for markdown that no viewer turns into markup: `<` and `>` as entities, so a class named `<script>` is
    text; `&` stays as written (a bare `&` renders as itself, and `R&D` reads as R&D in the raw file too)."""
    return str(text).replace("<", "&lt;").replace(">", "&gt;")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped, markup made text by markdown_text): the one markdown
    table of cnnlab (table.md, report.md, `cnnlab compare`, `cnnlab ensemble`)."""
    esc = lambda c: markdown_text(c).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(map(esc, headers)) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    return "\n".join(out + ["| " + " | ".join(map(esc, r)) + " |" for r in rows])


def parse_size(text: str, n: int) -> tuple[int, ...] | None:
    """'3x64x64' -> (3, 64, 64): n positive whole numbers joined by x (either case, spaces around each); None for
    anything else, so that the caller says which option and which order it wanted."""
    parts = text.strip().lower().split("x")
    if len(parts) != n or not all(p.strip().isdecimal() and int(p) > 0 for p in parts):
        return None
    return tuple(int(p) for p in parts)
