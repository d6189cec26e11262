"""Human review of a finished run, as data: the items to review, the decisions people make
(`{output}/reviews/part-*.parquet`), the rework/rejected manifests they export and the figures
the eval report shows. No web code here: `review_server.py` serves it.

Decisions are append-only. Each write is a new part file, written under a temporary name and
renamed (storage.write_atomic), so any number of reviewers can decide on one run at once and a
killed server leaves no partial part file. Reading replays the rows in time order per id:
`accept`, `reject` and `retry` each become the item's state; `undo` takes back that item's
latest decision still standing (the one before it shows again, or none).
"""

from __future__ import annotations

import io
import json
import math
import statistics
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from scipy.stats import rankdata

from matteflow.transforms.csvfile import write_csv
from matteflow.transforms.failures import NotFound
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.manifest import absolute_uri, read_records
from matteflow.transforms.metrics import read_metrics
from matteflow.transforms.storage import read_bytes, write_atomic

__all__ = [
    "DECISIONS",
    "SCHEMA",
    "SCORES",
    "UNDO",
    "Decision",
    "DecisionLog",
    "Item",
    "ReviewError",
    "ReviewStats",
    "export",
    "latest",
    "load_items",
    "read_decisions",
    "review_stats",
    "run_model",
    "run_summary",
    "summary",
    "write_decisions",
]

DECISIONS = ("accept", "reject", "retry")  # what a person decides about an item
UNDO = "undo"  # takes back the item's latest decision still standing
SCORES = range(1, 6)  # quality score 1 (unusable) .. 5 (perfect)

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("output_key", pa.string()),
        ("decision", pa.string()),  # accept | reject | retry | undo
        ("score", pa.int8()),  # 1..5, null when not scored
        ("model_suggested", pa.string()),  # retry: the registry model to redo it with
        ("reviewer", pa.string()),
        ("seconds", pa.float64()),  # from the item's first display to this decision
        ("decided_at", pa.timestamp("us", tz="UTC")),
    ]
)


class ReviewError(ValueError):
    """Not a finished run, or a decision that does not fit the items or the schema."""


@dataclass(frozen=True)
class Item:
    """One row under review: a metrics row's identity, outputs and uncertainty."""

    id: str
    output_key: str
    uncertainty: float | None  # None for rows that were skipped (not re-inferred) or failed
    source_uri: str  # as recorded in the metrics (credentials redacted)
    cutout_uri: str  # "" when the row has none (failed, or cutouts not written)
    mask_uri: str
    status: str  # ok | skipped | failed
    category: str  # the manifest's `category` column, "" when absent


@dataclass(frozen=True)
class Decision:
    """One SCHEMA row (the fields are its columns, in order)."""

    id: str
    output_key: str
    decision: str
    score: int | None
    model_suggested: str | None
    reviewer: str
    seconds: float
    decided_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.decision not in (*DECISIONS, UNDO):
            raise ReviewError(f"decision: expected one of {', '.join(DECISIONS)} or undo")
        if self.score is not None and self.score not in SCORES:
            raise ReviewError(f"score: expected 1 to 5, got {self.score}")
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ReviewError(f"seconds: expected a non-negative number, got {self.seconds}")


def run_summary(output: str) -> dict[str, Any]:
    """The run.json of the finished run at output; raises ReviewError without one."""
    try:
        run: dict[str, Any] = json.loads(read_bytes(OutputLayout(output).run_json))
    except NotFound:
        raise ReviewError(f"{output}: no run.json; review a finished run's output") from None
    return run


def run_model(output: str) -> str:
    """The model name the run at output used (run.json); raises ReviewError without one."""
    model = run_summary(output).get("model")
    name = model.get("name") if isinstance(model, dict) else None
    if not name:
        raise ReviewError(f"{output}/run.json names no model")
    return str(name)


def _item(row: dict[str, object], written_to: str, output: str) -> Item:
    """The item of a metrics row of a run written to `written_to` and now at `output`: its
    output URIs are moved along with the run (a copied or synced run folder still shows)."""

    def moved(column: str) -> str:
        uri = str(row.get(column) or "")
        if written_to and uri.startswith(f"{written_to}/"):
            return f"{output}{uri[len(written_to) :]}"
        return uri

    metadata = dict(row.get("metadata") or [])  # type: ignore[call-overload]
    uncertainty = row.get("uncertainty")
    return Item(
        id=str(row["id"]),
        output_key=str(row.get("output_key") or row["id"]),
        uncertainty=None if uncertainty is None else float(uncertainty),  # type: ignore[arg-type]
        source_uri=str(row.get("source_uri") or ""),
        cutout_uri=moved("cutout_uri"),
        mask_uri=moved("mask_uri"),
        status=str(row.get("status") or ""),
        category=str(metadata.get("category") or ""),
    )


def load_items(output: str, all_rows: bool = False) -> list[Item]:
    """The items of the finished run at output: the review list (`review/manifest.csv`, most
    uncertain first) or, with all_rows, every metrics row (most uncertain first, then by id).
    Raises ReviewError when output holds no finished run."""
    layout = OutputLayout(output)
    written_to = str(run_summary(output).get("output") or "").rstrip("/")
    rows = {str(r["id"]): r for r in read_metrics(output).to_pylist()}
    if all_rows:
        items = [_item(r, written_to, layout.output) for r in rows.values()]
        return sorted(items, key=lambda i: (-(i.uncertainty or 0.0), i.id))
    try:
        listed = [str(r["id"]) for r in read_records(layout.review_manifest)]
    except NotFound:
        raise ReviewError(f"{output}: no review/manifest.csv; --all reviews every row") from None
    return [_item(rows[i], written_to, layout.output) for i in listed if i in rows]


def write_decisions(output: str, decisions: Sequence[Decision]) -> str:
    """Append decisions as one new part file under `{output}/reviews/` (atomic); returns its
    uri. Part names start with the first decision's time, so a listing is roughly in order."""
    if not decisions:
        raise ReviewError("no decisions to write")
    stamp = decisions[0].decided_at.strftime("%Y%m%dT%H%M%S%fZ")
    uri: str = OutputLayout(output).review_part(f"{stamp}-{uuid.uuid4().hex[:12]}")
    table = pa.Table.from_pylist([asdict(d) for d in decisions], schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_atomic(uri, buf.getvalue())
    return uri


class DecisionLog:
    """The decisions under `{output}/reviews/`, read incrementally: a part file never changes
    once renamed into place, so each call reads only the part files it has not read before.
    Safe to share between threads."""

    def __init__(self, output: str) -> None:
        self._pattern = OutputLayout(output).reviews_glob
        self._read: set[str] = set()
        self._decisions: list[Decision] = []
        self._lock = threading.Lock()

    def decisions(self) -> list[Decision]:
        """Every decision so far, oldest first (ties: part file order). Temporary files of
        writes in flight (hidden names) are not part files and are ignored."""
        with self._lock:
            listed = {m.path for m in FileSystems.match([self._pattern])[0].metadata_list}
            new = sorted(listed - self._read)
            for path in new:
                table = pq.read_table(io.BytesIO(read_bytes(path)), schema=SCHEMA)
                self._decisions.extend(Decision(**row) for row in table.to_pylist())
            self._read.update(new)
            if new:
                self._decisions.sort(key=lambda d: d.decided_at)  # stable
            return list(self._decisions)


def read_decisions(output: str) -> list[Decision]:
    """Every decision row under `{output}/reviews/`, oldest first (DecisionLog.decisions)."""
    return DecisionLog(output).decisions()


def latest(decisions: Sequence[Decision]) -> dict[str, Decision]:
    """The decision standing per id after replaying `decisions` (oldest first): undo takes
    back the latest one still standing; ids with none standing are left out."""
    stacks: dict[str, list[Decision]] = {}
    for d in decisions:
        stack = stacks.setdefault(d.id, [])
        if d.decision == UNDO:
            if stack:
                stack.pop()
        else:
            stack.append(d)
    return {i: s[-1] for i, s in stacks.items() if s}


def summary(items: Sequence[Item], decisions: Sequence[Decision]) -> dict[str, object]:
    """Counts of the standing decisions on items by kind, pending items, the mean score and
    the median review seconds of decided items, and who reviewed."""
    standing = latest(decisions)
    ids = {i.id for i in items}
    decided = [d for i, d in standing.items() if i in ids]
    scores = [d.score for d in decided if d.score is not None]
    seconds = [d.seconds for d in decided]
    return {
        "items": len(items),
        "decided": len(decided),
        "pending": len(ids) - len(decided),
        **{name: sum(d.decision == name for d in decided) for name in DECISIONS},
        "mean_score": statistics.fmean(scores) if scores else None,
        "median_seconds": statistics.median(seconds) if seconds else None,
        "reviewers": sorted({d.reviewer for d in decisions}),
    }


def export(output: str) -> tuple[str, str, int, int]:
    """Write `{output}/review/rework.csv` (rows whose standing decision is retry, as a manifest
    `id,uri,output_key,model`: the suggested model, else the run's) and
    `{output}/review/rejected.csv` (`id,uri,output_key,score,reviewer,decided_at`); relative
    local sources are made absolute against the current folder.
    Returns both uris and their row counts. Raises ReviewError when output is not a run."""
    model = run_model(output)
    items = {i.id: i for i in load_items(output, all_rows=True)}
    standing = latest(read_decisions(output))
    rework, rejected = [], []
    for item_id in sorted(standing):
        d, item = standing[item_id], items.get(item_id)
        if item is None:  # decided on a row the run no longer has
            continue
        # A relative source was relative to where the run started (as for the server); the
        # CSVs live in review/, where a relative path would resolve elsewhere.
        uri = absolute_uri(item.source_uri)
        if d.decision == "retry":
            rework.append([item.id, uri, item.output_key, d.model_suggested or model])
        elif d.decision == "reject":
            score = "" if d.score is None else str(d.score)
            when = d.decided_at.isoformat(timespec="seconds")
            rejected.append([item.id, uri, item.output_key, score, d.reviewer, when])
    layout = OutputLayout(output)
    rework_uri, rejected_uri = layout.review_export("rework"), layout.review_export("rejected")
    write_csv(rework_uri, ["id", "uri", "output_key", "model"], rework)
    header = ["id", "uri", "output_key", "score", "reviewer", "decided_at"]
    write_csv(rejected_uri, header, rejected)
    return rework_uri, rejected_uri, len(rework), len(rejected)


@dataclass(frozen=True)
class ReviewStats:
    """Human review of one run, for the eval report."""

    decided: int
    scored: int
    mean_score: float | None
    score_counts: dict[int, int]  # score 1..5 -> items
    # Spearman rank correlation of score with the model's uncertainty (negative: people score
    # lower where the model was unsure); None with fewer than 3 pairs or a constant side.
    score_uncertainty_rho: float | None
    # mean uncertainty of accepted items, and of rejected or retried ones
    uncertainty_accepted: float | None
    uncertainty_sent_back: float | None
    acceptance_by_category: dict[str, tuple[int, int]]  # category -> (accepted, decided)
    mean_seconds: float | None  # review seconds per decided item
    median_seconds: float | None


def _spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def review_stats(
    decisions: Sequence[Decision], metrics: pa.Table, categories: Mapping[str, str]
) -> ReviewStats:
    """Figures over the standing decisions on the ids of `metrics` (a run's metrics rows, for
    their uncertainty); `categories` maps id -> category ("" or missing: "(none)")."""
    rows = {str(r["id"]): r for r in metrics.select(["id", "uncertainty"]).to_pylist()}
    standing = [d for i, d in latest(decisions).items() if i in rows]
    scored = [d for d in standing if d.score is not None]
    pairs = [
        (float(d.score), float(rows[d.id]["uncertainty"]))
        for d in scored
        if d.score is not None and rows[d.id]["uncertainty"] is not None
    ]

    def mean_uncertainty(kinds: tuple[str, ...]) -> float | None:
        values = [rows[d.id]["uncertainty"] for d in standing if d.decision in kinds]
        present = [float(v) for v in values if v is not None]
        return statistics.fmean(present) if present else None

    by_category: dict[str, tuple[int, int]] = {}
    for d in standing:
        name = categories.get(d.id) or "(none)"
        accepted, total = by_category.get(name, (0, 0))
        by_category[name] = (accepted + (d.decision == "accept"), total + 1)
    seconds = [d.seconds for d in standing]
    return ReviewStats(
        decided=len(standing),
        scored=len(scored),
        mean_score=statistics.fmean([d.score for d in scored if d.score]) if scored else None,
        score_counts={s: sum(d.score == s for d in scored) for s in SCORES},
        score_uncertainty_rho=_spearman([s for s, _ in pairs], [u for _, u in pairs]),
        uncertainty_accepted=mean_uncertainty(("accept",)),
        uncertainty_sent_back=mean_uncertainty(("reject", "retry")),
        acceptance_by_category=dict(sorted(by_category.items())),
        mean_seconds=statistics.fmean(seconds) if seconds else None,
        median_seconds=statistics.median(seconds) if seconds else None,
    )
