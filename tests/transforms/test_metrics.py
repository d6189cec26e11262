"""Metrics rows against SCHEMA, ground-truth scoring, and Parquet written and read back."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from matteflow.transforms import metrics
from matteflow.transforms.failures import ScoreError
from matteflow.transforms.metrics import (
    SCHEMA,
    Score,
    WriteMetrics,
    _ScoreFn,
    failed_row,
    load_ground_truth,
    ok_row,
    read_metrics,
)
from matteflow.transforms.quality import scores
from matteflow.transforms.types import DecodedImage, Failed, ImageTask, Matte
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
        timings_ms={"fetch_ms": 1.0, "decode_ms": 2.0},
        licence_class="permissive",
    )


def _gt_png(path: Path, alpha8: np.ndarray) -> str:
    Image.fromarray(alpha8).save(path, format="PNG")
    return str(path)


def _ground_truth(width: int = W, height: int = H) -> np.ndarray:
    """8-bit ground truth: a hard square plus one soft pixel."""
    gt = np.zeros((height, width), np.uint8)
    gt[2:8, 5:13] = 255
    gt[9, 2] = 100
    return gt


def test_all_names_exist() -> None:
    assert all(hasattr(metrics, name) for name in metrics.__all__)


# --- rows ---------------------------------------------------------------------------------


def test_ok_row_has_exactly_the_schema_columns() -> None:
    matte = _matte(_task("gt.png"))
    matte.scores = {"iou": 0.5, "mae": 0.25, "edge_mae": 0.125}
    matte.uncertainty, matte.needs_review = 0.25, True
    timings = {"fetch_ms": 1.0, "decode_ms": 2.0, "infer_ms": 4.0, "write_ms": 8.0}
    outputs = {"cutout_uri": "o/cutouts/k/x.png", "mask_uri": "o/masks/k/x.png"}
    row = ok_row(matte, outputs, 1234, timings, (8, 5))
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
    row = failed_row(Failed(_task(), "decode", "truncated", "mem://x.png: cut off"))
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


def test_rows_convert_with_the_schema() -> None:
    rows = [
        ok_row(_matte(_task()), {"mask_uri": "m.png"}, 10, {"infer_ms": 1.5}),
        failed_row(Failed(_task(name="y"), "fetch", "not_found", "gone")),
    ]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    assert table.schema == SCHEMA and table.num_rows == 2
    back = table.to_pylist()
    assert [r["status"] for r in back] == ["ok", "failed"]
    assert back[0]["metadata"] == [("shop", "s"), ("sku", "7")]
    assert (back[0]["width"], back[0]["total_ms"], back[0]["decode_ms"]) == (W, 1.5, None)
    assert (back[1]["error_code"], back[1]["width"]) == ("not_found", None)


# --- ground truth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("img", "expected"),
    [
        (Image.fromarray(np.array([[0, 51], [255, 102]], np.uint8)), [[0, 0.2], [1, 0.4]]),
        # RGBA: the alpha channel, not the colour.
        (
            Image.fromarray(
                np.dstack(
                    [np.full((2, 2, 3), 255, np.uint8), np.array([[0, 51], [255, 102]], np.uint8)]
                )
            ),
            [[0, 0.2], [1, 0.4]],
        ),
        (
            Image.fromarray(np.array([[0, 65535], [13107, 32768]], np.uint16)),
            [[0, 1], [0.2, 32768 / 65535]],
        ),
    ],
    ids=["grey", "rgba", "16-bit"],
)
def test_load_ground_truth(img: Image.Image, expected: list[list[float]]) -> None:
    buf = BytesIO()
    img.save(buf, format="PNG")
    gt = load_ground_truth(buf.getvalue(), "gt.png")
    assert gt.dtype == np.float32
    assert np.allclose(gt, expected, rtol=0, atol=1e-7)


def test_unreadable_ground_truth_is_a_score_error() -> None:
    with pytest.raises(ScoreError) as info:
        load_ground_truth(b"<html>", "gt.png")
    assert (info.value.stage, info.value.code) == ("score", "bad_ground_truth")


# --- the scoring DoFn ----------------------------------------------------------------------


def test_score_fn_computes_the_quality_scores(tmp_path: Path) -> None:
    gt8 = _ground_truth()
    matte = _matte(_task(_gt_png(tmp_path / "gt.png", gt8)))
    [scored] = list(_ScoreFn().process(matte))
    assert isinstance(scored, Matte)
    expected = scores(matte.alpha, gt8.astype(np.float32) / 255)
    assert scored.scores == pytest.approx(expected, rel=1e-12)
    assert 0 < expected["iou"] < 1 and expected["mae"] > 0 and expected["edge_mae"] > 0
    assert scored.timings_ms["score_ms"] >= 0 and scored.timings_ms["decode_ms"] == 2.0
    assert matte.scores == {}  # the input element is not mutated


def test_score_fn_passes_rows_without_ground_truth() -> None:
    matte = _matte(_task(None))
    assert list(_ScoreFn().process(matte)) == [matte]


@pytest.mark.parametrize(
    ("setup", "code"),
    [("wrong-size", "size_mismatch"), ("missing", "not_found"), ("garbage", "bad_ground_truth")],
)
def test_score_fn_failures(tmp_path: Path, setup: str, code: str) -> None:
    path = tmp_path / "gt.png"
    if setup == "wrong-size":
        _gt_png(path, _ground_truth(H, W))  # transposed: 11 x 17 instead of 17 x 11
    elif setup == "garbage":
        path.write_bytes(b"not a png")
    matte = _matte(_task(str(path)))
    [out] = list(_ScoreFn().process(matte))
    assert isinstance(out, beam.pvalue.TaggedOutput) and out.tag == "failures"
    assert isinstance(out.value, Failed)
    assert (out.value.task, out.value.stage, out.value.code) == (matte.image.task, "score", code)
    assert str(path) in out.value.message


# --- the transforms -------------------------------------------------------------------------


def test_score_in_a_pipeline(tmp_path: Path) -> None:
    gt8 = _ground_truth()
    gt = _gt_png(tmp_path / "gt.png", gt8)
    mattes = [_matte(_task(gt, "a")), _matte(_task(None, "b")), _matte(_task("/gone.png", "c"))]
    expected_iou = scores(_alpha(), gt8.astype(np.float32) / 255)["iou"]
    with BeamPipeline(runner="FnApiRunner") as p:
        outputs = p | "Mattes" >> beam.Create(mattes) | "Score" >> Score()
        ious = outputs.ok | "Iou" >> beam.Map(lambda m: (m.image.task.id, m.scores.get("iou")))
        failures = outputs.failures | "Codes" >> beam.Map(lambda f: (f.task.id, f.stage, f.code))
        assert_that(ious, equal_to([("a", expected_iou), ("b", None)]), label="CheckScores")
        assert_that(failures, equal_to([("c", "score", "not_found")]), label="CheckFailures")


def test_write_metrics_round_trips_through_parquet(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    rows = [ok_row(_matte(_task(name=n)), {"mask_uri": f"m/{n}.png"}, 5, {}) for n in "abc"]
    rows.append(failed_row(Failed(_task(name="d"), "decode", "truncated", "cut off")))
    p = BeamPipeline(runner="FnApiRunner")
    _ = p | "Rows" >> beam.Create(rows) | "WriteMetrics" >> WriteMetrics(out + "/")
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
