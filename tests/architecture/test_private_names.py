"""No module of cnnlab uses a name private to another module or package (issue 32): what crosses a module is public.

A name `_x` defined in a module is that module's; a private module `_m` inside a package (data/formats/folders/_scan)
is that package's, free to its modules and to none outside. ruff's import-private-name (PLC2701, on in pyproject)
keeps benchmarks and scripts to public names, but it treats every import inside one top-level package as the
package's own, so within src/cnnlab it sees nothing; this test draws the line at the module and package instead,
through imports and through attributes of an imported module (`imf._subdirs`)."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _dotted(node: ast.AST) -> list[str] | None:
    """a.b.c of an attribute chain on a plain name, else None."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    return [node.id, *reversed(names)] if isinstance(node, ast.Name) else None


def _references(tree: ast.AST, modules: set[str]) -> list[tuple[int, list[str]]]:
    """Every cnnlab name a module reaches: imported names, and attributes read off an imported cnnlab module."""
    refs, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "cnnlab":
            for a in node.names:
                full = f"{node.module}.{a.name}"
                refs.append((node.lineno, full.split(".")))
                if full in modules:
                    aliases[a.asname or a.name] = full
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "cnnlab":
                    refs.append((node.lineno, a.name.split(".")))
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "cnnlab"
    for node in ast.walk(tree):
        chain = _dotted(node) if isinstance(node, ast.Attribute) else None
        if chain and chain[0] in aliases:
            refs.append((node.lineno, [*aliases[chain[0]].split("."), *chain[1:]]))
    return refs


def private_uses(source: str, module: str, modules: set[str]) -> list[str]:
    """The references of `module`'s source to names private to a module or package it is not inside."""
    found = []
    for line, ref in _references(ast.parse(source), modules):
        for i, part in enumerate(ref):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(ref[:i])
                if module != owner and not module.startswith(owner + "."):
                    found.append(f"{module}:{line} uses {'.'.join(ref[:i + 1])}")
                break
    return found


def _tree(src: Path) -> dict[str, Path]:
    return {_module_name(p, src): p for p in sorted((src / "cnnlab").rglob("*.py"))}


def test_no_module_uses_a_name_private_to_another() -> None:
    tree = _tree(SRC)
    found = [use for name, path in tree.items() for use in private_uses(path.read_text(), name, set(tree))]
    assert found == [], "\n".join(found)


def test_the_check_catches_private_names_across_modules_and_allows_them_inside() -> None:
    modules = {"cnnlab.data.formats.imagefolder", "cnnlab.data.formats.folders", "cnnlab.data.formats.folders._scan",
               "cnnlab.report.build", "cnnlab.report.latex"}
    crossing = ("from cnnlab.report.build import _fmt\n"
                "from cnnlab.data.formats.folders._scan import find_split\n"
                "from cnnlab.data.formats import imagefolder as imf\n"
                "imf._subdirs(root)\n")
    assert private_uses(crossing, "cnnlab.new.classify", modules) == [
        "cnnlab.new.classify:1 uses cnnlab.report.build._fmt",
        "cnnlab.new.classify:2 uses cnnlab.data.formats.folders._scan",
        "cnnlab.new.classify:4 uses cnnlab.data.formats.imagefolder._subdirs"]
    inside = ("from cnnlab.data.formats.folders._scan import find_split\n"
              "from cnnlab.data.formats.folders import _scan as fs\n"
              "fs._helper()\n")
    assert private_uses(inside, "cnnlab.data.formats.folders._layout", modules) == []
    assert private_uses(inside, "cnnlab.data.formats.folders", modules) == []
    assert private_uses(inside, "cnnlab.data.formats.imagefolder", modules) != []
