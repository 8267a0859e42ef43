"""Run reports: the HTML parses, embeds every figure it names and every figure of the run; tables, config and
hardware are there; plots use the class and variant colours (checked on the pixels)."""
from __future__ import annotations

import base64
import csv
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import train
from cnnlab.figures.palette import class_colors
from cnnlab.report.build import write_report, write_run_report
from cnnlab.report.common import Doc, render_html
from cnnlab.report.study_figures import _mean_curve, headline_bars, per_class_dice_bars
from conftest import tiny_recipe

PNG = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects <img> attributes, class-colour swatches and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.swatches: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        if tag == "span" and a.get("class") == "sw":
            self.swatches.append(a["style"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    page.close()
    return page


def _tiny_png(path: Path, color: tuple[int, int, int]) -> bytes:
    Image.fromarray(np.full((8, 8, 3), color, np.uint8)).save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def run_dir(endovis_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report_runs")
    run = train(recipe_from_dict(tiny_recipe(endovis_root, out, train={"epochs": 1})))
    # figures other parts of cnnlab write (colorization, classification) and one nobody knows about yet
    _tiny_png(run / "figures" / "colorization_samples.png", (10, 200, 30))
    _tiny_png(run / "figures" / "zz_custom_plot.png", (200, 10, 30))
    return run


def test_html_embeds_every_figure_of_the_run(run_dir: Path):
    html_path = write_run_report(run_dir)
    page = _parse(html_path)
    files = {p.name: p.read_bytes() for p in (run_dir / "figures").glob("*.png")}
    assert {"loss_curves.png", "overlays.png", "per_class_dice.png", "colorization_samples.png",
            "zz_custom_plot.png"} <= set(files)
    embedded = {}
    for img in page.images:
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(PNG)
        embedded[Path(img["data-file"]).name] = raw
    assert embedded == files                     # every figure named is embedded, and every figure is named
    text = " ".join(page.text)
    assert "grey input, predicted colours, true colours" in text and "Zz custom plot" in text
    md = (run_dir / "report.md").read_text()
    for name in files:
        assert f"(figures/{name})" in md


def test_report_shows_tables_config_and_hardware(run_dir: Path):
    page = _parse(write_run_report(run_dir))
    s = json.loads((run_dir / "summary.json").read_text())
    text = " ".join(page.text)
    assert f"{s['metrics']['dice_mean']:.4f}" in text and "soft Dice per batch (course convention)" in text
    cols = class_colors(len(s["class_names"]))
    assert page.swatches == [f"background:rgb({r},{g},{b})" for r, g, b in cols]   # palette order = class order
    env = json.loads((run_dir / "env.json").read_text())
    assert env["torch"] in text and "Hardware and software" in text
    assert "name: tiny" in text and "# git:" in text                                # the resolved config.yaml
    md = (run_dir / "report.md").read_text()
    fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    for name, v in s["per_class"].items():
        gt = "yes" if v["in_ground_truth"] else "no"
        assert f"| {name} | {fmt(v['dice'])} | {fmt(v['iou'])} | {gt} |" in md


def _files(folder: Path) -> set[str]:
    """Every file under folder but the report's own two."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and p.name not in ("report.md", "report.html")}


def test_unfinished_run_gets_a_report_and_the_report_draws_nothing(run_dir: Path, tmp_path: Path):
    """Figures are the engine's, drawn as a run ends; a report of a run that has not ended says it has none yet."""
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial)
    (partial / "summary.json").unlink()
    shutil.rmtree(partial / "figures")
    before = _files(partial)
    page = _parse(write_report(partial))
    text = " ".join(page.text)
    assert "has not finished" in text and "No figures yet: the engine draws a run's figures when the run ends" in text
    assert page.images == []
    assert _files(partial) == before                                # nothing drawn into the run dir
    md = (partial / "report.md").read_text()                        # its epochs so far, as metrics.csv holds them
    assert "## Training so far" in md and "| epoch | training loss | validation loss | validation Dice" in md
    with open(partial / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(f"| {r['epoch']} | {float(r['train_loss']):.4f} | {float(r['val_loss']):.4f} |" in md
                        for r in rows)


def test_a_finished_run_lacking_a_figure_gets_a_line_naming_it(run_dir: Path, tmp_path: Path):
    """A run from an older cnnlab (or a figure that could not be drawn): named as missing, not drawn by the report."""
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    (old / "figures" / "per_class_dice.png").unlink()
    before = _files(old)
    page = _parse(write_report(old))
    text = " ".join(page.text)
    assert "per_class_dice.png: not in figures/ (the engine draws it as a run ends" in text
    assert "loss_curves.png: not in" not in text and "No figures yet" not in text
    shown = [Path(i["data-file"]).name for i in page.images]
    assert "per_class_dice.png" not in shown and "loss_curves.png" in shown
    assert _files(old) == before


def test_html_escapes_text():
    doc = Doc("a <b> & c")
    doc.p("<script>alert(1)</script>")
    doc.table(["x<y"], [["1 & 2"]])
    out = render_html(doc, Path("."))
    assert "<script>" not in out and "&lt;script&gt;" in out and "x&lt;y" in out and "1 &amp; 2" in out


def _has_color(path: Path, rgb, tol: int = 3) -> bool:
    arr = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return bool((np.abs(arr - np.array(rgb)).max(-1) <= tol).any())


def test_per_class_bars_use_the_palette(tmp_path: Path):
    per_class = {"background": {"dice": 0.9, "in_ground_truth": True},
                 "tool": {"dice": 0.6, "in_ground_truth": True},
                 "needle": {"dice": 0.7, "in_ground_truth": True},
                 "absent": {"dice": None, "in_ground_truth": False}}
    path = per_class_dice_bars(per_class, tmp_path / "pc.png")
    cols = class_colors(4)
    assert _has_color(path, cols[1]) and _has_color(path, cols[2])
    assert not _has_color(path, cols[3])          # no bar for a class absent from the ground truth


def test_headline_bars_colour_each_variant(tmp_path: Path):
    def row(variant, values):
        vals = list(values.values())
        return {"variant": variant, "label": "label_fraction=0.1", "grid": {"data.label_fraction": 0.1},
                "stats": {"dice_mean": {"mean": sum(vals) / len(vals), "std": 0.01, "n": len(vals),
                                        "values": values}}}

    results = {"variants": ["a", "b"], "rows": [row("a", {"0": 0.5, "1": 0.52}), row("b", {"0": 0.6, "1": 0.61})]}
    path = headline_bars(results, "dice_mean", "Dice (strict)", tmp_path / "h.png")
    assert _has_color(path, (31, 119, 180)) and _has_color(path, (255, 127, 14))   # tab:blue, tab:orange


def test_mean_curve_over_seeds_of_unequal_length():
    m = _mean_curve([[1.0, 2.0, 3.0], [3.0, 4.0], [float("nan"), 6.0]])
    assert m[0] == pytest.approx(2.0) and m[1] == pytest.approx(4.0) and m[2] == pytest.approx(3.0)
    assert math.isnan(_mean_curve([[float("nan")]])[0])
