"""The report of `matteflow eval`: one static HTML page comparing runs on labelled images.

Samples plus each run's metrics table -> `{output}/report/index.html` and thumbnails under
`{output}/report/img/`, read and written through storage.py and linked by relative paths, so the
page works from a local folder and from a bucket's static hosting alike.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
import statistics
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from matteflow.pipelines import head_to_head
from matteflow.transforms.decode import DecodeSettings, decode
from matteflow.transforms.encode import Metadata, encode
from matteflow.transforms.reader import Reader
from matteflow.transforms.storage import write_atomic
from matteflow.transforms.types import ImageTask
from matteflow.transforms.write import composite, quantise_alpha

__all__ = [
    "RunResult",
    "Sample",
    "checkerboard",
    "contrasting_colour",
    "heat_map",
    "thumb_size",
    "write_report",
]

# The report reads what runs wrote and the labelled set: the default policy and limits.
_READER = Reader()

# (metrics column, higher is better), in the summary's column order.
_METRICS: tuple[tuple[str, bool], ...] = (
    ("iou", True),
    ("mae", False),
    ("edge_mae", False),
    ("sad", False),
    ("mse", False),
    ("gradient_error", False),
    ("boundary_f", True),
)
# Cutout backgrounds to pick from: the one farthest from the subject's mean colour is used.
_BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((255, 0, 255), (0, 200, 0), (0, 90, 255))
_CHECKER = (255, 204)  # light and dark squares, the usual "transparent" pattern
_JPEG_QUALITY = 85
_WORKERS = 4  # sheet rows rendered at once: reads from buckets overlap; memory stays bounded


def _heat_lut() -> np.ndarray:
    """256 x 3 uint8: black -> red -> yellow over sqrt(error), so small errors still show."""
    t = np.sqrt(np.linspace(0.0, 1.0, 256))
    red = np.clip(2.0 * t, 0.0, 1.0)
    green = np.clip(2.0 * t - 1.0, 0.0, 1.0)
    lut: np.ndarray = np.rint(np.stack([red, green, np.zeros_like(t)], axis=1) * 255)
    return lut.astype(np.uint8)


_HEAT = _heat_lut()
_Rows = dict[str, dict[str, Any]]  # a run's metrics rows by sample id


@dataclass(frozen=True)
class Sample:
    """One labelled image."""

    id: str
    image_uri: str  # the source image
    ground_truth_uri: str  # 8-bit (or 16-bit) grey alpha PNG, same size as the image
    category: str  # "" when unknown
    columns: tuple[tuple[str, str], ...] = ()  # every manifest column, for --slice-by


@dataclass(frozen=True)
class RunResult:
    """One run's predictions and metrics."""

    name: str  # e.g. "isnet-general-use/none", "rembg"
    # Rows with at least id, status, the _METRICS columns (float64, may be null), total_ms and
    # mask_uri (the predicted alpha PNG, null for failed rows); error_code is shown when present.
    metrics: pa.Table


# --- plain pixel functions -------------------------------------------------------------------


def thumb_size(width: int, height: int, thumb: int) -> tuple[int, int]:
    """(width, height) scaled so the long side is at most `thumb` px; never enlarged."""
    scale = min(1.0, thumb / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def checkerboard(height: int, width: int, square: int = 8) -> np.ndarray:
    """H x W x 3 uint8 light/dark grey squares of `square` px, light at the top left."""
    y, x = np.indices((height, width))
    light = (y // square + x // square) % 2 == 0
    grey = np.where(light, _CHECKER[0], _CHECKER[1]).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def contrasting_colour(rgb: np.ndarray, weight: np.ndarray | None = None) -> tuple[int, int, int]:
    """The _BACKGROUNDS colour farthest (RGB distance) from the mean of H x W x 3 `rgb`,
    weighted by H x W `weight` in [0, 1] (the subject's alpha) when it has any mass."""
    pixels = rgb.reshape(-1, 3).astype(np.float64)
    w = None if weight is None else weight.reshape(-1).astype(np.float64)
    if w is None or w.sum() <= 0:
        mean = pixels.mean(axis=0)
    else:
        mean = (pixels * w[:, None]).sum(axis=0) / w.sum()
    return max(_BACKGROUNDS, key=lambda c: float(np.sum((np.asarray(c) - mean) ** 2)))


def heat_map(error: np.ndarray) -> np.ndarray:
    """H x W |pred - gt| in [0, 1] -> H x W x 3 uint8, black (0) -> red -> yellow (1)."""
    index = np.rint(np.clip(error, 0.0, 1.0) * 255).astype(np.uint8)
    rgb: np.ndarray = _HEAT[index]
    return rgb


def _resize(img: Image.Image, size: tuple[int, int], box: bool = False) -> Image.Image:
    """Downscale to size (Lanczos; BOX averages, for error maps); RGBA resizes premultiplied."""
    if img.size == size:
        return img
    resample = Image.Resampling.BOX if box else Image.Resampling.LANCZOS
    return img.resize(size, resample, reducing_gap=3.0)


# --- metrics ---------------------------------------------------------------------------------


def _rows(table: pa.Table) -> _Rows:
    """Metrics rows by id (a later duplicate wins)."""
    return {str(row["id"]): row for row in table.to_pylist()}


def _failed(row: dict[str, Any] | None) -> bool:
    """A failed row, or no row at all for the sample."""
    return row is None or row.get("status") == "failed"


def _value(row: dict[str, Any] | None, column: str) -> float | None:
    """A number of the row; None when absent, null or NaN."""
    value = None if row is None else row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _seconds(row: dict[str, Any] | None) -> float | None:
    ms = None if _failed(row) else _value(row, "total_ms")
    return None if ms is None else ms / 1000.0


def _fmt(value: float | None, digits: int = 4) -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


# --- page sections ---------------------------------------------------------------------------


def _best_cells(values: list[float | None], higher: bool, digits: int) -> list[str]:
    """Formatted cells; the best value (at the shown precision) in <b>, when runs compare."""
    shown = [None if v is None else round(v, digits) for v in values]
    present = [v for v in shown if v is not None]
    best = (max(present) if higher else min(present)) if present else None
    cells = []
    for value, rounded in zip(values, shown, strict=True):
        text = _fmt(value, digits)
        bold = len(values) > 1 and rounded is not None and rounded == best
        cells.append(f'<td class="num">{"<b>" + text + "</b>" if bold else text}</td>')
    return cells


def _summary(samples: Sequence[Sample], runs: Sequence[RunResult], rows: list[_Rows]) -> str:
    ids = [s.id for s in samples]
    columns: list[list[str]] = []  # per column, one cell per run
    for column, higher in _METRICS:
        means = [_mean([_value(r.get(i), column) for i in ids]) for r in rows]
        columns.append(_best_cells(means, higher, 4))
    medians = []
    for r in rows:
        seconds = [s for s in (_seconds(r.get(i)) for i in ids) if s is not None]
        medians.append(statistics.median(seconds) if seconds else None)
    columns.append(_best_cells(medians, False, 3))
    head = "".join(f"<th>{c}</th>" for c, _ in _METRICS)
    out = [
        '<table id="summary"><thead><tr><th>run</th><th>ok</th><th>failed</th>'
        f"{head}<th>s / image (median)</th></tr></thead><tbody>"
    ]
    for j, (run, r) in enumerate(zip(runs, rows, strict=True)):
        failed = sum(_failed(r.get(i)) for i in ids)
        cells = "".join(col[j] for col in columns)
        out.append(
            f'<tr data-run="{j}"><th>{_esc(run.name)}</th><td class="num">{len(ids) - failed}</td>'
            f'<td class="num">{failed}</td>{cells}</tr>'
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _categories(samples: Sequence[Sample], runs: Sequence[RunResult], rows: list[_Rows]) -> str:
    groups: list[tuple[str, str, list[str]]] = [
        (c, c or "(none)", [s.id for s in samples if s.category == c])
        for c in sorted({s.category for s in samples})
    ]
    groups.append(("", "all", [s.id for s in samples]))
    out = [
        '<table id="categories"><thead><tr><th rowspan="2">category</th>'
        '<th rowspan="2">images</th>'
        + "".join(f'<th colspan="3">{_esc(run.name)}</th>' for run in runs)
        + "</tr><tr>"
        + "<th>n</th><th>iou</th><th>edge_mae</th>" * len(runs)
        + "</tr></thead><tbody>"
    ]
    for index, (category, label, ids) in enumerate(groups):
        is_all = index == len(groups) - 1
        cells = []
        for r in rows:
            ious = [_value(r.get(i), "iou") for i in ids]
            edges = [_value(r.get(i), "edge_mae") for i in ids]
            n = sum(v is not None for v in ious)
            cells.append(
                f'<td class="num">{n}</td><td class="num">{_fmt(_mean(ious))}</td>'
                f'<td class="num">{_fmt(_mean(edges))}</td>'
            )
        attrs = ' class="all" data-category=""' if is_all else f' data-category="{_esc(category)}"'
        out.append(
            f'<tr{attrs}><th>{_esc(label)}</th><td class="num">{len(ids)}</td>{"".join(cells)}</tr>'
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _sheet_order(samples: Sequence[Sample], first: _Rows) -> list[Sample]:
    """Worst first by the first run: failed (or missing) rows, unscored rows, then iou ascending;
    ties keep the samples' order."""

    def key(item: tuple[int, Sample]) -> tuple[int, float, int]:
        index, sample = item
        row = first.get(sample.id)
        iou = _value(row, "iou")
        if _failed(row):
            return (0, 0.0, index)
        return (1, 0.0, index) if iou is None else (2, iou, index)

    return [s for _, s in sorted(enumerate(samples), key=key)]


def _slug(sample_id: str) -> str:
    """A file-name-safe, unique stem for a sample id."""
    digest = hashlib.sha1(sample_id.encode()).hexdigest()[:10]
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", sample_id)[:40].strip("_")
    return f"{safe}-{digest}" if safe else digest


class _Sheet:
    """Renders contact-sheet rows, writing their thumbnails under `{report}/img/`."""

    def __init__(self, report: str, runs: Sequence[RunResult], rows: list[_Rows], thumb: int):
        self._report, self._runs, self._rows, self._thumb = report, runs, rows, thumb
        # (id, run) -> alpha and cutout thumbnail srcs, width, height
        self.thumbs: dict[tuple[str, int], tuple[str, str, int, int]] = {}

    def _img(self, name: str, pixels: np.ndarray, css: str, alt: str) -> str:
        """Write pixels as img/{name} (JPEG for colour, PNG for grey and error maps)."""
        if name.endswith(".jpg"):
            data = encode(pixels, "jpeg", Metadata(), quality=_JPEG_QUALITY)
        else:
            data = encode(pixels, "png", Metadata(), compress_level=6)
        write_atomic(f"{self._report}/img/{name}", data)
        h, w = pixels.shape[:2]
        return (
            f'<img class="{css}" src="img/{name}" width="{w}" height="{h}" alt="{_esc(alt)}"'
            f' title="{_esc(alt)}">'
        )

    def row(self, sample: Sample) -> str:
        head = (
            f'<th class="id">{_esc(sample.id)}'
            f"<small>{_esc(sample.category or '(none)')}</small></th>"
        )
        tr = f'<tr id="sheet-{_esc(sample.id)}" data-id="{_esc(sample.id)}">{head}'
        try:
            image = decode(
                ImageTask(sample.id, sample.image_uri, sample.id),
                _READER.read(sample.image_uri),
                DecodeSettings(),
            )
            gt = _READER.shaped_alpha(sample.ground_truth_uri, image.height, image.width)
        except Exception as err:  # one unreadable sample must not sink the report
            span = len(self._runs) + 2
            return f'{tr}<td class="note" colspan="{span}">cannot show: {_esc(err)}</td></tr>'
        rgb, stem = image.rgb, _slug(sample.id)
        size = thumb_size(image.width, image.height, self._thumb)
        small_rgb = np.asarray(_resize(Image.fromarray(rgb), size))
        cells = [f"<td>{self._img(f'{stem}.input.jpg', small_rgb, 'input', 'input')}</td>"]
        small_gt = np.asarray(_resize(Image.fromarray(quantise_alpha(gt, np.uint8)), size))
        # From the thumbnails: the same mean colour, at a fraction of the cost on large images.
        background = np.asarray(contrasting_colour(small_rgb, small_gt / 255.0), np.float32)
        for j, run in enumerate(self._runs):
            cells.append(self._run_cell(j, run, sample, rgb, gt, size, background, stem))
        cells.append(f"<td>{self._img(f'{stem}.gt.png', small_gt, 'gt', 'ground truth')}</td>")
        return f"{tr}{''.join(cells)}</tr>"

    def _run_cell(
        self,
        j: int,
        run: RunResult,
        sample: Sample,
        rgb: np.ndarray,
        gt: np.ndarray,
        size: tuple[int, int],
        background: np.ndarray,
        stem: str,
    ) -> str:
        row = self._rows[j].get(sample.id)
        td = f'<td class="run" data-run="{j}">'
        if _failed(row):
            code = "missing" if row is None else row.get("error_code") or "unknown"
            why = "" if row is None else f"{row.get('error_stage')}: {row.get('error_message')}"
            return f'{td}<div class="failed" title="{_esc(why)}">failed: {_esc(code)}</div></td>'
        assert row is not None  # not _failed
        mask_uri = row.get("mask_uri")
        try:
            if not mask_uri:
                raise ValueError("no mask_uri in the metrics row")
            pred = _READER.shaped_alpha(mask_uri, *gt.shape)
        except Exception as err:
            return f'{td}<div class="note">no prediction to show: {_esc(err)}</div></td>'
        alpha8 = quantise_alpha(pred, np.uint8)
        small_alpha = np.asarray(_resize(Image.fromarray(alpha8), size))
        cutout = np.asarray(_resize(Image.fromarray(np.dstack([rgb, alpha8]), "RGBA"), size))
        a = cutout[..., 3].astype(np.float32) / 255.0
        over_checker = composite(cutout[..., :3], a, checkerboard(size[1], size[0]))
        over_colour = composite(cutout[..., :3], a, background)
        error = np.abs(pred - gt).astype(np.float32)
        small_error = np.asarray(_resize(Image.fromarray(error, "F"), size, box=True))
        name = f"{stem}.r{j}"
        images = [
            self._img(f"{name}.alpha.png", small_alpha, "alpha", f"{run.name}: alpha"),
            self._img(f"{name}.checker.jpg", over_checker, "checker", f"{run.name}: cutout"),
            self._img(f"{name}.colour.jpg", over_colour, "colour", f"{run.name}: on colour"),
            self._img(f"{name}.error.png", heat_map(small_error), "error", f"{run.name}: error"),
        ]
        alpha_src, cutout_src = f"img/{name}.alpha.png", f"img/{name}.checker.jpg"
        self.thumbs[(sample.id, j)] = (alpha_src, cutout_src, *size)
        caption = (
            f"iou {_fmt(_value(row, 'iou'))} · edge_mae {_fmt(_value(row, 'edge_mae'))}"
            f" · {_fmt(_seconds(row), 3)} s"
        )
        return f"{td}<figure>{''.join(images)}<figcaption>{caption}</figcaption></figure></td>"


def _relative(output: str, uri: str | None) -> str | None:
    """An output file's href from {output}/report/: relative when under `output`."""
    if not uri:
        return None
    return f"../{uri[len(output) + 1 :]}" if uri.startswith(f"{output}/") else uri


def _legend() -> str:
    """A CSS gradient of the error colour map, stops taken from the map itself."""
    stops = ", ".join(
        f"rgb{tuple(int(c) for c in _HEAT[round(e * 255)])} {e * 100:.0f}%"
        for e in np.linspace(0.0, 1.0, 11)
    )
    return (
        '<span class="legend"><span>0</span><span class="bar" style="background:'
        f'linear-gradient(to right, {stops})"></span><span>1</span></span>'
    )


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.2em;margin:1.5em 0 .4em}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
thead th{background:#f2f2f2;position:sticky;top:0;z-index:1}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.all th,tr.all td{border-top:2px solid #888}tr.all th{font-style:italic}
th.id{text-align:left;min-width:9em;max-width:12em;word-break:break-all;font-weight:600}
th.id small{display:block;font-weight:400;color:#666}
figure{margin:0;display:grid;grid-template-columns:repeat(4,max-content);gap:3px}
figcaption{grid-column:1/-1;font-size:12px;color:#444;font-variant-numeric:tabular-nums}
img{display:block;border:1px solid #ddd;background:#fff}
.failed{background:#fde2e2;color:#a00;font-weight:600;padding:1em;border:1px dashed #a00}
.note{color:#a60;background:#fff6e0;padding:.5em}
.legend{display:inline-flex;gap:.4em;align-items:center;vertical-align:middle}
.legend .bar{display:inline-block;width:12em;height:.9em;border:1px solid #999}
p.meta{color:#555;margin:.2em 0}
"""

# The test harness reads data-images-loaded: how many <img> elements actually decoded.
_SCRIPT = """<script>
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) loaded++;
  }
  document.body.dataset.imagesLoaded = loaded + "/" + images.length;
});
</script>"""


def write_report(
    output: str,
    samples: Sequence[Sample],
    runs: Sequence[RunResult],
    *,
    sheet_rows: int = 40,
    thumb: int = 256,
    slice_by: Sequence[str] = (),
) -> str:
    """Write `{output}/report/index.html` (+ thumbnails under `{output}/report/img/`) and return
    the index uri.

    Means are over each run's scored rows among `samples` (failed rows count under "failed",
    not in the means). The contact sheet shows up to `sheet_rows` samples, worst first by the
    first run's iou. The head-to-head sections (head_to_head.py) slice by the manifest columns
    in `slice_by` besides category. An unreadable sample or prediction shows as a note in its
    cell; errors writing the report are raised. Raises ValueError for no runs or duplicate
    sample ids.
    """
    if not runs:
        raise ValueError("write_report needs at least one run")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate sample ids: {', '.join(duplicates)}")
    if thumb < 1:
        raise ValueError(f"thumb: expected a positive size in px, got {thumb}")
    report = f"{output.rstrip('/')}/report"
    rows = [_rows(run.metrics) for run in runs]
    sheet = _Sheet(report, runs, rows, thumb)
    order = _sheet_order(samples, rows[0])[: max(0, sheet_rows)]
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        sheet_rows_html = list(pool.map(sheet.row, order))
    names = ", ".join(_esc(run.name) for run in runs)
    run_heads = "".join(
        f'<th data-run="{j}">{_esc(run.name)}<br><small>alpha · checker · colour · error'
        "</small></th>"
        for j, run in enumerate(runs)
    )
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    compared = head_to_head.sections(
        ids,
        {s.id: s.category for s in samples},
        {s.id: dict(s.columns) for s in samples},
        [run.name for run in runs],
        rows,
        slice_by=slice_by,
        sheet_order=[s.id for s in order],
        thumbs=lambda i, j: sheet.thumbs.get((i, j)),
        link=lambda uri: _relative(output.rstrip("/"), uri),
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>matteflow eval: {names}</title>
<style>{_CSS}{head_to_head.CSS}</style></head>
<body>
<header><h1>matteflow evaluation report</h1>
<p class="meta">{now} · {len(samples)} images · runs: {names}</p></header>
<h2>Summary</h2>
<p class="meta">Means over scored images (failed rows are counted, not averaged); best in bold.
Seconds: median total_ms / 1000 per image.</p>
{_summary(samples, runs, rows)}
<h2>By category</h2>
<p class="meta">n: scored images of the run in the category.</p>
{_categories(samples, runs, rows)}
{compared}
<h2>Contact sheet, worst first</h2>
<p class="meta">{len(order)} of {len(samples)} images, ordered by {_esc(runs[0].name)}'s iou
(failed first). Error |pred &minus; gt|: {_legend()} (colour follows &radic;error).</p>
<table id="sheet"><thead><tr><th>id</th><th>input</th>{run_heads}<th>ground truth</th></tr>
</thead><tbody>
{chr(10).join(sheet_rows_html)}
</tbody></table>
{_SCRIPT}
</body></html>
"""
    index = f"{report}/index.html"
    write_atomic(index, page.encode("utf-8"))
    return index
