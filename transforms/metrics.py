"""Metrics, the flow's last step: each row's outcome (Written, Skipped or Failed) becomes one
frozen MetricsRow, written by WriteMetrics under `{output}/metrics/` with SCHEMA, which is
derived from MetricsRow's fields; `read_metrics` reads them back.
"""

from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics

from matteflow.transforms.failures import redact
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.settings import KINDS
from matteflow.transforms.storage import read_bytes
from matteflow.transforms.types import Failed, ImageTask, Scores, Skipped, Timings, Written

__all__ = [
    "SCHEMA",
    "MetricsRow",
    "WriteMetrics",
    "metrics_row",
    "read_metrics",
    "set_progress_listener",
]

Pairs = tuple[tuple[str, str], ...]


def _arrow(arrow: pa.DataType) -> dict[str, Any]:
    """Field metadata of a MetricsRow field written as one column of type `arrow`."""
    return {"arrow": arrow}


def _floats(record: type) -> dict[str, Any]:
    """Field metadata of a MetricsRow field written as one float64 column per field of
    `record` (a dataclass)."""
    return {"columns": [(f.name, pa.float64()) for f in dataclasses.fields(record)]}


@dataclass(frozen=True)
class MetricsRow:
    """One manifest row's record: `ok`, `skipped` or `failed` (README, "Metrics schema").

    Every field is a Parquet column, except `scores`, `timings` and `uris`, which are several:
    the fields of Scores and Timings, and `{kind}_uri` for each output kind.
    """

    id: str = field(metadata=_arrow(pa.string()))
    source_uri: str = field(metadata=_arrow(pa.string()))  # redacted
    output_key: str = field(metadata=_arrow(pa.string()))
    status: str = field(metadata=_arrow(pa.string()))  # ok | skipped | failed
    source_sha256: str | None = field(default=None, metadata=_arrow(pa.string()))
    error_stage: str | None = field(default=None, metadata=_arrow(pa.string()))
    error_code: str | None = field(default=None, metadata=_arrow(pa.string()))
    error_message: str | None = field(default=None, metadata=_arrow(pa.string()))  # redacted
    width: int | None = field(default=None, metadata=_arrow(pa.int32()))
    height: int | None = field(default=None, metadata=_arrow(pa.int32()))
    source_format: str | None = field(default=None, metadata=_arrow(pa.string()))
    exif_orientation: int | None = field(default=None, metadata=_arrow(pa.int32()))
    bit_depth: int | None = field(default=None, metadata=_arrow(pa.int32()))
    frames: int | None = field(default=None, metadata=_arrow(pa.int32()))
    source_alpha: bool | None = field(default=None, metadata=_arrow(pa.bool_()))
    icc_description: str | None = field(default=None, metadata=_arrow(pa.string()))
    warnings: tuple[str, ...] = field(default=(), metadata={"arrow": pa.list_(pa.string())})
    model: str | None = field(default=None, metadata=_arrow(pa.string()))
    model_sha256: str | None = field(default=None, metadata=_arrow(pa.string()))
    # the model's licence class: permissive | copyleft | non-commercial | unclear
    licence_class: str | None = field(default=None, metadata=_arrow(pa.string()))
    device: str | None = field(default=None, metadata=_arrow(pa.string()))
    dtype: str | None = field(default=None, metadata=_arrow(pa.string()))
    batch_size: int | None = field(default=None, metadata=_arrow(pa.int32()))
    foreground_fraction: float | None = field(default=None, metadata=_arrow(pa.float64()))
    uncertainty: float | None = field(default=None, metadata=_arrow(pa.float64()))
    needs_review: bool | None = field(default=None, metadata=_arrow(pa.bool_()))
    ground_truth_uri: str | None = field(default=None, metadata=_arrow(pa.string()))  # redacted
    scores: Scores | None = field(default=None, metadata=_floats(Scores))
    timings: Timings | None = field(default=None, metadata=_floats(Timings))
    total_ms: float | None = field(default=None, metadata=_arrow(pa.float64()))
    uris: Pairs = field(
        default=(), metadata={"columns": [(f"{k}_uri", pa.string()) for k in KINDS]}
    )
    output_width: int | None = field(default=None, metadata=_arrow(pa.int32()))
    output_height: int | None = field(default=None, metadata=_arrow(pa.int32()))
    output_bytes: int | None = field(default=None, metadata=_arrow(pa.int64()))
    row_settings: Pairs = field(default=(), metadata={"arrow": pa.map_(pa.string(), pa.string())})
    metadata: Pairs = field(default=(), metadata={"arrow": pa.map_(pa.string(), pa.string())})

    @classmethod
    def of_task(cls, task: ImageTask, status: str, **values: Any) -> MetricsRow:
        """A row for `task` in `status` with `values` set; URIs are redacted (no credentials
        or signed-URL tokens)."""
        return cls(
            id=task.id,
            source_uri=redact(task.source_uri),
            output_key=task.output_key,
            status=status,
            ground_truth_uri=task.ground_truth_uri and redact(task.ground_truth_uri),
            metadata=task.metadata,
            row_settings=task.settings,
            **values,
        )

    def record(self) -> dict[str, Any]:
        """The row as the Parquet writer takes it: one key per SCHEMA column."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "uris":
                uris = dict(value)
                out.update({column: uris.get(column) for column, _ in f.metadata["columns"]})
            elif "columns" in f.metadata:
                parts = {} if value is None else dataclasses.asdict(value)
                out.update({column: parts.get(column) for column, _ in f.metadata["columns"]})
            elif f.name == "warnings":
                out[f.name] = list(value)
            elif f.name in ("row_settings", "metadata"):
                out[f.name] = dict(value)
            else:
                out[f.name] = value
        return out


SCHEMA = pa.schema(
    [
        column
        for f in dataclasses.fields(MetricsRow)
        for column in (f.metadata.get("columns") or [(f.name, f.metadata["arrow"])])
    ]
)


def _ok(written: Written) -> MetricsRow:
    matte = written.matte
    image = matte.image
    return MetricsRow.of_task(
        image.task,
        "ok",
        width=image.width,
        height=image.height,
        source_format=image.source_format,
        exif_orientation=image.orientation,
        bit_depth=image.bit_depth,
        frames=image.frames,
        source_alpha=image.source_alpha is not None,
        output_width=written.width,
        output_height=written.height,
        icc_description=image.icc_description,
        source_sha256=image.source_sha256 or None,
        warnings=image.warnings,
        model=matte.model,
        model_sha256=matte.model_sha256,
        licence_class=matte.licence_class or None,
        device=matte.device,
        dtype=matte.dtype,
        batch_size=matte.batch_size,
        foreground_fraction=float(np.mean(matte.alpha)),
        uncertainty=matte.uncertainty,
        needs_review=matte.needs_review,
        output_bytes=written.output_bytes,
        timings=matte.timings,
        total_ms=matte.timings.total_ms,
        scores=matte.scores,
        uris=tuple(written.uris.items()),
    )


def metrics_row(outcome: Written | Skipped | Failed) -> MetricsRow:
    """The one place rows are made: a written row is `ok`; a row whose outputs were current is
    `skipped`; a failed one names where and why (error columns, message redacted)."""
    if isinstance(outcome, Written):
        return _ok(outcome)
    if isinstance(outcome, Skipped):
        return MetricsRow.of_task(
            outcome.task,
            "skipped",
            source_sha256=outcome.source_sha256,
            uris=tuple(outcome.outputs.items()),
        )
    return MetricsRow.of_task(
        outcome.task,
        "failed",
        error_stage=outcome.stage,
        error_code=outcome.code,
        error_message=redact(outcome.message),
    )


_listener_lock = threading.Lock()
_listener: Callable[[str], None] | None = None


def set_progress_listener(listener: Callable[[str], None] | None) -> None:
    """Call listener(status) for each metrics row written in this process (local runs)."""
    global _listener
    with _listener_lock:
        _listener = listener


class _CountFn(beam.DoFn):
    """Counts rows by status (rows_ok, rows_skipped, rows_failed) and failed rows by code
    (failed/STAGE/CODE), records each stage's time per image (milliseconds) as a Beam
    distribution in namespace matteflow.stages, so a runner's UI shows where time goes, and
    passes each row on as its Parquet record."""

    def __init__(self) -> None:
        self._rows = {
            s: Metrics.counter("matteflow.metrics", f"rows_{s}")
            for s in ("ok", "skipped", "failed")
        }
        names = [f.name for f in dataclasses.fields(Timings)]
        self._stages = {
            name: Metrics.distribution("matteflow.stages", name) for name in (*names, "total_ms")
        }

    def process(self, row: MetricsRow) -> Iterator[dict[str, Any]]:
        self._rows[row.status].inc()
        if row.status == "failed":
            code = f"failed/{row.error_stage}/{row.error_code}"
            Metrics.counter("matteflow.metrics", code).inc()
        record = row.record()
        for name, distribution in self._stages.items():
            if record.get(name) is not None:
                distribution.update(round(record[name]))
        listener = _listener
        if listener is not None:
            listener(row.status)
        yield record


class WriteMetrics(beam.PTransform[beam.pvalue.PCollection[MetricsRow], beam.pvalue.PDone]):
    """MetricsRows -> `{output}/metrics/part-*.parquet` with SCHEMA."""

    def __init__(self, layout: OutputLayout) -> None:
        super().__init__()
        self._prefix = layout.metrics_prefix

    def expand(self, rows: beam.pvalue.PCollection[MetricsRow]) -> beam.pvalue.PDone:
        # Unbounded (streaming) rows come in fixed windows: each window's files are named by
        # its UTC start and end, e.g. part-2026-11-27T09-00-00-2026-11-27T09-01-00-00000-of-00001.
        shards = None if rows.is_bounded else "-V-SSSSS-of-NNNNN"
        done: beam.pvalue.PDone = (
            rows
            | "Count" >> beam.ParDo(_CountFn())
            | "Parquet"
            >> beam.io.WriteToParquet(
                self._prefix, SCHEMA, file_name_suffix=".parquet", shard_name_template=shards
            )
        )
        return done


def read_metrics(output: str) -> pa.Table:
    """All metrics rows under `{output}/metrics/` as one table (any Beam filesystem)."""
    tables = []
    for meta in FileSystems.match([OutputLayout(output).metrics_glob])[0].metadata_list:
        tables.append(pq.read_table(io.BytesIO(read_bytes(meta.path)), schema=SCHEMA))
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()
