"""Head-to-head statistics of eval runs: paired differences with bootstrap confidence intervals.

For runs A and B and a metric, the paired difference is mean over images of (A_i - B_i), over
the images both runs scored. Its 95 % interval is the percentile bootstrap over images: the
images are resampled with replacement `resamples` times (numpy's PCG64 seeded with `seed`, so a
report is reproducible) and the 2.5th and 97.5th percentiles of the resampled means are the
bounds. A difference is significant when the interval excludes 0 (two images at least).
Groups: all images, each category, and each value of any manifest column (`--slice-by`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "Interval",
    "PairedDifference",
    "RunSummary",
    "bootstrap_mean",
    "groups",
    "paired_difference",
    "pairwise",
    "run_summary",
    "scored_value",
]

# (metrics column, higher is better) compared head to head.
METRICS: tuple[tuple[str, bool], ...] = (("iou", True), ("mae", False), ("edge_mae", False))
RESAMPLES = 2000
CONFIDENCE = 0.95

Rows = Mapping[str, Mapping[str, Any]]  # one run's metrics rows by sample id


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap interval over n values (NaN when n is 0)."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedDifference:
    """mean(A_i - B_i) over images scored by both runs, with its interval."""

    metric: str
    run_a: str
    run_b: str
    group: str  # "all", "category=animal", "skin_tone=dark", ...
    mean_a: float
    mean_b: float
    difference: Interval
    higher_is_better: bool

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (and more than one image was paired)."""
        d = self.difference
        return d.n > 1 and (d.low > 0 or d.high < 0)

    @property
    def better(self) -> str:
        """The run that is significantly better, or "" when neither is."""
        if not self.significant:
            return ""
        a_higher = self.difference.mean > 0
        return self.run_a if a_higher == self.higher_is_better else self.run_b


@dataclass(frozen=True)
class RunSummary:
    """One run's scored count, mean seconds per image and licence classes."""

    name: str
    scored: int
    failed: int
    seconds_per_image: float  # mean total_ms / 1000 over ok rows; NaN when none has a time
    licence: str  # the distinct licence_class values of its rows, or "unknown"


def scored_value(row: Mapping[str, Any] | None, column: str) -> float | None:
    """The row's number in `column` when the row is ok and the value present (not NaN)."""
    if row is None or row.get("status") != "ok":
        return None
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def bootstrap_mean(
    values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0
) -> Interval:
    """The mean of `values` and its percentile-bootstrap 95 % interval (seeded)."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(x.mean()), float(low), float(high), n)


def paired_difference(
    a: Rows,
    b: Rows,
    ids: Sequence[str],
    metric: str,
    *,
    names: tuple[str, str] = ("A", "B"),
    group: str = "all",
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> PairedDifference:
    """mean(A_i - B_i) of `metric` over those of `ids` that both runs scored, with its
    bootstrap interval."""
    pairs = [(scored_value(a.get(i), metric), scored_value(b.get(i), metric)) for i in ids]
    both = [(x, y) for x, y in pairs if x is not None and y is not None]
    higher = dict(METRICS).get(metric, True)
    return PairedDifference(
        metric,
        names[0],
        names[1],
        group,
        statistics.fmean(x for x, _ in both) if both else math.nan,
        statistics.fmean(y for _, y in both) if both else math.nan,
        bootstrap_mean([x - y for x, y in both], resamples=resamples, seed=seed),
        higher,
    )


def groups(
    ids: Sequence[str], columns: Mapping[str, Mapping[str, str]], slice_by: Sequence[str]
) -> list[tuple[str, list[str]]]:
    """("all", every id), then ("COLUMN=value", its ids) for each column in slice_by (values
    sorted; "" shows as "(none)"). `columns` maps id -> manifest column -> value."""
    out: list[tuple[str, list[str]]] = [("all", list(ids))]
    for column in slice_by:
        values = sorted({columns.get(i, {}).get(column, "") for i in ids})
        for value in values:
            members = [i for i in ids if columns.get(i, {}).get(column, "") == value]
            out.append((f"{column}={value or '(none)'}", members))
    return out


def pairwise(
    names: Sequence[str],
    rows: Sequence[Rows],
    group_ids: Sequence[tuple[str, list[str]]],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[PairedDifference]:
    """Every pair of runs (in the given order), every group, every METRICS column."""
    out = []
    for (i, name_a), (j, name_b) in combinations(enumerate(names), 2):
        for group, ids in group_ids:
            for metric, _ in METRICS:
                out.append(
                    paired_difference(
                        rows[i],
                        rows[j],
                        ids,
                        metric,
                        names=(name_a, name_b),
                        group=group,
                        resamples=resamples,
                        seed=seed,
                    )
                )
    return out


def run_summary(name: str, rows: Rows, ids: Sequence[str]) -> RunSummary:
    """Scored and failed counts, mean seconds per image and licence classes over `ids`."""
    present = [rows.get(i) for i in ids]
    ok = [r for r in present if r is not None and r.get("status") == "ok"]
    seconds = [float(r["total_ms"]) / 1000 for r in ok if r.get("total_ms") is not None]
    licences = sorted({str(r["licence_class"]) for r in ok if r.get("licence_class")})
    return RunSummary(
        name,
        len(ok),
        len(ids) - len(ok),
        statistics.fmean(seconds) if seconds else math.nan,
        ", ".join(licences) or "unknown",
    )
