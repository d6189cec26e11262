"""SVG charts: well-formed, script-free, and each mark where its value puts it."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from matteflow.pipelines import charts
from matteflow.pipelines.charts import Scale, bars, distribution, pair_scatter, points

NS = {"s": "http://www.w3.org/2000/svg"}
ODD = 'run <&> "x"'


def _svg(text: str) -> ET.Element:
    root = ET.fromstring(text)  # raises on malformed markup or bad escaping
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert not root.findall(".//s:script", NS) and "<script" not in text
    return root


def _f(el: ET.Element, name: str) -> float:
    return float(el.attrib[name])


def _y_axis(root: ET.Element) -> Scale:
    """The value scale read back from the first and last y tick labels (0 and the top)."""
    labels = [t for t in root.findall("s:text", NS) if t.attrib.get("text-anchor") == "end"]
    lo, hi = labels[0], labels[-1]
    # Labels sit 4 px below their tick.
    return Scale(float(lo.text or 0), float(hi.text or 0), _f(lo, "y") - 4, _f(hi, "y") - 4)


def test_all_names_exist() -> None:
    assert all(hasattr(charts, name) for name in charts.__all__)


def test_scale_maps_ends_and_middle() -> None:
    s = Scale(0.0, 2.0, 100.0, 20.0)
    assert (s(0.0), s(1.0), s(2.0)) == (100.0, 60.0, 20.0)


def test_distribution_counts_and_heights() -> None:
    values = [0.05, 0.05, 0.95, 1.0, -0.2]  # -0.2 clips into the first bin, 1.0 into the last
    root = _svg(distribution([(ODD, values), ("b", [0.5])], "iou", bins=10))
    lines = root.findall("s:polyline", NS)
    assert [p.attrib["data-counts"] for p in lines] == [
        "3,0,0,0,0,0,0,0,0,2",
        "0,0,0,0,0,1,0,0,0,0",
    ]
    y = _y_axis(root)
    first = [tuple(map(float, p.split(","))) for p in lines[0].attrib["points"].split()]
    assert first[0][1] == pytest.approx(y(3 / 5), abs=0.1)  # bin 0 holds 3 of 5
    assert first[-1][1] == pytest.approx(y(2 / 5), abs=0.1)
    assert len(first) == 20  # two points per bin: a step line


def test_bars_heights_and_whiskers() -> None:
    series = [
        ("a", [(0.8, 0.7, 0.9), (0.5, 0.4, 0.6)]),
        (ODD, [(0.25, 0.2, 0.3), (math.nan, math.nan, math.nan)]),
    ]
    root = _svg(bars(["cats", "dogs"], series, "mean iou", hi=1.0))
    rects = root.findall("s:rect[@data-run]", NS)
    assert [(r.attrib["data-run"], r.attrib["data-group"]) for r in rects] == [
        ("0", "cats"),
        ("1", "cats"),
        ("0", "dogs"),
    ]  # NaN draws nothing
    y = _y_axis(root)
    for rect in rects:
        mean = float(rect.attrib["data-mean"])
        assert _f(rect, "y") == pytest.approx(y(mean), abs=0.1)
        assert _f(rect, "y") + _f(rect, "height") == pytest.approx(y(0.0), abs=0.1)
    whiskers = root.findall("s:line[@class='ci']", NS)
    assert len(whiskers) == 3
    assert _f(whiskers[0], "y1") == pytest.approx(y(0.7), abs=0.1)
    assert _f(whiskers[0], "y2") == pytest.approx(y(0.9), abs=0.1)
    heights = [_f(r, "height") for r in rects]
    assert heights[0] == pytest.approx(heights[1] * 0.8 / 0.25, rel=0.01)


def test_points_one_per_run_in_place() -> None:
    root = _svg(points([("fast", 0.5, 0.7), (ODD, 2.0, 0.9), ("none", math.nan, 0.5)], "s", "iou"))
    circles = root.findall("s:circle", NS)
    assert [(c.attrib["data-x"], c.attrib["data-y"]) for c in circles] == [
        ("0.5", "0.7"),
        ("2", "0.9"),
    ]
    # Same pixels per unit on each axis: the ratios of positions follow the values.
    x0 = _f(root.find("s:line", NS), "x1")  # type: ignore[arg-type]
    ratio = (_f(circles[1], "cx") - x0) / (_f(circles[0], "cx") - x0)
    assert ratio == pytest.approx(4.0, rel=0.01)
    y = _y_axis(root)
    assert _f(circles[0], "cy") == pytest.approx(y(0.7), abs=0.1)


def test_pair_scatter_puts_b_wins_above_the_diagonal() -> None:
    marks = [("b-wins", 0.2, 0.9), ("a-wins", 0.9, 0.2), ("tie", 0.5, 0.5)]
    root = _svg(pair_scatter("A", ODD, marks, "iou"))
    diagonal = root.find("s:line[@stroke-dasharray]", NS)
    assert diagonal is not None
    x1, y1, x2, y2 = (_f(diagonal, k) for k in ("x1", "y1", "x2", "y2"))

    def above(c: ET.Element) -> float:
        """> 0 when the point is above the diagonal (smaller y on screen)."""
        t = (_f(c, "cx") - x1) / (x2 - x1)
        return (y1 + t * (y2 - y1)) - _f(c, "cy")

    got = {c.attrib["data-id"]: above(c) for c in root.findall("s:circle", NS)}
    assert got["b-wins"] > 10 and got["a-wins"] < -10 and abs(got["tie"]) < 0.5
