"""The head-to-head sections of the eval report: runs, charts, pairwise differences with
intervals (all images, per category, per `--slice-by` column), where runs disagree most, and a
compact contact sheet. HTML text only; statistics in compare.py, charts in charts.py.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matteflow.pipelines import charts
from matteflow.pipelines.compare import (
    METRICS,
    PairedDifference,
    bootstrap_mean,
    groups,
    pairwise,
    run_summary,
    scored_value,
)

__all__ = ["CSS", "sections"]

Rows = Mapping[str, Mapping[str, Any]]
DISAGREE_TOP = 10  # images listed per pair in "where they disagree most"

CSS = """
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
svg.chart{border:1px solid #ddd;background:#fff}
td.sig{font-weight:600}td.sig.better{color:#06681c}td.sig.worse{color:#a00}
.tiles{display:flex;flex-wrap:wrap;gap:6px}
.tile{border:1px solid #ccc;padding:3px;font-size:11px;width:max-content}
.tile .id{font-weight:600;max-width:14em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.tile .pair{display:flex;gap:2px;align-items:center}
.tile .pair span{width:5.5em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;color:#555}
.tile img{width:64px;height:auto}
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float, digits: int = 4) -> str:
    return "&ndash;" if math.isnan(value) else f"{value:.{digits}f}"


def _runs_table(names: Sequence[str], rows: Sequence[Rows], ids: Sequence[str]) -> str:
    out = [
        '<table id="runs"><thead><tr><th>run</th><th>scored</th><th>failed</th>'
        + "".join(f"<th>{m}</th>" for m, _ in METRICS)
        + "<th>s / image (mean)</th><th>licence class</th></tr></thead><tbody>"
    ]
    for j, (name, r) in enumerate(zip(names, rows, strict=True)):
        s = run_summary(name, r, ids)
        means = [
            _num(_mean_or_nan([v for i in ids if (v := scored_value(r.get(i), m)) is not None]))
            for m, _ in METRICS
        ]
        out.append(
            f'<tr data-run="{j}"><th>{_esc(name)}</th><td class="num">{s.scored}</td>'
            f'<td class="num">{s.failed}</td>'
            + "".join(f'<td class="num">{m}</td>' for m in means)
            + f'<td class="num">{_num(s.seconds_per_image, 3)}</td><td>{_esc(s.licence)}</td></tr>'
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _charts(
    names: Sequence[str], rows: Sequence[Rows], ids: Sequence[str], categories: Mapping[str, str]
) -> str:
    ious = [[v for i in ids if (v := scored_value(r.get(i), "iou")) is not None] for r in rows]
    parts = [charts.distribution(list(zip(names, ious, strict=True)), "iou")]
    cats = sorted({categories.get(i, "") for i in ids})
    labels = [c or "(none)" for c in cats] + ["all"]
    series = []
    for name, r in zip(names, rows, strict=True):
        intervals = []
        for c in [*cats, None]:
            members = [i for i in ids if c is None or categories.get(i, "") == c]
            iv = bootstrap_mean(
                [v for i in members if (v := scored_value(r.get(i), "iou")) is not None]
            )
            intervals.append((iv.mean, iv.low, iv.high))
        series.append((name, intervals))
    parts.append(charts.bars(labels, series, "mean iou", hi=1.0))
    marks = [
        (name, run_summary(name, r, ids).seconds_per_image, _mean_or_nan(v))
        for name, r, v in zip(names, rows, ious, strict=True)
    ]
    parts.append(charts.points(marks, "seconds per image", "mean iou"))
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            pts = [
                (i, x, y)
                for i in ids
                if (x := scored_value(rows[a].get(i), "iou")) is not None
                and (y := scored_value(rows[b].get(i), "iou")) is not None
            ]
            parts.append(charts.pair_scatter(names[a], names[b], pts, "iou"))
    return f'<div class="charts">{"".join(parts)}</div>'


def _mean_or_nan(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _difference_cell(d: PairedDifference) -> str:
    iv = d.difference
    if iv.n == 0:
        return '<td class="num">&ndash;</td>'
    flag = ""
    css = "num"
    if d.significant:
        a_better = d.better == d.run_a
        css += " sig " + ("better" if a_better else "worse")
        flag = " ▲" if a_better else " ▼"
    return (
        f'<td class="{css}" data-metric="{d.metric}" data-diff="{iv.mean:.9g}"'
        f' data-low="{iv.low:.9g}" data-high="{iv.high:.9g}"'
        f' data-significant="{str(d.significant).lower()}">'
        f"{iv.mean:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}]{flag}</td>"
    )


def _pairwise_table(diffs: Sequence[PairedDifference]) -> str:
    head = "".join(f"<th>{m} A&minus;B [95% CI]</th>" for m, _ in METRICS)
    out = [
        '<table id="pairwise"><thead><tr><th>A</th><th>B</th><th>group</th><th>n</th>'
        f"{head}</tr></thead><tbody>"
    ]
    per_row: dict[tuple[str, str, str], list[PairedDifference]] = {}
    for d in diffs:
        per_row.setdefault((d.run_a, d.run_b, d.group), []).append(d)
    for (a, b, group), ds in per_row.items():
        out.append(
            f'<tr data-a="{_esc(a)}" data-b="{_esc(b)}" data-group="{_esc(group)}">'
            f"<th>{_esc(a)}</th><th>{_esc(b)}</th><td>{_esc(group)}</td>"
            f'<td class="num">{ds[0].difference.n}</td>{"".join(map(_difference_cell, ds))}</tr>'
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _disagreements(
    names: Sequence[str],
    rows: Sequence[Rows],
    ids: Sequence[str],
    link: Callable[[str | None], str | None],
) -> str:
    out = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            scored = [
                (abs(x - y), i, x, y)
                for i in ids
                if (x := scored_value(rows[a].get(i), "iou")) is not None
                and (y := scored_value(rows[b].get(i), "iou")) is not None
            ]
            scored.sort(key=lambda t: (-t[0], t[1]))
            body = []
            for _, i, x, y in scored[:DISAGREE_TOP]:
                files = " ".join(_links(names[k], rows[k].get(i), link) for k in (a, b))
                body.append(
                    f'<tr data-id="{_esc(i)}"><th><a href="#sheet-{_esc(i)}">{_esc(i)}</a></th>'
                    f'<td class="num">{x:.4f}</td><td class="num">{y:.4f}</td>'
                    f'<td class="num">{x - y:+.4f}</td><td>{files}</td></tr>'
                )
            out.append(
                f'<table class="disagree" data-a="{_esc(names[a])}" data-b="{_esc(names[b])}">'
                f"<caption>{_esc(names[a])} vs {_esc(names[b])}</caption><thead><tr><th>id</th>"
                f"<th>iou A</th><th>iou B</th><th>A&minus;B</th><th>full size</th></tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>"
            )
    return "\n".join(out)


def _links(
    name: str, row: Mapping[str, Any] | None, link: Callable[[str | None], str | None]
) -> str:
    alpha = link(None if row is None else row.get("mask_uri"))
    cutout = link(None if row is None else row.get("cutout_uri")) or alpha
    parts = [
        f'<a href="{_esc(u)}">{_esc(name)}: {what}</a>'
        for what, u in (("alpha", alpha), ("cutout", cutout))
        if u
    ]
    return " · ".join(parts)


def _tiles(
    order: Sequence[str],
    names: Sequence[str],
    rows: Sequence[Rows],
    thumbs: Callable[[str, int], tuple[str, str, int, int] | None],
    link: Callable[[str | None], str | None],
) -> str:
    out = ['<div class="tiles" id="tiles">']
    for i in order:
        parts = [
            f'<figure class="tile" id="tile-{_esc(i)}">'
            f'<div class="id" title="{_esc(i)}">{_esc(i)}</div>'
        ]
        for j, name in enumerate(names):
            row = rows[j].get(i)
            got = thumbs(i, j)
            iou = scored_value(row, "iou")
            label = f"{name} {'' if iou is None else f'{iou:.3f}'}"
            if got is None or row is None or row.get("status") != "ok":
                parts.append(
                    f'<div class="pair"><span title="{_esc(name)}">{_esc(label)}</span>failed</div>'
                )
                continue
            alpha_src, cutout_src, width, height = got
            wh = f'width="{width}" height="{height}"'
            alpha = link(row.get("mask_uri")) or alpha_src
            cutout = link(row.get("cutout_uri")) or alpha
            parts.append(
                f'<div class="pair" data-run="{j}"><span title="{_esc(name)}">{_esc(label)}</span>'
                f'<a href="{_esc(alpha)}"><img src="{_esc(alpha_src)}" {wh}'
                f' alt="{_esc(name)}: alpha"></a><a href="{_esc(cutout)}">'
                f'<img src="{_esc(cutout_src)}" {wh} alt="{_esc(name)}: cutout"></a></div>'
            )
        parts.append("</figure>")
        out.append("".join(parts))
    out.append("</div>")
    return "\n".join(out)


def sections(
    ids: Sequence[str],
    categories: Mapping[str, str],
    columns: Mapping[str, Mapping[str, str]],
    names: Sequence[str],
    rows: Sequence[Rows],
    *,
    slice_by: Sequence[str] = (),
    sheet_order: Sequence[str] = (),
    thumbs: Callable[[str, int], tuple[str, str, int, int] | None] = lambda i, j: None,
    link: Callable[[str | None], str | None] = lambda uri: uri,
    seed: int = 0,
) -> str:
    """The head-to-head HTML: runs (seconds per image, licence class), charts, pairwise
    differences per group, disagreements and the compact sheet of `sheet_order`.

    `columns` maps id -> manifest column -> value (for slice_by); `thumbs(id, run)` gives the
    (alpha src, cutout src, width, height) of thumbnails already written, or None;
    `link(uri)` turns an output URI into an href relative to the page (None for none)."""
    cats = {i: {"category": categories.get(i, "")} for i in ids}
    merged = {i: {**columns.get(i, {}), **cats[i]} for i in ids}
    group_ids = groups(ids, merged, ["category", *[c for c in slice_by if c != "category"]])
    out = [
        "<h2>Runs</h2>",
        '<p class="meta">Means over scored images; seconds: mean total_ms / 1000; licence class'
        " of the model(s) per metrics row.</p>",
        _runs_table(names, rows, ids),
        "<h2>Charts</h2>",
        '<p class="meta">IoU distribution per run; mean IoU per category with 95% bootstrap'
        " intervals; accuracy against time; per image, run A (x) against run B (y).</p>",
        _charts(names, rows, ids, categories),
    ]
    if len(names) > 1:
        out += [
            "<h2>Head to head</h2>",
            '<p class="meta">Paired difference A&minus;B over the images both runs scored,'
            " with a 95% percentile-bootstrap interval over images (2000 resamples, seeded);"
            " ▲/▼: significant (the interval excludes 0), A better/worse. Each row is its own"
            " test: among many slices, about 1 in 20 true ties shows a mark by chance; small"
            " groups have wide intervals.</p>",
            _pairwise_table(pairwise(names, rows, group_ids, seed=seed)),
            "<h2>Where they disagree most</h2>",
            '<p class="meta">Largest |iou A &minus; iou B| per pair of runs.</p>',
            _disagreements(names, rows, ids, link),
        ]
    if sheet_order:
        out += [
            "<h2>Contact sheet, compact</h2>",
            '<p class="meta">Worst first; per run its alpha and cutout, each linking to the'
            " full-size file.</p>",
            _tiles(sheet_order, names, rows, thumbs, link),
        ]
    return "\n".join(out)
