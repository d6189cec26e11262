"""Review decisions on a run in a bucket (GCS emulator and moto): part files written through
write_atomic, read back, and exported as manifests beside them."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from matteflow.pipelines.review import (
    Decision,
    export,
    latest,
    load_items,
    read_decisions,
    write_decisions,
)
from matteflow.transforms.metrics import SCHEMA
from tests.pipelines.review_fixtures import metrics_record
from tests.storage.conftest import Bucket

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _finished_run(bucket: Bucket) -> str:
    """Metrics, review list and run.json of a two-row run under out/; returns its uri."""
    rows = []
    for item_id, doubt in (("x", 0.9), ("y", 0.7)):
        uri = bucket.uri(f"src/{item_id}.png")
        cutout = bucket.uri(f"out/{item_id}")
        rows.append(metrics_record(item_id, uri, uncertainty=doubt, cutout_uri=cutout))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), buf)
    bucket.put("out/metrics/part-0.parquet", buf.getvalue())
    review = "id,uri,output_key,uncertainty,cutout_uri,mask_uri\nx,,x,0.9,,\ny,,y,0.7,,\n"
    bucket.put("out/review/manifest.csv", review.encode())
    bucket.put("out/run.json", json.dumps({"model": {"name": "tiny-isnet"}}).encode())
    return bucket.uri("out")


def test_decisions_and_export_in_a_bucket(bucket: Bucket) -> None:
    out = _finished_run(bucket)
    assert [i.id for i in load_items(out)] == ["x", "y"]
    write_decisions(out, [Decision("x", "x", "retry", 2, "isnet-general-use", "ann", 3.0, T0)])
    later = T0 + timedelta(seconds=1)
    write_decisions(out, [Decision("y", "y", "reject", 1, None, "bo", 4.0, later)])
    listed = bucket.keys()  # the bucket's object names (a method, not a dict)
    parts = [k for k in listed if k.startswith("out/reviews/")]
    assert len(parts) == 2 and all(k.split("/")[-1].startswith("part-") for k in parts)
    standing = latest(read_decisions(out))
    assert {i: (d.decision, d.reviewer) for i, d in standing.items()} == {
        "x": ("retry", "ann"),
        "y": ("reject", "bo"),
    }
    export(out)
    rework = list(csv.DictReader(io.StringIO(bucket.get("out/review/rework.csv").decode())))
    assert rework == [
        {"id": "x", "uri": bucket.uri("src/x.png"), "output_key": "x", "model": "isnet-general-use"}
    ]
    rejected = list(csv.DictReader(io.StringIO(bucket.get("out/review/rejected.csv").decode())))
    assert [(r["id"], r["score"], r["reviewer"]) for r in rejected] == [("y", "1", "bo")]
