"""The output lease and customer-managed encryption in buckets (issue 17: item 6 and the
privacy controls). moto honours S3's If-None-Match and keeps SSE-KMS headers; the GCS emulator
ignores generation preconditions and encryption keys, so for gs:// the requests themselves
are checked through a proxy (../shared/ENVIRONMENT.md)."""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from PIL import Image

from matteflow.pipelines.lock import LOCK_NAME, OutputLocked, acquire, release
from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from matteflow.transforms.storage import create_exclusive
from tests.images import encode
from tests.storage.conftest import Bucket, GcsBucket, S3Bucket
from tests.storage.servers import FaultProxy

pytestmark = pytest.mark.integration

S3_KEY = "arn:aws:kms:us-east-1:123456789012:key/0b7e3b6c-0000-4000-8000-000000000001"
GCS_KEY = "projects/shop/locations/europe-west1/keyRings/catalog/cryptoKeys/cutouts"


@pytest.mark.parametrize("bucket", ["gs", "s3"], indirect=True)
def test_a_second_run_on_a_bucket_output_is_refused(bucket: Bucket) -> None:
    output = bucket.uri("out")
    holder = acquire(output, argv=["--output", output])
    lease = json.loads(bucket.get(f"out/{LOCK_NAME}"))
    assert (lease["run_id"], lease["pid"]) == (holder.run_id, holder.pid)
    with pytest.raises(OutputLocked, match=f"pid {holder.pid}"):
        acquire(output)
    release(output, holder)
    keys = bucket.keys()
    assert f"out/{LOCK_NAME}" not in keys


def test_s3_creates_the_lease_only_if_none_is_there(s3_bucket: S3Bucket) -> None:
    """The atomic step itself, without the read before it: If-None-Match: *."""
    uri = s3_bucket.uri(f"out/{LOCK_NAME}")
    assert create_exclusive(uri, b"first") is True
    assert create_exclusive(uri, b"second") is False
    assert s3_bucket.get(f"out/{LOCK_NAME}") == b"first"


def test_s3_racing_runs_get_one_lease(s3_bucket: S3Bucket) -> None:
    output, won, lost = s3_bucket.uri("race"), [], []
    start = threading.Barrier(8)

    def contender() -> None:
        start.wait()
        try:
            won.append(acquire(output))
        except OutputLocked:
            lost.append(1)

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert (len(won), len(lost)) == (1, 7)


def test_gcs_asks_for_the_lease_with_if_generation_match_0(
    gcs_bucket: GcsBucket, gcs_proxy: FaultProxy
) -> None:
    """The emulator ignores the precondition; the request must still carry it."""
    assert create_exclusive(gcs_bucket.uri(f"out/{LOCK_NAME}"), b"lease") is True
    uploads = [path for method, path, _ in gcs_proxy.requests if path.startswith("/upload/")]
    assert len(uploads) == 1
    assert parse_qs(urlsplit(uploads[0]).query)["ifGenerationMatch"] == ["0"]


def _manifest(bucket: Bucket) -> str:
    bucket.put("images/a.png", encode(Image.new("RGB", (12, 9), "red"), "PNG"))
    bucket.put("images/b.png", encode(Image.new("RGB", (10, 7), "blue"), "PNG"))
    return bucket.put("m.csv", b"uri\nimages/a.png\nimages/b.png\n")


def test_s3_every_object_written_carries_sse_kms(s3_bucket: S3Bucket, s3_flags: list[str]) -> None:
    argv = ["--manifest", _manifest(s3_bucket), "--output", s3_bucket.uri("out")]
    settings = ["--set", f"outputs.kms_key={S3_KEY}", "--set", "refine.review_threshold=0.0"]
    assert main([*argv, "--model", "tiny-isnet", *settings, *s3_flags]) == 0
    keys = s3_bucket.keys()
    written = [k for k in keys if k.startswith("out/")]
    kinds = {k.split("/")[1] for k in written}
    assert {"cutouts", "masks", "state", "metrics", "review", "run.json"} <= kinds
    for key in written:
        head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key)
        assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", S3_KEY)
    assert read_metrics(s3_bucket.uri("out")).num_rows == 2  # still readable after re-encryption


def test_gcs_every_object_written_is_requested_with_the_kms_key(
    gcs_bucket: GcsBucket, gcs_proxy: FaultProxy
) -> None:
    argv = ["--manifest", _manifest(gcs_bucket), "--output", gcs_bucket.uri("out")]
    settings = ["--set", f"outputs.kms_key={GCS_KEY}", "--set", "refine.review_threshold=0.0"]
    assert main([*argv, "--model", "tiny-isnet", *settings]) == 0
    keys = gcs_bucket.keys()
    written = [k for k in keys if k.startswith("out/")]
    kinds = {k.split("/")[1] for k in written}
    assert {"cutouts", "masks", "state", "metrics", "review", "run.json"} <= kinds
    keyed: set[str] = set()  # objects uploaded, or rewritten in place, with our key
    for method, target, body in gcs_proxy.requests:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        if method == "POST" and parts.path.startswith("/upload/"):  # name: in the JSON part
            name = re.search(rb'"name": ?"([^"]+)"', body)
            if name and query.get("kmsKeyName") == [GCS_KEY]:
                keyed.add(name.group(1).decode())
        elif "/rewriteTo/" in parts.path and query.get("destinationKmsKeyName") == [GCS_KEY]:
            keyed.add(unquote(parts.path.split("/o/")[-1]))
    assert set(written) <= keyed, sorted(set(written) - keyed)


def test_a_kms_key_with_a_local_output_is_refused(tmp_path: object) -> None:
    argv = ["--manifest", "m.csv", "--output", "local-out", "--model", "tiny-isnet"]
    assert main([*argv, "--set", f"outputs.kms_key={S3_KEY}"]) == 2
