"""The split types carry their own cache layout (data/types.py), so data/cache.py tells them apart by no branch:
the layout each writes is the one the cache has always written (CACHE_FORMAT 1), every type round-trips, and no
module of data/ branches on a split type (tests/tasks/test_tasks.py checks the parts above data/)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from cnnlab.data import cache
from cnnlab.data.types import ClsData, ColorData, SegData

SRC = Path(cache.__file__).resolve().parents[1]
SPLIT_NAMES = {"SegData", "ClsData", "ColorData"}


def _splits() -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 3, 4, 5), generator=g, dtype=torch.uint8)
    return {
        "seg": SegData(img, torch.randint(0, 3, (3, 4, 5), generator=g, dtype=torch.uint8), ["a", "b", "c"],
                       ["bg", "x", "y"], 255, ["a reader note"]),
        "cls": ClsData(img, torch.tensor([2, 0, 1]), ["a", "b", "c"], ["p", "q", "r"], []),
        "color": ColorData(img[:, :1], torch.randint(0, 256, (3, 2, 4, 5), generator=g, dtype=torch.uint8),
                           ["a", "b", "c"], "lab", ["n"]),
    }


# what meta.json has always held per kind (the layout before the split types carried it): arrays and fields
LAYOUT = {"seg": (["images", "masks"], {"class_names": ["bg", "x", "y"], "ignore_index": 255}),
          "cls": (["images", "labels"], {"class_names": ["p", "q", "r"]}),
          "color": (["images", "targets"], {"space": "lab"})}


@pytest.mark.parametrize("kind", list(LAYOUT))
def test_each_split_type_writes_the_cache_layout_and_reads_back_equal(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(cache, "MIN_BYTES", 0)  # the tiny split is stored anyway
    data = _splits()[kind]
    entry, root = tmp_path / "cache" / "entry", tmp_path / "data"
    root.mkdir()
    assert cache._store(tmp_path / "cache", entry, "k" * 64, data, "folders", root, "train", ("files", 0)) is None
    meta = json.loads((entry / "meta.json").read_text())
    arrays, fields = LAYOUT[kind]
    assert meta["cache_format"] == 1 and meta["kind"] == kind
    assert list(meta["arrays"]) == arrays and meta["fields"] == fields
    back = cache.read_entry(entry, "k" * 64)
    assert type(back) is type(data) and back.names == data.names and back.notes == data.notes
    for name in arrays:
        assert torch.equal(getattr(back, name), getattr(data, name)) and getattr(back, name).dtype == \
            getattr(data, name).dtype
    assert back.class_names == data.class_names
    assert getattr(back, "ignore_index", None) == getattr(data, "ignore_index", None)
    assert getattr(back, "space", None) == getattr(data, "space", None)


def test_a_segmentation_split_keeps_its_own_mask_encoding_through_the_cache(tmp_path, monkeypatch):
    """The folders reader's mask values (what predict writes masks with) come back from a cache hit."""
    monkeypatch.setattr(cache, "MIN_BYTES", 0)
    data = _splits()["seg"]
    data.mask_encoding = {"kind": "grey_levels", "values": [0, 100, 200]}
    entry, root = tmp_path / "cache" / "entry", tmp_path / "data"
    root.mkdir()
    assert cache._store(tmp_path / "cache", entry, "k" * 64, data, "folders", root, "train", ("files", 0)) is None
    assert cache.read_entry(entry, "k" * 64).mask_encoding == {"kind": "grey_levels", "values": [0, 100, 200]}


def _names_split_type(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id in SPLIT_NAMES for n in ast.walk(node))


def test_no_module_of_data_branches_on_a_split_type():
    found = []
    for path in sorted((SRC / "data").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" \
                    and len(node.args) == 2 and _names_split_type(node.args[1]):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
            elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops) \
                    and any(_names_split_type(c) for c in node.comparators):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, f"branches on the split type in data/ (give the split types a method instead): {found}"
