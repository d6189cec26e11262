"""Head-to-head statistics against hand-made sets whose answers are known."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from matteflow.pipelines import compare
from matteflow.pipelines.compare import (
    bootstrap_mean,
    groups,
    paired_difference,
    pairwise,
    run_summary,
)


def _rows(values: dict[str, float | None], **extra: Any) -> dict[str, dict[str, Any]]:
    """Rows with iou = value (None: a failed row) and mae = 1 - value."""
    rows: dict[str, dict[str, Any]] = {}
    for i, v in values.items():
        if v is None:
            rows[i] = {"id": i, "status": "failed"}
        else:
            rows[i] = {"id": i, "status": "ok", "iou": v, "mae": 1 - v, **extra}
    return rows


def test_all_names_exist() -> None:
    assert all(hasattr(compare, name) for name in compare.__all__)


def test_a_constant_difference_has_a_zero_width_interval() -> None:
    a = _rows({"x": 0.9, "y": 0.8, "z": 0.7})
    b = _rows({"x": 0.8, "y": 0.7, "z": 0.6})
    d = paired_difference(a, b, ["x", "y", "z"], "iou", names=("A", "B"))
    assert (d.mean_a, d.mean_b) == (pytest.approx(0.8), pytest.approx(0.7))
    assert d.difference.n == 3
    assert d.difference.mean == pytest.approx(0.1)
    assert d.difference.low == pytest.approx(0.1) and d.difference.high == pytest.approx(0.1)
    assert d.significant and d.better == "A"
    # mae = 1 - iou: A's mae is 0.1 lower, so A is better there too (lower is better).
    m = paired_difference(a, b, ["x", "y", "z"], "mae", names=("A", "B"))
    assert m.difference.mean == pytest.approx(-0.1) and m.better == "A"


def test_two_values_give_the_exact_bootstrap_interval() -> None:
    # Differences {0, 1}: resampled means are 0, 0.5, 1 with chances 1/4, 1/2, 1/4, so the
    # 2.5th and 97.5th percentiles are 0 and 1; 0 is inside: not significant.
    iv = bootstrap_mean([0.0, 1.0])
    assert (iv.mean, iv.low, iv.high, iv.n) == (0.5, 0.0, 1.0, 2)
    d = paired_difference(_rows({"p": 1.0, "q": 0.5}), _rows({"p": 0.0, "q": 0.5}), "pq", "iou")
    assert d.difference.low == 0.0 and not d.significant and d.better == ""


def test_the_bootstrap_matches_exhaustive_enumeration() -> None:
    """With n = 5 every one of the 5**5 resamples can be listed: the seeded Monte Carlo
    percentiles must agree with the exact ones."""
    values = [0.12, -0.05, 0.30, 0.02, 0.21]
    exact = [float(np.mean(c)) for c in itertools.product(values, repeat=len(values))]
    low, high = np.percentile(exact, [2.5, 97.5])
    iv = bootstrap_mean(values, resamples=20000, seed=7)
    assert iv.mean == pytest.approx(np.mean(values))
    assert iv.low == pytest.approx(low, abs=0.01) and iv.high == pytest.approx(high, abs=0.01)
    assert bootstrap_mean(values, seed=7) == bootstrap_mean(values, seed=7)  # reproducible


def test_only_images_both_runs_scored_are_paired() -> None:
    a = _rows({"x": 0.9, "y": None, "z": 0.5, "w": 0.4})
    b = _rows({"x": 0.7, "y": 0.8, "z": 0.9})  # w missing from B
    d = paired_difference(a, b, ["x", "y", "z", "w"], "iou")
    assert d.difference.n == 2
    assert d.difference.mean == pytest.approx(((0.9 - 0.7) + (0.5 - 0.9)) / 2)
    assert (d.mean_a, d.mean_b) == (pytest.approx(0.7), pytest.approx(0.8))
    empty = paired_difference(a, b, ["y"], "iou")
    assert empty.difference.n == 0 and math.isnan(empty.difference.mean)
    assert not empty.significant


def test_one_image_is_never_significant() -> None:
    d = paired_difference(_rows({"x": 0.9}), _rows({"x": 0.1}), ["x"], "iou")
    assert d.difference.low == d.difference.high == pytest.approx(0.8)
    assert not d.significant  # one image: no spread to judge by


def test_groups_slice_by_manifest_columns() -> None:
    ids = ["a", "b", "c", "d"]
    columns = {
        "a": {"skin": "dark", "category": "portrait"},
        "b": {"skin": "light", "category": "portrait"},
        "c": {"skin": "dark", "category": "product"},
        "d": {"category": "product"},
    }
    got = groups(ids, columns, ["category", "skin"])
    assert got == [
        ("all", ids),
        ("category=portrait", ["a", "b"]),
        ("category=product", ["c", "d"]),
        ("skin=(none)", ["d"]),
        ("skin=dark", ["a", "c"]),
        ("skin=light", ["b"]),
    ]


def test_pairwise_covers_every_pair_group_and_metric() -> None:
    rows = [_rows({"x": 0.5, "y": 0.6}), _rows({"x": 0.4, "y": 0.6}), _rows({"x": 0.9, "y": 1.0})]
    diffs = pairwise(["r0", "r1", "r2"], rows, [("all", ["x", "y"]), ("one", ["x"])])
    assert len(diffs) == 3 * 2 * 3  # pairs x groups x metrics
    pairs = {(d.run_a, d.run_b) for d in diffs}
    assert pairs == {("r0", "r1"), ("r0", "r2"), ("r1", "r2")}
    d = next(
        d for d in diffs if (d.run_a, d.run_b, d.group, d.metric) == ("r1", "r2", "one", "iou")
    )
    assert d.difference.mean == pytest.approx(-0.5)


def test_run_summary_seconds_and_licence() -> None:
    rows = _rows({"x": 0.5, "y": 0.6, "z": None}, licence_class="permissive")
    rows["x"]["total_ms"] = 1000.0
    rows["y"]["total_ms"] = 3000.0
    s = run_summary("r", rows, ["x", "y", "z", "missing"])
    assert (s.scored, s.failed, s.seconds_per_image, s.licence) == (2, 2, 2.0, "permissive")
    bare = run_summary("p", _rows({"x": 0.5}), ["x"])
    assert math.isnan(bare.seconds_per_image) and bare.licence == "unknown"
