"""Every file the code, the recipes and the docs send a reader to exists (a hint naming a merged-away results file
was printed by `cnnlab new --task classification` until this test)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# a path from the repository's root (not the tail of a longer one: tests/benchmarks/x.py is not benchmarks/x.py)
MENTION = re.compile(r"(?<![\w./-])(?:docs|benchmarks|recipes|tests|scripts)/[A-Za-z0-9_./-]+\.(?:md|py|sh|yaml)")
LINK = re.compile(r"\]\(([^)#\s]+\.(?:md|py|sh|yaml))")


def _texts() -> list[Path]:
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").glob("*.md"),
             *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "src").rglob("*.py"), *(ROOT / "recipes").rglob("*.yaml"),
             *(ROOT / "tests").rglob("*.py"), *(ROOT / "scripts").glob("*"), ROOT / "Makefile", ROOT / "pyproject.toml"]
    return [f for f in files if f.is_file() and f != Path(__file__).resolve()]  # not this file's own examples


def test_every_mentioned_repository_path_exists() -> None:
    missing = sorted({f"{f.relative_to(ROOT)}: {m}" for f in _texts() for m in MENTION.findall(f.read_text())
                      if not (ROOT / m).exists()})
    assert not missing, missing


def test_every_markdown_link_to_a_file_resolves_from_its_page() -> None:
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").glob("*.md")]
    missing = sorted({f"{p.relative_to(ROOT)}: {m}" for p in pages for m in LINK.findall(p.read_text())
                      if not m.startswith("http") and not (p.parent / m).exists()})
    assert not missing, missing
