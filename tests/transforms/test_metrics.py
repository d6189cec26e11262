"""Metrics rows against SCHEMA, ground-truth scoring, and Parquet written and read back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline  # not collected

from matteflow.transforms import metrics
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.metrics import SCHEMA, MetricsRow, WriteMetrics, metrics_row, read_metrics
from matteflow.transforms.types import (
    DecodedImage,
    Failed,
    ImageTask,
    Matte,
    Scores,
    Skipped,
    Timings,
    Written,
)
from tests.images import pattern

W, H = 17, 11


def _alpha(width: int = W, height: int = H) -> np.ndarray:
    """A soft diagonal ramp crossing 0.5, so iou, mae and edge_mae are all non-trivial."""
    y, x = np.mgrid[:height, :width]
    return np.clip((x - 0.3 * y) / width * 1.6 - 0.2, 0, 1).astype(np.float32)


def _task(gt: str | None = None, name: str = "x") -> ImageTask:
    return ImageTask(name, f"mem://{name}.png", f"k/{name}", gt, (("shop", "s"), ("sku", "7")))


def _matte(task: ImageTask, alpha: np.ndarray | None = None) -> Matte:
    alpha = _alpha() if alpha is None else alpha
    h, w = alpha.shape
    image = DecodedImage(
        task,
        np.array(pattern(w, h)),
        "JPEG",
        orientation=3,
        icc_description="Display P3",
        warnings=("decode/corrupt_icc",),
    )
    return Matte(
        image,
        alpha,
        "tiny-isnet",
        "a" * 64,
        "cpu",
        "float32",
        4,
        timings=Timings(fetch_ms=1.0, decode_ms=2.0),
        licence_class="permissive",
    )


def _written(matte: Matte, uris: dict[str, str], size: int = 10) -> Written:
    return Written(matte, uris, size, matte.image.width, matte.image.height)


def test_all_names_exist() -> None:
    assert all(hasattr(metrics, name) for name in metrics.__all__)


# --- rows ---------------------------------------------------------------------------------


# The Parquet schema as released: MetricsRow's fields must keep deriving exactly this.
RELEASED_SCHEMA = [
    ("id", "string"),
    ("source_uri", "string"),
    ("output_key", "string"),
    ("status", "string"),
    ("source_sha256", "string"),
    ("error_stage", "string"),
    ("error_code", "string"),
    ("error_message", "string"),
    ("width", "int32"),
    ("height", "int32"),
    ("source_format", "string"),
    ("exif_orientation", "int32"),
    ("bit_depth", "int32"),
    ("frames", "int32"),
    ("source_alpha", "bool"),
    ("icc_description", "string"),
    ("warnings", "list<item: string>"),
    ("model", "string"),
    ("model_sha256", "string"),
    ("licence_class", "string"),
    ("device", "string"),
    ("dtype", "string"),
    ("batch_size", "int32"),
    ("foreground_fraction", "double"),
    ("uncertainty", "double"),
    ("needs_review", "bool"),
    ("ground_truth_uri", "string"),
    *[
        (name, "double")
        for name in ("iou", "mae", "edge_mae", "sad", "mse", "gradient_error", "boundary_f")
    ],
    *[
        (name, "double")
        for name in (
            "fetch_ms",
            "decode_ms",
            "infer_ms",
            "refine_ms",
            "score_ms",
            "encode_ms",
            "write_ms",
            "total_ms",
        )
    ],
    *[(f"{kind}_uri", "string") for kind in ("cutout", "mask", "composite", "color", "psd", "xcf")],
    ("output_width", "int32"),
    ("output_height", "int32"),
    ("output_bytes", "int64"),
    ("row_settings", "map<string, string>"),
    ("metadata", "map<string, string>"),
]


def test_schema_derived_from_the_row_is_the_released_one() -> None:
    assert [(f.name, str(f.type)) for f in SCHEMA] == RELEASED_SCHEMA


def test_rows_are_frozen() -> None:
    row = metrics_row(Failed(_task(), "decode", "truncated", "cut off"))
    assert isinstance(row, MetricsRow)
    with pytest.raises(AttributeError):
        row.status = "ok"  # type: ignore[misc]


def test_ok_row_has_exactly_the_schema_columns() -> None:
    scored = Scores(0.5, 0.25, 0.125, 1.0, 0.0625, 2.0, 0.75)
    timings = Timings(fetch_ms=1.0, decode_ms=2.0, infer_ms=4.0, write_ms=8.0)
    matte = dataclasses.replace(
        _matte(_task("gt.png")), scores=scored, timings=timings, uncertainty=0.25
    )
    matte.needs_review = True
    outputs = {"cutout_uri": "o/cutouts/k/x.png", "mask_uri": "o/masks/k/x.png"}
    row = metrics_row(Written(matte, outputs, 1234, 8, 5)).record()
    assert list(row) == SCHEMA.names
    assert row == {
        **dict.fromkeys(SCHEMA.names),
        "id": "x",
        "source_uri": "mem://x.png",
        "output_key": "k/x",
        "status": "ok",
        "width": W,
        "height": H,
        "source_format": "JPEG",
        "exif_orientation": 3,
        "bit_depth": 8,
        "frames": 1,
        "source_alpha": False,
        "icc_description": "Display P3",
        "warnings": ["decode/corrupt_icc"],
        "model": "tiny-isnet",
        "model_sha256": "a" * 64,
        "licence_class": "permissive",
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 4,
        "foreground_fraction": pytest.approx(float(_alpha().mean()), rel=1e-6),
        "uncertainty": 0.25,
        "needs_review": True,
        "ground_truth_uri": "gt.png",
        "iou": 0.5,
        "mae": 0.25,
        "edge_mae": 0.125,
        "sad": 1.0,
        "mse": 0.0625,
        "gradient_error": 2.0,
        "boundary_f": 0.75,
        "fetch_ms": 1.0,
        "decode_ms": 2.0,
        "infer_ms": 4.0,
        "write_ms": 8.0,
        "total_ms": 15.0,
        "cutout_uri": "o/cutouts/k/x.png",
        "mask_uri": "o/masks/k/x.png",
        "output_width": 8,
        "output_height": 5,
        "output_bytes": 1234,
        "row_settings": {},
        "metadata": {"shop": "s", "sku": "7"},
    }


def test_failed_row_has_exactly_the_schema_columns() -> None:
    row = metrics_row(Failed(_task(), "decode", "truncated", "mem://x.png: cut off")).record()
    assert list(row) == SCHEMA.names
    assert row == {
        **dict.fromkeys(SCHEMA.names),
        "id": "x",
        "source_uri": "mem://x.png",
        "output_key": "k/x",
        "status": "failed",
        "error_stage": "decode",
        "error_code": "truncated",
        "error_message": "mem://x.png: cut off",
        "warnings": [],
        "row_settings": {},
        "metadata": {"shop": "s", "sku": "7"},
    }


def test_skipped_row_keeps_the_recorded_outputs() -> None:
    outputs = {"mask_uri": "o/masks/k/x.png"}
    row = metrics_row(Skipped(_task(), outputs, "ab" * 32)).record()
    assert row == {
        **dict.fromkeys(SCHEMA.names),
        "id": "x",
        "source_uri": "mem://x.png",
        "output_key": "k/x",
        "status": "skipped",
        "source_sha256": "ab" * 32,
        "mask_uri": "o/masks/k/x.png",
        "warnings": [],
        "row_settings": {},
        "metadata": {"shop": "s", "sku": "7"},
    }


def test_rows_convert_with_the_schema() -> None:
    matte = dataclasses.replace(_matte(_task()), timings=Timings(infer_ms=1.5))
    rows = [
        metrics_row(_written(matte, {"mask_uri": "m.png"})).record(),
        metrics_row(Failed(_task(name="y"), "fetch", "not_found", "gone")).record(),
    ]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    assert table.schema == SCHEMA and table.num_rows == 2
    back = table.to_pylist()
    assert [r["status"] for r in back] == ["ok", "failed"]
    assert back[0]["metadata"] == [("shop", "s"), ("sku", "7")]
    assert (back[0]["width"], back[0]["total_ms"], back[0]["decode_ms"]) == (W, 1.5, None)
    assert (back[1]["error_code"], back[1]["width"]) == ("not_found", None)


# --- the transforms -------------------------------------------------------------------------


def test_write_metrics_round_trips_through_parquet(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    rows = [metrics_row(_written(_matte(_task(name=n)), {"mask_uri": f"m/{n}.png"})) for n in "abc"]
    rows.append(metrics_row(Failed(_task(name="d"), "decode", "truncated", "cut off")))
    p = BeamPipeline(runner="FnApiRunner")
    layout = OutputLayout(out + "/")
    _ = p | "Rows" >> beam.Create(rows) | "WriteMetrics" >> WriteMetrics(layout)
    result = p.run()
    result.wait_until_finish()

    table = read_metrics(out)
    assert table.schema == SCHEMA and table.num_rows == 4
    got = sorted((r["id"], r["status"], r["error_code"], r["mask_uri"]) for r in table.to_pylist())
    assert got == [
        ("a", "ok", None, "m/a.png"),
        ("b", "ok", None, "m/b.png"),
        ("c", "ok", None, "m/c.png"),
        ("d", "failed", "truncated", None),
    ]
    assert all(path.suffix == ".parquet" for path in (tmp_path / "out" / "metrics").iterdir())

    counters = result.metrics().query(MetricsFilter().with_namespace("matteflow.metrics"))
    committed = {c.key.metric.name: c.committed for c in counters["counters"]}
    assert (committed.get("rows_ok"), committed.get("rows_failed")) == (3, 1)
    assert committed.get("failed/decode/truncated") == 1  # per code, for the runner's UI


def test_read_metrics_of_an_empty_output_is_an_empty_table(tmp_path: Path) -> None:
    table = read_metrics(str(tmp_path))
    assert table.schema == SCHEMA and table.num_rows == 0
