"""Storage errors through Beam FileSystems against real servers: what Beam 2.77 raises for a
missing object, a denied read, a malformed URI and an unknown scheme, how `read_bytes`
classifies each, and that reads survive transient faults injected by a proxy."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from apache_beam.io.aws.clients.s3.messages import S3ClientError
from apache_beam.io.filesystems import FileSystems
from google.api_core import exceptions as google_errors

from matteflow.pipelines.remove_background import main
from matteflow.transforms.failures import Forbidden, NotFound, PermanentError
from matteflow.transforms.metrics import read_metrics
from matteflow.transforms.storage import read_bytes
from tests.images import encode, pattern
from tests.storage.conftest import Bucket, GcsBucket, S3Bucket
from tests.storage.servers import FaultProxy, Faults

pytestmark = pytest.mark.integration

DENIED = "private/secret.png"
MALFORMED = ["gs://", "gs://bucket-only", "gs://b/", "s3://", "s3://no-key", "s3://b/"]
UNSUPPORTED = "ftp://x/y.jpg"


def _read(uri: str) -> bytes:
    with FileSystems.open(uri) as f:
        return bytes(f.read())


@pytest.fixture
def denied_gcs(gcs_bucket: GcsBucket, gcs_proxy: FaultProxy) -> str:
    """An object that exists but every request for it gets 403 (the emulator has no IAM)."""
    gcs_proxy.faults = Faults(deny=(("secret.png", 403),))
    return gcs_bucket.put(DENIED, b"x")


@pytest.fixture
def denied_s3(s3_bucket: S3Bucket) -> str:
    """An object that exists under a bucket policy denying s3:GetObject on it."""
    uri = s3_bucket.put(DENIED, b"x")
    statement = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{s3_bucket.name}/{DENIED}",
    }
    policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    s3_bucket.client.put_bucket_policy(Bucket=s3_bucket.name, Policy=policy)
    return uri


@pytest.fixture(params=["gs", "s3"])
def denied(request: pytest.FixtureRequest) -> str:
    """A URI whose object exists but may not be read, once per scheme."""
    found: str = request.getfixturevalue(f"denied_{'gcs' if request.param == 'gs' else 's3'}")
    return found


# What Beam raises (facts the classification in transforms/failures.py relies on).


def test_beam_missing_gcs_object_raises_google_not_found(gcs_bucket: GcsBucket) -> None:
    with pytest.raises(google_errors.NotFound) as info:
        _read(gcs_bucket.uri("gone.png"))
    assert info.value.code == 404


def test_beam_missing_s3_object_raises_file_not_found(s3_bucket: S3Bucket) -> None:
    with pytest.raises(FileNotFoundError) as info:
        _read(s3_bucket.uri("gone.png"))
    assert info.value.errno == 2 and s3_bucket.uri("gone.png") in str(info.value)
    context = info.value.__context__
    assert isinstance(context, S3ClientError) and context.code == 404


def test_beam_denied_gcs_object_raises_google_forbidden(denied_gcs: str) -> None:
    with pytest.raises(google_errors.Forbidden) as info:
        _read(denied_gcs)
    assert info.value.code == 403


def test_beam_denied_s3_object_raises_s3_client_error(denied_s3: str) -> None:
    with pytest.raises(S3ClientError) as info:
        _read(denied_s3)
    assert info.value.code == 403


@pytest.mark.parametrize("uri", MALFORMED)
def test_beam_malformed_uri_raises_value_error(uri: str) -> None:
    with pytest.raises(ValueError, match="path must be in the form"):
        _read(uri)


def test_beam_unsupported_scheme_raises_value_error() -> None:
    with pytest.raises(ValueError, match="Unable to get filesystem from specified path"):
        _read(UNSUPPORTED)


# What read_bytes makes of them (issue 4).


def test_missing_object_is_fetch_not_found(bucket: Bucket) -> None:
    uri = bucket.uri("gone.png")
    with pytest.raises(NotFound) as info:
        read_bytes(uri)
    assert (info.value.stage, info.value.code) == ("fetch", "not_found")
    assert uri in str(info.value)


def test_denied_object_is_fetch_forbidden(denied: str) -> None:
    with pytest.raises(Forbidden) as info:
        read_bytes(denied)
    assert (info.value.stage, info.value.code) == ("fetch", "forbidden")
    assert denied in str(info.value)


@pytest.mark.parametrize("uri", MALFORMED)
def test_malformed_uri_is_a_permanent_fetch_failure(uri: str) -> None:
    with pytest.raises(PermanentError) as info:
        read_bytes(uri)
    assert (info.value.stage, info.value.code) == ("fetch", "malformed_uri")
    assert uri in str(info.value)


def test_unsupported_scheme_is_a_permanent_fetch_failure() -> None:
    with pytest.raises(PermanentError) as info:
        read_bytes(UNSUPPORTED)
    assert (info.value.stage, info.value.code) == ("fetch", "unsupported_scheme")
    assert "'ftp'" in str(info.value)


# Transient faults: the clients under Beam retry them.


FAULTS = pytest.mark.parametrize("status", [503, 0], ids=["503", "dropped"])


def _read_through(proxy: FaultProxy, bucket: Bucket, status: int) -> None:
    """Every request fails once (503 or a dropped connection), then passes; the read succeeds."""
    data = os.urandom(50_000)
    uri = bucket.put("flaky.bin", data)
    proxy.faults = Faults(every=1, status=status)
    assert _read(uri) == data
    assert proxy.injected > 0


@FAULTS
def test_gcs_reads_survive_injected_faults(
    gcs_bucket: GcsBucket, gcs_proxy: FaultProxy, status: int
) -> None:
    _read_through(gcs_proxy, gcs_bucket, status)


@FAULTS
def test_s3_reads_survive_injected_faults(
    s3_bucket: S3Bucket, s3_proxy: FaultProxy, status: int
) -> None:
    _read_through(s3_proxy, s3_bucket, status)


def test_a_manifest_of_bad_rows_yields_one_classified_row_each(
    s3_bucket: S3Bucket, denied_s3: str, s3_flags: list[str], tmp_path: Path
) -> None:
    good = s3_bucket.put("images/good.png", encode(pattern(), "PNG"))
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "uri"])
        writer.writerows(
            [
                ("good", good),
                ("missing", s3_bucket.uri("images/none.png")),
                ("denied", denied_s3),
                ("malformed", "s3://bucket-only"),
                ("ftp", "ftp://host/x.png"),
                ("twice", good),
                ("twice", good),
            ]
        )
    out = s3_bucket.uri("out")
    argv = ["--manifest", str(manifest), "--output", out, "--model", "tiny-isnet", *s3_flags]
    assert main(argv) == 0
    rows = sorted(
        (r["id"], r["status"], r["error_stage"], r["error_code"])
        for r in read_metrics(out).to_pylist()
    )
    assert rows == [
        ("denied", "failed", "fetch", "forbidden"),
        ("ftp", "failed", "manifest", "source_not_allowed"),  # not even tried
        ("good", "ok", None, None),
        ("malformed", "failed", "fetch", "malformed_uri"),
        ("missing", "failed", "fetch", "not_found"),
        ("twice", "failed", "manifest", "duplicate_id"),
        ("twice", "failed", "manifest", "duplicate_id"),
    ]
