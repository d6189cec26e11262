"""Accounting around a batch run: what a new run replaces before it starts, and after it ends
the review list, the reconciliation of metrics rows with the manifest, and `run.json` (last).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from matteflow.models.registry import get_spec
from matteflow.pipelines.config import RunConfig
from matteflow.transforms.csvfile import write_csv
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.manifest import absolute_uri, count_rows
from matteflow.transforms.metrics import read_metrics
from matteflow.transforms.storage import write_atomic

__all__ = ["clear_previous_run", "counter", "write_review", "write_summary"]

_LOG = logging.getLogger(__name__)


def clear_previous_run(layout: OutputLayout) -> None:
    """A run replaces the metrics, review list and run.json of the last one (state/ stays: it
    is resume)."""
    stale = [
        m.path
        for pattern in layout.replaced_by_each_run
        for m in FileSystems.match([pattern])[0].metadata_list
    ]
    if FileSystems.exists(layout.run_json):
        stale.append(layout.run_json)
    if stale:
        FileSystems.delete(stale)


def write_review(layout: OutputLayout, table: pa.Table) -> int:
    """Write the review manifest: the rows flagged needs_review, most uncertain first, as a
    manifest another run (a stronger model, a human tool) can take. Returns the count."""
    rows = [r for r in table.to_pylist() if r["needs_review"]]
    rows.sort(key=lambda r: (-r["uncertainty"], r["id"]))  # ties by id: same list on any runner
    # Local paths absolute: the list resolves from its own folder when fed back (issue 17)
    write_csv(
        layout.review_manifest,
        ["id", "uri", "output_key", "uncertainty", "cutout_uri", "mask_uri"],
        (
            [
                r["id"],
                absolute_uri(r["source_uri"]),
                r["output_key"],
                f"{r['uncertainty']:.4f}",
                absolute_uri(r["cutout_uri"] or ""),
                absolute_uri(r["mask_uri"] or ""),
            ]
            for r in rows
        ),
    )
    return len(rows)


def counter(result: PipelineResult, namespace: str, name: str) -> int | None:
    """A Beam counter's committed value (a distribution's: its count), summed over steps; None
    when the runner reports no such metric."""
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    except Exception as err:  # a runner without metrics, or its service failing: run.json stays
        _LOG.warning("metrics unavailable from the runner (%s: %s)", type(err).__name__, err)
        return None
    values = [c.committed for c in query["counters"] if c.committed is not None]
    values += [d.committed.count for d in query["distributions"] if d.committed is not None]
    return sum(values) if values else None


def _versions() -> dict[str, str]:
    packages = ("matteflow", "apache-beam", "torch", "numpy", "pillow", "pyarrow")
    return {"python": platform.python_version(), **{p: version(p) for p in packages}}


def write_summary(
    cfg: RunConfig, result: PipelineResult, started: float, started_at: str
) -> dict[str, Any]:
    """Count the metrics rows, reconcile them with the manifest, write the review list and
    run.json (last); returns run.json's content. `started` is time.monotonic() at the start."""
    layout = OutputLayout(cfg.output)
    table = read_metrics(cfg.output)
    statuses = table.column("status").to_pylist()
    review = write_review(layout, table)
    counts = {s: statuses.count(s) for s in ("ok", "skipped", "failed")}
    manifest_rows = counter(result, "matteflow.manifest", "rows")
    if manifest_rows is None:  # a runner without metrics: count the manifest itself
        manifest_rows = count_rows(cfg.manifest, cfg.output)
    failure_rate = counts["failed"] / len(statuses) if statuses else 0.0
    summary = {
        "status": "finished",
        "manifest": cfg.manifest,
        "output": cfg.output,
        "manifest_rows": manifest_rows,
        "counts": counts,
        "reconciled": len(statuses) == manifest_rows,
        "failure_rate": round(failure_rate, 6),
        "max_failure_rate": cfg.max_failure_rate,
        "inferred_images": counter(result, "matteflow.segment", "images"),
        # RunInference's own record of each model load: one per worker process that segmented.
        "model_loads": counter(result, "matteflow.segment", "load_model_latency_milli_secs"),
        "needs_review": review,
        "model": {
            "name": cfg.model.name,
            "sha256": get_spec(cfg.model.name).sha256 or None,
            "licence_class": get_spec(cfg.model.name).licence_class,
            "device": cfg.model.device,
            "dtype": cfg.model.dtype,
        },
        "config": dataclasses.asdict(cfg),
        "versions": _versions(),
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - started, 3),
    }
    write_atomic(layout.run_json, json.dumps(summary, indent=2).encode())
    return summary
