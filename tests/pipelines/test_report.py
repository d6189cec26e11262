"""The eval report: tables, contact-sheet order, thumbnails and links, escaping, and the page as
headless Chromium renders it from the file system."""

from __future__ import annotations

import dataclasses
import html
import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from matteflow.pipelines.report import (
    RunResult,
    Sample,
    checkerboard,
    contrasting_colour,
    heat_map,
    thumb_size,
    write_report,
)
from matteflow.transforms.quality import scores
from matteflow.transforms.reader import load_alpha

W, H = 64, 48
THUMB = 32  # below the image size, so every thumbnail is a real downscale
RADIUS = 14
SUBJECT = (230, 40, 200)  # a magenta disc: the contrasting background must be green
BACKDROP = (120, 130, 140)
GREEN = (0, 200, 0)
ODD_ID = 'a<&>"b'
ODD_RUN = "rembg <&>"
SAMPLES_SPEC = [  # id, category
    ("s1", "shoes"),
    (ODD_ID, "bags"),
    ("s3", "shoes"),
    ("s4", "bags"),
]
# Predicted disc radius minus the true one, per sample; None: the row failed.
DELTAS: dict[str, list[int | None]] = {
    "isnet/none": [0, 3, -5, 6],
    ODD_RUN: [2, None, -1, -7],
}
CHROMIUM = Path("/usr/bin/chromium")


def _disc_alpha(radius: float) -> np.ndarray:
    """H x W float alpha of a disc centred a little off-centre, with a one-pixel soft edge."""
    y, x = np.indices((H, W))
    distance = np.hypot(x - 30.0, y - 22.0)
    return np.clip(radius + 0.5 - distance, 0.0, 1.0)


def _write_alpha(path: Path, alpha: np.ndarray) -> str:
    Image.fromarray(np.rint(alpha * 255).astype(np.uint8)).save(path)
    return str(path)


def _image(shade: int) -> np.ndarray:
    """A backdrop with a horizontal ramp and the magenta disc."""
    rgb = np.empty((H, W, 3), np.float64)
    rgb[:] = BACKDROP
    rgb[..., 0] += np.linspace(-shade, shade, W)[None, :]
    a = _disc_alpha(RADIUS)[..., None]
    return np.rint(rgb * (1 - a) + np.asarray(SUBJECT) * a).astype(np.uint8)


@dataclass
class Fixture:
    report: Path  # {output}/report
    html: str
    samples: list[Sample]
    runs: list[RunResult]
    expected: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run -> rows


def _build(root: Path, run_names: list[str], **kwargs: Any) -> Fixture:
    """Samples, two fake runs with real masks and honest iou/mae/edge_mae, and the report."""
    (root / "data").mkdir(parents=True)
    samples = []
    for k, (sample_id, category) in enumerate(SAMPLES_SPEC):
        image = root / "data" / f"{k}.png"
        Image.fromarray(_image(10 * k)).save(image)
        gt = _write_alpha(root / "data" / f"{k}.gt.png", _disc_alpha(RADIUS))
        samples.append(Sample(sample_id, str(image), gt, category))
    runs, expected = [], {}
    for j, name in enumerate(run_names):
        (root / f"run{j}").mkdir()
        rows = []
        for k, (sample, delta) in enumerate(zip(samples, DELTAS[name], strict=True)):
            if delta is None:
                rows.append(
                    {
                        "id": sample.id,
                        "status": "failed",
                        "error_stage": "segment",
                        "error_code": "decode_timeout",
                    }
                )
                continue
            mask = _write_alpha(root / f"run{j}" / f"{k}.png", _disc_alpha(RADIUS + delta))
            pred = load_alpha(Path(mask).read_bytes(), mask)
            gt = load_alpha(Path(sample.ground_truth_uri).read_bytes(), "gt")
            rows.append(
                {
                    "id": sample.id,
                    "status": "ok",
                    **dataclasses.asdict(scores(pred, gt)),
                    # Not computed here: the report only averages them.
                    "sad": 10.0 * (k + 1) + j,
                    "mse": 0.01 * (k + 1) * (j + 1),
                    "gradient_error": 1.5 * k + 0.25 * j,
                    "boundary_f": 0.9 - 0.1 * k + 0.05 * j,
                    "total_ms": 100.0 * (k + 1) + 1000.0 * j,
                    "mask_uri": mask,
                }
            )
        expected[name] = rows
        # A row for an image that is not a sample: the report must leave it out.
        stray = {"id": "not-a-sample", "status": "ok", "iou": 0.0, "edge_mae": 1.0}
        runs.append(RunResult(name, _table([*reversed(rows), stray])))
    output = root / "out"
    index = write_report(str(output), samples, runs, thumb=THUMB, **kwargs)
    assert index == f"{output}/report/index.html"
    html = Path(index).read_text(encoding="utf-8")
    return Fixture(output / "report", html, samples, runs, expected)


_FLOATS = ["iou", "mae", "edge_mae", "sad", "mse", "gradient_error", "boundary_f", "total_ms"]
_STRINGS = ["id", "status", "error_stage", "error_code", "mask_uri"]


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema([(n, pa.string()) for n in _STRINGS] + [(n, pa.float64()) for n in _FLOATS])
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema)


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return _build(tmp_path_factory.mktemp("report"), ["isnet/none", ODD_RUN])


# --- a small HTML reader ---------------------------------------------------------------------


@dataclass
class Cell:
    text: str = ""
    bold: bool = False
    attrs: dict[str, str | None] = field(default_factory=dict)
    images: list[dict[str, str | None]] = field(default_factory=list)


@dataclass
class Row:
    attrs: dict[str, str | None]
    cells: list[Cell] = field(default_factory=list)


class Page(HTMLParser):
    """Tables by id (rows of cells with text, bold and images), every <img>, <body> attrs."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[Row]] = {}
        self.images: list[dict[str, str | None]] = []
        self.body: dict[str, str | None] = {}
        self._table: str | None = None
        self._row: Row | None = None
        self._cell: Cell | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "table":
            self._table = a.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = Row(a)
            self.tables[self._table].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = Cell(attrs=a)
            self._row.cells.append(self._cell)
        elif tag == "b" and self._cell is not None:
            self._cell.bold = True
        elif tag == "img":
            self.images.append(a)
            if self._cell is not None:
                self._cell.images.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = self._row = self._cell = None
        elif tag == "tr":
            self._row = self._cell = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.text += data

    def body_rows(self, table: str) -> list[Row]:
        """Rows with a data-* attribute (the header rows have none)."""
        return [r for r in self.tables[table] if any(k.startswith("data-") for k in r.attrs)]


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _mean(rows: list[dict[str, Any]], column: str) -> float:
    return statistics.fmean(r[column] for r in rows if r.get(column) is not None)


# --- plain functions -------------------------------------------------------------------------


def test_heat_map_runs_black_red_yellow() -> None:
    colours = heat_map(np.array([[0.0, 0.25, 1.0]]))[0]
    assert colours[0].tolist() == [0, 0, 0]
    assert colours[1].tolist() == [255, 0, 0]  # sqrt(0.25) = 0.5: full red, no green yet
    assert colours[2].tolist() == [255, 255, 0]
    ramp = heat_map(np.linspace(0, 1, 50)[None, :])[0].astype(int).sum(axis=1)
    assert np.all(np.diff(ramp) >= 0)


def test_contrasting_colour_is_far_from_the_subject() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = SUBJECT
    rgb[2:] = GREEN
    top = np.zeros((4, 4))
    top[:2] = 1.0
    assert contrasting_colour(rgb, top) == GREEN  # magenta subject, green backdrop
    assert contrasting_colour(rgb, 1.0 - top) == (255, 0, 255)
    assert contrasting_colour(np.full((2, 2, 3), 255, np.uint8)) != (255, 0, 255)  # unweighted


def test_thumb_size_never_enlarges() -> None:
    assert thumb_size(64, 48, 32) == (32, 24)
    assert thumb_size(48, 64, 32) == (24, 32)
    assert thumb_size(64, 48, 256) == (64, 48)
    assert thumb_size(1000, 1, 10) == (10, 1)


def test_checkerboard_alternates() -> None:
    board = checkerboard(16, 24, square=8)
    assert board.shape == (16, 24, 3)
    assert board[0, 0].tolist() == [255] * 3
    assert board[0, 8].tolist() == [204] * 3
    assert board[8, 0].tolist() == [204] * 3
    assert board[8, 8].tolist() == [255] * 3


# --- the page --------------------------------------------------------------------------------


def test_index_written(fx: Fixture) -> None:
    assert (fx.report / "index.html").is_file()
    assert fx.html.startswith("<!DOCTYPE html>")
    header = fx.html.split("</header>")[0]
    assert "isnet/none" in header
    assert "rembg &lt;&amp;&gt;" in header
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", header)


def test_summary_has_each_runs_means(fx: Fixture) -> None:
    page = Page(fx.html)
    header = [c.text for c in page.tables["summary"][0].cells]
    rows = page.body_rows("summary")
    assert [r.cells[0].text for r in rows] == ["isnet/none", ODD_RUN]
    for row, run in zip(rows, fx.runs, strict=True):
        got = dict(zip(header, (c.text for c in row.cells), strict=True))
        ok = fx.expected[run.name]
        scored = [r for r in ok if r["status"] == "ok"]
        assert got["ok"] == str(len(scored))
        assert got["failed"] == str(len(ok) - len(scored))
        for column in ["iou", "mae", "edge_mae", "sad", "mse", "gradient_error", "boundary_f"]:
            assert got[column] == _fmt(_mean(scored, column)), column
        seconds = statistics.median(r["total_ms"] / 1000 for r in scored)
        assert got["s / image (median)"] == f"{seconds:.3f}"
    assert [r.cells[2].text for r in rows] == ["0", "1"]


def test_summary_bolds_the_best_value_per_column(fx: Fixture) -> None:
    page = Page(fx.html)
    header = [c.text for c in page.tables["summary"][0].cells]
    rows = page.body_rows("summary")
    higher = {"iou", "boundary_f"}
    for index, column in enumerate(header):
        if column in ("run", "ok", "failed"):
            continue
        values = [float(r.cells[index].text) for r in rows]
        best = max(values) if column in higher else min(values)
        bold = [r.cells[index].bold for r in rows]
        assert bold == [v == best for v in values], column
    assert sum(c.bold for r in rows for c in r.cells) >= len(header) - 3


def test_category_table(fx: Fixture) -> None:
    rows = Page(fx.html).body_rows("categories")
    assert [r.cells[0].text for r in rows] == ["bags", "shoes", "all"]
    categories = {sample.id: sample.category for sample in fx.samples}
    for row, category in zip(rows, ["bags", "shoes", None], strict=True):
        members = [s for s in fx.samples if category is None or s.category == category]
        assert row.cells[1].text == str(len(members))
        for j, run in enumerate(fx.runs):
            scored = [
                r
                for r in fx.expected[run.name]
                if r["status"] == "ok" and (category is None or categories[r["id"]] == category)
            ]
            n, iou, edge = (c.text for c in row.cells[2 + 3 * j : 5 + 3 * j])
            assert n == str(len(scored))
            assert iou == _fmt(_mean(scored, "iou"))
            assert edge == _fmt(_mean(scored, "edge_mae"))
    # The failed row is in "bags" of the second run: one image fewer there.
    assert rows[0].cells[5].text == "1"


def _expected_order(fx: Fixture, first: str) -> list[str]:
    rows = {r["id"]: r for r in fx.expected[first]}

    def key(sample: Sample) -> tuple[int, float]:
        row = rows[sample.id]
        return (0, 0.0) if row["status"] == "failed" else (1, row["iou"])

    return [s.id for s in sorted(fx.samples, key=key)]


@pytest.mark.parametrize("first", ["isnet/none", ODD_RUN])
def test_sheet_is_worst_first_by_the_first_run(tmp_path: Path, first: str) -> None:
    names = [first, *(n for n in DELTAS if n != first)]
    fx = _build(tmp_path, names)
    got = [r.attrs["data-id"] for r in Page(fx.html).body_rows("sheet")]
    expected = _expected_order(fx, first)
    assert got == expected
    if first == ODD_RUN:
        assert got[0] == ODD_ID  # the failed row leads
    ious = [next(r["iou"] for r in fx.expected[first] if r["id"] == i) for i in expected[1:]]
    assert ious == sorted(ious) and len(set(ious)) == len(ious)  # distinct: the order is tested


def test_sheet_rows_limits_the_sheet(tmp_path: Path) -> None:
    fx = _build(tmp_path, list(DELTAS), sheet_rows=2)
    got = [r.attrs["data-id"] for r in Page(fx.html).body_rows("sheet")]
    assert got == _expected_order(fx, "isnet/none")[:2]


def test_every_image_link_is_relative_and_exists(fx: Fixture) -> None:
    images = Page(fx.html).images
    ok_rows = sum(r["status"] == "ok" for rows in fx.expected.values() for r in rows)
    # input + gt, 4 per prediction in the sheet, 2 (alpha, cutout) per prediction in the tiles
    assert len(images) == 2 * len(fx.samples) + 4 * ok_rows + 2 * ok_rows
    for img in images:
        src = img["src"]
        assert src and src.startswith("img/") and "://" not in src, src
        path = fx.report / src
        assert path.is_file(), src
        with Image.open(path) as thumb:
            assert thumb.size == (int(img["width"] or 0), int(img["height"] or 0))
            assert thumb.size == thumb_size(W, H, THUMB)
            assert thumb.format == ("JPEG" if src.endswith(".jpg") else "PNG")


def _cell_images(fx: Fixture, sample_id: str, run: int) -> dict[str, Image.Image]:
    row = next(r for r in Page(fx.html).body_rows("sheet") if r.attrs["data-id"] == sample_id)
    cell = next(c for c in row.cells if c.attrs.get("data-run") == str(run))
    return {
        str(img["class"]): Image.open(fx.report / str(img["src"])).convert("RGB")
        for img in cell.images
    }


def test_prediction_cell_images(fx: Fixture) -> None:
    perfect = _cell_images(fx, "s1", 0)  # delta 0: prediction equals the ground truth
    assert set(perfect) == {"alpha", "checker", "colour", "error"}
    assert np.asarray(perfect["error"]).max() == 0
    colour = np.asarray(perfect["colour"]).astype(int)
    # JPEG: loose tolerance; corners are background, the centre is the magenta subject.
    assert np.abs(colour[1, 1] - GREEN).max() < 16
    assert np.abs(colour[11, 15] - SUBJECT).max() < 24
    checker = np.asarray(perfect["checker"]).astype(int)
    assert np.abs(checker[1, 1] - 255).max() < 16 and np.abs(checker[1, 9] - 204).max() < 16
    alpha = np.asarray(perfect["alpha"])
    assert alpha[0, 0, 0] == 0 and alpha[11, 15, 0] == 255

    wrong = _cell_images(fx, "s4", 0)  # delta 6: a ring of false foreground
    assert np.asarray(wrong["error"])[..., 0].max() > 200
    assert np.asarray(wrong["error"])[..., 2].max() == 0  # the map has no blue


def test_failed_row_shows_its_error_code(fx: Fixture) -> None:
    row = next(r for r in Page(fx.html).body_rows("sheet") if r.attrs["data-id"] == ODD_ID)
    cell = next(c for c in row.cells if c.attrs.get("data-run") == "1")
    assert cell.text.strip() == "failed: decode_timeout"
    assert cell.images == []
    ok = next(c for c in row.cells if c.attrs.get("data-run") == "0")
    assert re.fullmatch(r"iou \d\.\d{4} · edge_mae \d\.\d{4} · 0\.200 s", ok.text.strip())


def test_names_and_ids_are_escaped(fx: Fixture) -> None:
    assert ODD_ID not in fx.html and ODD_RUN not in fx.html
    assert "a&lt;&amp;&gt;&quot;b" in fx.html
    assert "rembg &lt;&amp;&gt;" in fx.html
    page = Page(fx.html)
    assert ODD_ID in [r.attrs["data-id"] for r in page.body_rows("sheet")]
    assert page.tables["summary"][2].cells[0].text == ODD_RUN


def test_bad_arguments_raise(tmp_path: Path) -> None:
    sample = Sample("x", "x.png", "x.gt.png", "")
    with pytest.raises(ValueError, match="at least one run"):
        write_report(str(tmp_path), [sample], [])
    run = RunResult("r", _table([]))
    with pytest.raises(ValueError, match="duplicate sample ids: x"):
        write_report(str(tmp_path), [sample, sample], [run])


def test_unreadable_sample_is_a_note_not_a_crash(tmp_path: Path) -> None:
    sample = Sample("gone", str(tmp_path / "missing.png"), str(tmp_path / "gt.png"), "")
    run = RunResult("r", _table([{"id": "gone", "status": "ok", "iou": 0.5}]))
    html = Path(write_report(str(tmp_path / "out"), [sample], [run])).read_text()
    row = Page(html).body_rows("sheet")[0]
    assert row.cells[1].text.startswith("cannot show:") and "missing.png" in row.cells[1].text


# --- in a browser ----------------------------------------------------------------------------


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} absent (apt-get install -y chromium)")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _images_loaded(tmp_path: Path, index: Path) -> str:
    dom = _chromium(tmp_path, "--dump-dom", index.as_uri()).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    loaded = re.search(r'data-images-loaded="([^"]*)"', body.group(0))
    assert loaded, body.group(0)
    return loaded.group(1)


def test_chromium_loads_every_image(fx: Fixture, tmp_path: Path) -> None:
    total = len(Page(fx.html).images)
    assert _images_loaded(tmp_path, fx.report / "index.html") == f"{total}/{total}"


def test_chromium_counts_a_missing_image(fx: Fixture, tmp_path: Path) -> None:
    """The check above can fail: a report with one thumbnail removed reports one fewer."""
    copy = tmp_path / "report"
    shutil.copytree(fx.report, copy)
    next((copy / "img").glob("*.error.png")).unlink()
    total = len(Page(fx.html).images)
    assert _images_loaded(tmp_path, copy / "index.html") == f"{total - 1}/{total}"


def test_chromium_screenshot_is_not_blank(fx: Fixture, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    index = (fx.report / "index.html").as_uri()
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,6000", index)
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[:2] == (6000, 1280)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50
    # The thumbnails were painted: some pixels are the green background of the cutouts.
    assert np.any(np.abs(pixels.astype(int) - GREEN).max(axis=2) < 24)


# --- head to head ----------------------------------------------------------------------------


def test_head_to_head_numbers_on_the_hand_made_runs(fx: Fixture) -> None:
    """Three images scored by both runs: the 2.5th and 97.5th bootstrap percentiles are the
    smallest and largest paired difference (each of them is all three draws with chance
    1/27 > 2.5 %), and the point estimate is their mean."""
    a = {r["id"]: r for r in fx.expected["isnet/none"] if r["status"] == "ok"}
    b = {r["id"]: r for r in fx.expected[ODD_RUN] if r["status"] == "ok"}
    both = [i for i in a if i in b]
    assert len(both) == 3
    page = Page(fx.html)
    [row] = [r for r in page.body_rows("pairwise") if r.attrs["data-group"] == "all"]
    assert (row.attrs["data-a"], row.attrs["data-b"]) == ("isnet/none", ODD_RUN)
    assert row.cells[3].text == "3"
    for cell in row.cells[4:]:
        metric = cell.attrs["data-metric"] or ""
        diffs = [a[i][metric] - b[i][metric] for i in both]
        assert float(cell.attrs["data-diff"] or "nan") == pytest.approx(statistics.fmean(diffs))
        assert float(cell.attrs["data-low"] or "nan") == pytest.approx(min(diffs))
        assert float(cell.attrs["data-high"] or "nan") == pytest.approx(max(diffs))
        assert cell.attrs["data-significant"] == str(min(diffs) > 0 or max(diffs) < 0).lower()
    groups = [r.attrs["data-group"] for r in page.body_rows("pairwise")]
    assert groups == ["all", "category=bags", "category=shoes"]


def test_runs_table_has_seconds_and_licence(fx: Fixture) -> None:
    rows = Page(fx.html).body_rows("runs")
    for row, run in zip(rows, fx.runs, strict=True):
        ok = [r for r in fx.expected[run.name] if r["status"] == "ok"]
        seconds = statistics.fmean(r["total_ms"] / 1000 for r in ok)
        assert row.cells[0].text == run.name
        assert row.cells[-2].text == f"{seconds:.3f}"
        assert row.cells[-1].text == "unknown"  # these rows carry no licence_class


def test_charts_are_inline_svg_without_scripts(fx: Fixture) -> None:
    charts_html = fx.html.split("<h2>Charts</h2>")[1].split("<h2>")[0]
    assert charts_html.count("<svg") == 4  # distribution, categories, time, one pair
    assert "<script" not in charts_html


def test_disagreements_and_tiles_link_full_size_files(fx: Fixture) -> None:
    a = {r["id"]: r for r in fx.expected["isnet/none"] if r["status"] == "ok"}
    b = {r["id"]: r for r in fx.expected[ODD_RUN] if r["status"] == "ok"}
    gaps = sorted((i for i in a if i in b), key=lambda i: -abs(a[i]["iou"] - b[i]["iou"]))
    page = Page(fx.html)
    got = re.findall(r'<tr data-id="([^"]*)"><th><a href="#sheet-', fx.html)
    assert [html.unescape(i) for i in got] == gaps
    tiles = re.findall(r'<figure class="tile" id="tile-([^"]*)">', fx.html)
    sheet = [r.attrs["data-id"] for r in page.body_rows("sheet")]
    assert [html.unescape(t) for t in tiles] == sheet  # the same worst-first order
    for href in re.findall(r'<a href="([^"#][^"]*)"><img', fx.html):
        assert Path(html.unescape(href)).is_file(), href  # full-size masks, absolute here


def test_three_runs_give_three_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DELTAS, "third", [1, 1, -2, 2])
    fx = _build(tmp_path, ["isnet/none", ODD_RUN, "third"], slice_by=["category"])
    charts_html = fx.html.split("<h2>Charts</h2>")[1].split("<h2>")[0]
    assert charts_html.count("<svg") == 3 + 3  # three charts, one scatter per pair
    pairs = {(r.attrs["data-a"], r.attrs["data-b"]) for r in Page(fx.html).body_rows("pairwise")}
    assert pairs == {("isnet/none", ODD_RUN), ("isnet/none", "third"), (ODD_RUN, "third")}
    assert fx.html.count('<table class="disagree"') == 3
