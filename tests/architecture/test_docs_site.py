"""The documentation site (mkdocs.yml) builds with --strict, so a broken link or anchor fails the suite, and a
broken one is shown to fail it; every public name of the API has a docstring for the generated reference."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cnnlab

ROOT = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).with_name("mkdocs")
needs_mkdocs = pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs is part of the dev install (make test)")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([str(MKDOCS), "build", "--strict", "-f", str(config), "-d", str(site)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@needs_mkdocs
@pytest.mark.slow  # two site builds, ~5 s each
def test_the_site_builds_strictly_and_a_broken_link_fails_it(tmp_path):
    result = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    for name in ("new_recipe", "run_study", "load_run", "Prediction"):
        assert name in reference
    assert "masks are the same" in reference  # Run.predict's docstring, generated
    home = (tmp_path / "site" / "index.html").read_text()
    assert "Use from Python" in home  # the README is the home page
    guide = (tmp_path / "site" / "guide" / "index.html").read_text()  # the commands in full, moved from the README
    # its table's `a\|b` code shows a|b as on GitHub, and [--flag X] [--other] keeps its space
    assert "auto&#124;imagenet&#124;none" in guide and "auto\\|imagenet" not in guide
    assert "&#91;--minutes M&#93; &#91;--encoder" in guide
    # the same site with one link to a page that does not exist
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in (ROOT / "docs").glob("*.md"):
        (docs / page.name).write_text(page.read_text())
    (docs / "python.md").write_text((docs / "python.md").read_text() + "\nSee [the missing page](nowhere.md).\n")
    config = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    config = config.replace("- scripts/mkdocs_hooks.py", f"- {ROOT / 'scripts' / 'mkdocs_hooks.py'}")
    config = config.replace("paths: [src]", f"paths: [{ROOT / 'src'}]")
    (tmp_path / "mkdocs.yml").write_text(config)
    broken = _build(tmp_path / "mkdocs.yml", tmp_path / "broken")
    assert broken.returncode != 0 and "nowhere.md" in broken.stderr


def test_every_public_name_has_a_docstring():
    public = {n: getattr(cnnlab, n) for n in cnnlab.__all__ if n != "__version__"}
    public |= {f"Run.{n}": m for n, m in inspect.getmembers(cnnlab.Run) if not n.startswith("_")}
    missing = [n for n, p in public.items() if not (inspect.getdoc(p.fget if isinstance(p, property) else p) or "")]
    assert missing == []
