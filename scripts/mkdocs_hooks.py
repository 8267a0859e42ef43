"""mkdocs hooks: the README is the site's home page and benchmarks/README.md its benchmarks page, read from where
they live (no copy to keep in step); links between them and docs/ are rewritten to the site's page names."""
from __future__ import annotations

import html
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"index.md": ROOT / "README.md", "benchmarks.md": ROOT / "benchmarks" / "README.md"}
LINKS = {  # page -> (link prefix in the Markdown, what it becomes on the site)
    "index.md": [("](docs/", "]("), ("](benchmarks/README.md", "](benchmarks.md")],
    "benchmarks.md": [("](../docs/", "]("), ("](../README.md", "](index.md")],
    "*": [("](../README.md", "](index.md"), ("](../benchmarks/README.md", "](benchmarks.md")],
}


def on_files(files: Files, config) -> Files:
    for name, path in PAGES.items():
        files.append(File.generated(config, name, content=path.read_text()))
    return files


CODE_WITH_PIPE = re.compile(r"`([^`]*\\\|[^`]*)`")


def _table_code(line: str) -> str:
    """A code span holding an escaped pipe in a table row (`a\\|b`) as HTML code: GitHub shows it as a|b, while
    Python-Markdown's tables would keep the backslash inside the code."""
    if not line.startswith("|"):
        return line
    return CODE_WITH_PIPE.sub(lambda m: f"<code>{_literal(m.group(1))}</code>", line)


def _literal(code: str) -> str:
    """Code as HTML that Markdown's inline patterns leave alone (brackets would read as links, * and _ as
    emphasis)."""
    text = html.escape(code).replace("\\|", "&#124;")
    return "".join(f"&#{ord(c)};" if c in "[]*_`" else c for c in text)


def on_page_markdown(markdown: str, page, config, files) -> str:
    for old, new in LINKS.get(page.file.src_uri, LINKS["*"]):
        markdown = markdown.replace(old, new)
    return "\n".join(_table_code(line) for line in markdown.split("\n"))
