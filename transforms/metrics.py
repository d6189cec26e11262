"""Metrics: ground-truth scoring, one Parquet row per manifest row, and reading them back.

Score (Matte -> Matte with iou/mae/edge_mae when the row has ground truth), then rows from
`ok_row` / `failed_row` are written by WriteMetrics under `{output}/metrics/` with `SCHEMA`.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageOps

from matteflow.transforms.failures import ScoreError, classify, redact
from matteflow.transforms.quality import scores
from matteflow.transforms.storage import read_bytes
from matteflow.transforms.types import Failed, ImageTask, Matte

__all__ = [
    "SCHEMA",
    "Score",
    "WriteMetrics",
    "base_row",
    "failed_row",
    "load_ground_truth",
    "ok_row",
    "read_metrics",
    "set_progress_listener",
    "skipped_row",
]

_TIMINGS = ["fetch_ms", "decode_ms", "infer_ms", "refine_ms", "score_ms", "encode_ms", "write_ms"]

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source_uri", pa.string()),
        ("output_key", pa.string()),
        ("status", pa.string()),  # ok | skipped | failed
        ("source_sha256", pa.string()),
        ("error_stage", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("source_format", pa.string()),
        ("exif_orientation", pa.int32()),
        ("bit_depth", pa.int32()),
        ("frames", pa.int32()),
        ("source_alpha", pa.bool_()),
        ("icc_description", pa.string()),
        ("warnings", pa.list_(pa.string())),
        ("model", pa.string()),
        ("model_sha256", pa.string()),
        ("licence_class", pa.string()),  # of the model: permissive | copyleft | ...
        ("device", pa.string()),
        ("dtype", pa.string()),
        ("batch_size", pa.int32()),
        ("foreground_fraction", pa.float64()),
        ("uncertainty", pa.float64()),
        ("needs_review", pa.bool_()),
        ("ground_truth_uri", pa.string()),
        ("iou", pa.float64()),
        ("mae", pa.float64()),
        ("edge_mae", pa.float64()),
        ("sad", pa.float64()),
        ("mse", pa.float64()),
        ("gradient_error", pa.float64()),
        ("boundary_f", pa.float64()),
        *[(name, pa.float64()) for name in _TIMINGS],
        ("total_ms", pa.float64()),
        ("cutout_uri", pa.string()),
        ("mask_uri", pa.string()),
        ("composite_uri", pa.string()),
        ("color_uri", pa.string()),
        ("psd_uri", pa.string()),
        ("output_width", pa.int32()),
        ("output_height", pa.int32()),
        ("output_bytes", pa.int64()),
        ("row_settings", pa.map_(pa.string(), pa.string())),
        ("metadata", pa.map_(pa.string(), pa.string())),
    ]
)


def base_row(task: ImageTask, status: str) -> dict[str, Any]:
    """A metrics row (every SCHEMA column, None unless the task says) for `task` in `status`;
    URIs are redacted (no credentials or signed-URL tokens)."""
    row: dict[str, Any] = dict.fromkeys(SCHEMA.names)
    row.update(
        id=task.id,
        source_uri=redact(task.source_uri),
        output_key=task.output_key,
        status=status,
        ground_truth_uri=task.ground_truth_uri and redact(task.ground_truth_uri),
        metadata=dict(task.metadata),
        row_settings=dict(task.settings),
        warnings=[],
    )
    return row


def ok_row(
    matte: Matte,
    outputs: dict[str, str],
    output_bytes: int,
    timings: dict[str, float],
    output_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The metrics row of a processed image; `outputs` maps uri columns to written URIs and
    `output_size` is the written images' (width, height)."""
    image = matte.image
    row = base_row(image.task, "ok")
    width, height = output_size or (None, None)
    row.update(
        width=image.width,
        height=image.height,
        source_format=image.source_format,
        exif_orientation=image.orientation,
        bit_depth=image.bit_depth,
        frames=image.frames,
        source_alpha=image.source_alpha is not None,
        output_width=width,
        output_height=height,
        icc_description=image.icc_description,
        source_sha256=image.source_sha256 or None,
        warnings=list(image.warnings),
        model=matte.model,
        model_sha256=matte.model_sha256,
        licence_class=matte.licence_class or None,
        device=matte.device,
        dtype=matte.dtype,
        batch_size=matte.batch_size,
        foreground_fraction=float(np.mean(matte.alpha)),
        uncertainty=matte.uncertainty,
        needs_review=matte.needs_review,
        output_bytes=output_bytes,
        total_ms=sum(timings.get(name, 0.0) for name in _TIMINGS),
        **{name: timings.get(name) for name in _TIMINGS},
        **matte.scores,
        **outputs,
    )
    return row


def skipped_row(task: ImageTask, outputs: dict[str, str], source_sha256: str) -> dict[str, Any]:
    """The metrics row of a row whose outputs were current: nothing was redone."""
    row = base_row(task, "skipped")
    row.update(source_sha256=source_sha256, **outputs)
    return row


def failed_row(failed: Failed) -> dict[str, Any]:
    """The metrics row of a row that failed; error columns say where and why."""
    row = base_row(failed.task, "failed")
    row.update(
        error_stage=failed.stage, error_code=failed.code, error_message=redact(failed.message)
    )
    return row


def load_ground_truth(data: bytes, uri: str) -> np.ndarray:
    """Ground-truth alpha bytes -> H x W float32 in [0, 1] (alpha channel if it has one)."""
    try:
        img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(img, dtype=np.float32) / 65535.0
        band = img.getchannel("A") if "A" in img.getbands() else img.convert("L")
        return np.asarray(band, dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as err:
        raise ScoreError(f"{uri}: cannot decode ground truth: {err}") from None


class _ScoreFn(beam.DoFn):
    def process(self, matte: Matte) -> Iterator[Matte | beam.pvalue.TaggedOutput]:
        task = matte.image.task
        if not task.ground_truth_uri:
            yield matte
            return
        start = time.perf_counter()
        try:
            gt = load_ground_truth(read_bytes(task.ground_truth_uri), task.ground_truth_uri)
            if gt.shape != matte.alpha.shape:
                raise ScoreError(
                    f"{task.ground_truth_uri}: ground truth is {gt.shape[1]}x{gt.shape[0]},"
                    f" the image is {matte.alpha.shape[1]}x{matte.alpha.shape[0]}",
                    code="size_mismatch",
                )
            values = scores(matte.alpha, gt)
        except Exception as err:
            failure = classify(err, "score", task.ground_truth_uri)
            failure.stage = "score"  # a missing ground truth is a scoring failure, not a fetch
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, failure))
            return
        timings = {**matte.timings_ms, "score_ms": (time.perf_counter() - start) * 1e3}
        yield dataclasses.replace(matte, scores=values, timings_ms=timings)


class Score(beam.PTransform):
    """Matte -> Matte with iou/mae/edge_mae for rows with ground truth; failures -> "failures"."""

    def expand(self, mattes: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return mattes | "Score" >> beam.ParDo(_ScoreFn()).with_outputs("failures", main="ok")


_listener_lock = threading.Lock()
_listener: Callable[[str], None] | None = None


def set_progress_listener(listener: Callable[[str], None] | None) -> None:
    """Call listener(status) for each metrics row written in this process (local runs)."""
    global _listener
    with _listener_lock:
        _listener = listener


class _CountFn(beam.DoFn):
    """Counts rows by status (rows_ok, rows_skipped, rows_failed) and failed rows by code
    (failed/STAGE/CODE), and records each stage's time per image (milliseconds) as a Beam
    distribution in namespace matteflow.stages, so a runner's UI shows where time goes."""

    def __init__(self) -> None:
        self._rows = {
            s: beam.metrics.Metrics.counter("matteflow.metrics", f"rows_{s}")
            for s in ("ok", "skipped", "failed")
        }
        self._stages = {
            name: beam.metrics.Metrics.distribution("matteflow.stages", name)
            for name in (*_TIMINGS, "total_ms")
        }

    def process(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self._rows[row["status"]].inc()
        if row["status"] == "failed":
            code = f"failed/{row['error_stage']}/{row['error_code']}"
            beam.metrics.Metrics.counter("matteflow.metrics", code).inc()
        for name, distribution in self._stages.items():
            if row.get(name) is not None:
                distribution.update(round(row[name]))
        listener = _listener
        if listener is not None:
            listener(row["status"])
        yield row


class WriteMetrics(beam.PTransform):
    """Metrics rows -> `{output}/metrics/part-*.parquet` with SCHEMA."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self._prefix = f"{output.rstrip('/')}/metrics/part"

    def expand(self, rows: beam.PCollection) -> beam.pvalue.PDone:
        # Unbounded (streaming) rows come in fixed windows: each window's files are named by
        # its UTC start and end, e.g. part-2026-11-27T09-00-00-2026-11-27T09-01-00-00000-of-00001.
        shards = None if rows.is_bounded else "-V-SSSSS-of-NNNNN"
        return (
            rows
            | "Count" >> beam.ParDo(_CountFn())
            | "Parquet"
            >> beam.io.WriteToParquet(
                self._prefix, SCHEMA, file_name_suffix=".parquet", shard_name_template=shards
            )
        )


def read_metrics(output: str) -> pa.Table:
    """All metrics rows under `{output}/metrics/` as one table (any Beam filesystem)."""
    pattern = f"{output.rstrip('/')}/metrics/*.parquet"
    tables = []
    for meta in FileSystems.match([pattern])[0].metadata_list:
        tables.append(pq.read_table(io.BytesIO(read_bytes(meta.path)), schema=SCHEMA))
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()
