"""The whole job against real bucket servers: manifest, images and outputs in gs:// and s3://,
and a run that mixes a local manifest, gs:// images and an s3:// output."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from matteflow.transforms.storage import write_atomic
from tests.images import encode, pattern
from tests.storage.conftest import Bucket, GcsBucket, S3Bucket

pytestmark = pytest.mark.integration

SIZES = {"a": (17, 11), "b": (40, 23), "c": (31, 64)}
MISSING = "gone"


def _upload_images(bucket: Bucket) -> list[dict[str, str]]:
    """SIZES as PNGs under images/, plus a row for an object that is not there."""
    rows = [
        {"id": key, "uri": bucket.put(f"images/{key}.png", encode(pattern(w, h), "PNG"))}
        for key, (w, h) in SIZES.items()
    ]
    return [*rows, {"id": MISSING, "uri": bucket.uri(f"images/{MISSING}.png")}]


def _csv(rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _check_run(out: Bucket, prefix: str) -> None:
    """Every row accounted for under out/prefix: outputs at the right size, metrics, run.json,
    and no temporary objects left behind."""
    output = out.uri(prefix)
    rows = {r["id"]: r for r in read_metrics(output).to_pylist()}
    assert sorted(rows) == sorted([*SIZES, MISSING])
    gone = rows[MISSING]
    assert (gone["status"], gone["error_stage"], gone["error_code"]) == (
        "failed",
        "fetch",
        "not_found",
    )
    for key, (w, h) in SIZES.items():
        row = rows[key]
        assert row["status"] == "ok", row["error_message"]
        assert (row["width"], row["height"]) == (w, h)
        assert row["cutout_uri"] == f"{output}/cutouts/{key}.png"
        assert row["mask_uri"] == f"{output}/masks/{key}.png"
        cutout = Image.open(io.BytesIO(out.get(f"{prefix}/cutouts/{key}.png")))
        mask = Image.open(io.BytesIO(out.get(f"{prefix}/masks/{key}.png")))
        assert (cutout.mode, cutout.size) == ("RGBA", (w, h))
        assert (mask.mode, mask.size) == ("L", (w, h))
    summary = json.loads(out.get(f"{prefix}/run.json"))
    assert summary["counts"] == {"ok": len(SIZES), "skipped": 0, "failed": 1}
    assert summary["reconciled"] is True
    keys = out.keys()
    assert [k for k in keys if ".tmp" in k] == []
    assert {k for k in keys if k.startswith(f"{prefix}/masks/")} == {
        f"{prefix}/masks/{key}.png" for key in SIZES
    }


@pytest.mark.parametrize("bucket", ["gs", "s3"], indirect=True)
def test_job_reads_and_writes_a_bucket(bucket: Bucket, s3_flags: list[str]) -> None:
    manifest = bucket.put("m.csv", _csv(_upload_images(bucket)))
    argv = ["--manifest", manifest, "--output", bucket.uri("out"), "--model", "tiny-isnet"]
    assert main([*argv, *s3_flags]) == 0
    _check_run(bucket, "out")


def test_s3_options_reach_worker_processes(s3_bucket: S3Bucket, s3_flags: list[str]) -> None:
    # Two SDK worker processes: without the S3 flags they would try real AWS and fail.
    manifest = s3_bucket.put("m.csv", _csv(_upload_images(s3_bucket)))
    argv = ["--manifest", manifest, "--output", s3_bucket.uri("out"), "--model", "tiny-isnet"]
    workers = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    assert main([*argv, *s3_flags, *workers]) == 0
    _check_run(s3_bucket, "out")


def test_job_mixes_local_manifest_gs_images_and_s3_output(
    gcs_bucket: GcsBucket, s3_bucket: S3Bucket, s3_flags: list[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(_csv(_upload_images(gcs_bucket)))
    argv = ["--manifest", str(manifest), "--output", s3_bucket.uri("out"), "--model", "tiny-isnet"]
    assert main([*argv, *s3_flags]) == 0
    _check_run(s3_bucket, "out")


def test_relative_uris_resolve_against_a_bucket_manifest(
    gcs_bucket: GcsBucket, s3_flags: list[str]
) -> None:
    gcs_bucket.put("images/a.png", encode(pattern(), "PNG"))
    manifest = gcs_bucket.put("lists/m.csv", _csv([{"id": "a", "uri": "../images/a.png"}]))
    argv = ["--manifest", manifest, "--output", gcs_bucket.uri("out"), "--model", "tiny-isnet"]
    assert main([*argv, *s3_flags]) == 0
    [row] = read_metrics(gcs_bucket.uri("out")).to_pylist()
    assert (row["source_uri"], row["status"]) == (gcs_bucket.uri("images/a.png"), "ok")


@pytest.mark.parametrize("bucket", ["gs", "s3"], indirect=True)
def test_outputs_carry_content_types_through_the_rename(bucket: Bucket) -> None:
    # Bucket-hosted cutouts and the eval report must open in a browser, not download.
    expected = {"a/x.png": "image/png", "r/index.html": "text/html; charset=utf-8"}
    for key in expected:
        write_atomic(bucket.uri(key), b"data")
    assert {key: _content_type(bucket, key) for key in expected} == expected


def _content_type(bucket: Bucket, key: str) -> str:
    if isinstance(bucket, GcsBucket):
        blob = bucket.bucket.get_blob(key)
        assert blob is not None
        return str(blob.content_type)
    assert isinstance(bucket, S3Bucket)
    return str(bucket.client.head_object(Bucket=bucket.name, Key=key)["ContentType"])
