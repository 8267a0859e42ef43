"""mkdocs hooks: the README is the site's home page and benchmarks/README.md its benchmarks page, read from where
they live (no copy to keep in step); links between them and docs/ are rewritten to the site's page names."""
from __future__ import annotations

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


def on_page_markdown(markdown: str, page, config, files) -> str:
    for old, new in LINKS.get(page.file.src_uri, LINKS["*"]):
        markdown = markdown.replace(old, new)
    return markdown
