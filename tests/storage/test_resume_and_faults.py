"""Bucket runs at scale: resume through the GCS emulator, and runs through injected faults."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from tests.images import encode, pattern
from tests.storage.conftest import Bucket, GcsBucket, S3Bucket, beam_s3_flags
from tests.storage.servers import FaultProxy, Faults

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _image(n: int, version: int = 0) -> bytes:
    """A distinct small PNG per n (and per version of the same n)."""
    pixels = np.array(pattern(17, 11))
    pixels[0, 0] = (n % 256, n // 256, version)
    return encode(Image.fromarray(pixels), "PNG")


def _manifest(bucket: Bucket, count: int) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "uri"])
    for n in range(count):
        writer.writerow([f"img-{n:03d}", bucket.put(f"images/{n:03d}.png", _image(n))])
    return bucket.put("manifest.csv", buf.getvalue().encode())


def _summary(bucket: Bucket, prefix: str) -> dict:  # type: ignore[type-arg]
    return json.loads(bucket.get(f"{prefix}/run.json"))  # type: ignore[no-any-return]


def test_rerun_skips_everything_and_redoes_touched_sources(gcs_bucket: GcsBucket) -> None:
    manifest = _manifest(gcs_bucket, 200)
    argv = ["--manifest", manifest, "--output", gcs_bucket.uri("out"), "--model", "tiny-isnet"]
    assert main(argv) == 0
    first = _summary(gcs_bucket, "out")
    assert first["counts"] == {"ok": 200, "skipped": 0, "failed": 0}
    assert first["inferred_images"] == 200

    assert main(argv) == 0
    second = _summary(gcs_bucket, "out")
    assert second["counts"] == {"ok": 0, "skipped": 200, "failed": 0}
    assert second["inferred_images"] is None  # the images counter never moved: no inference
    assert second["reconciled"] is True

    touched = {7, 42, 99, 150, 199}
    for n in touched:
        gcs_bucket.put(f"images/{n:03d}.png", _image(n, version=1))
    assert main(argv) == 0
    third = _summary(gcs_bucket, "out")
    assert third["counts"] == {"ok": 5, "skipped": 195, "failed": 0}
    assert third["inferred_images"] == 5
    redone = {
        r["id"] for r in read_metrics(gcs_bucket.uri("out")).to_pylist() if r["status"] == "ok"
    }
    assert redone == {f"img-{n:03d}" for n in touched}


def test_a_gcs_run_through_faults_matches_a_clean_run(
    gcs_bucket: GcsBucket, gcs_proxy: FaultProxy
) -> None:
    manifest = _manifest(gcs_bucket, 20)

    def run(prefix: str) -> None:
        argv = ["--manifest", manifest, "--output", gcs_bucket.uri(prefix), "--model", "tiny-isnet"]
        assert main(argv) == 0
        assert _summary(gcs_bucket, prefix)["counts"] == {"ok": 20, "skipped": 0, "failed": 0}

    run("clean")
    gcs_proxy.reset()
    # Every 5th distinct request fails once: a 503 or a dropped connection.
    gcs_proxy.faults = Faults(every=5, statuses=(503, 0))
    run("faulty")
    assert gcs_proxy.injected > 20 and set(gcs_proxy.injected_by_status) == {503, 0}

    for kind in ("cutouts", "masks"):
        for n in range(20):
            key = f"{kind}/img-{n:03d}.png"
            assert gcs_bucket.get(f"faulty/{key}") == gcs_bucket.get(f"clean/{key}"), key
    assert not [key for key in gcs_bucket.keys() if ".tmp" in key]  # noqa: SIM118 (a method)


def test_a_fifth_of_s3_requests_failing_loses_nothing(
    s3_bucket: S3Bucket, s3_proxy: FaultProxy, tmp_path: Path
) -> None:
    """100 images; 20% of distinct requests (reads, uploads, renames, listings, the manifest's
    and the metrics') answered 503 or dropped: every row ok, nothing partial, and the outputs
    byte-identical to a clean local run of the same images."""
    count = 100
    rows = tmp_path / "manifest.csv"
    rows.write_text("id,uri\n" + "".join(f"img-{n:03d},{n:03d}.png\n" for n in range(count)))
    for n in range(count):
        (tmp_path / f"{n:03d}.png").write_bytes(_image(n))
    clean = tmp_path / "clean"
    assert main(["--manifest", str(rows), "--output", str(clean), "--model", "tiny-isnet"]) == 0

    manifest = _manifest(s3_bucket, count)
    s3_proxy.faults = Faults(rate=0.2, seed=8, statuses=(503, 0))
    argv = ["--manifest", manifest, "--output", s3_bucket.uri("out"), "--model", "tiny-isnet"]
    # Many threads, so that the clients' backoff after each fault overlaps.
    threads = ["--direct_num_workers=16", "--direct_running_mode=multi_threading"]
    assert main([*argv, *threads, *beam_s3_flags(s3_proxy.url)]) == 0
    summary = _summary(s3_bucket, "out")
    assert summary["counts"] == {"ok": count, "skipped": 0, "failed": 0}
    assert summary["reconciled"] is True
    assert set(s3_proxy.injected_by_status) == {503, 0}
    assert 0.15 < s3_proxy.injected / s3_proxy.forwarded < 0.25

    keys = s3_bucket.keys()
    assert not [key for key in keys if ".tmp" in key]
    for kind in ("cutouts", "masks"):
        expected = sorted(p.name for p in (clean / kind).iterdir())
        assert sorted(k.rsplit("/", 1)[1] for k in keys if k.startswith(f"out/{kind}/")) == expected
        for name in expected:
            key = f"{kind}/{name}"
            assert s3_bucket.get(f"out/{key}") == (clean / key).read_bytes(), key
