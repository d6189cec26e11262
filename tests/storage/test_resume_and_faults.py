"""Bucket runs at scale: resume through the GCS emulator, and a run through injected faults."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from tests.images import encode, pattern
from tests.storage.conftest import GcsBucket
from tests.storage.servers import FaultProxy, Faults

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _image(n: int, version: int = 0) -> bytes:
    """A distinct small PNG per n (and per version of the same n)."""
    pixels = np.array(pattern(17, 11))
    pixels[0, 0] = (n % 256, n // 256, version)
    return encode(Image.fromarray(pixels), "PNG")


def _manifest(bucket: GcsBucket, count: int) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "uri"])
    for n in range(count):
        writer.writerow([f"img-{n:03d}", bucket.put(f"images/{n:03d}.png", _image(n))])
    return bucket.put("manifest.csv", buf.getvalue().encode())


def _summary(bucket: GcsBucket, prefix: str) -> dict:  # type: ignore[type-arg]
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


@pytest.mark.parametrize("status", [503, 0], ids=["503", "dropped"])
def test_a_run_through_faults_matches_a_clean_run(
    gcs_bucket: GcsBucket, gcs_proxy: FaultProxy, status: int
) -> None:
    manifest = _manifest(gcs_bucket, 20)

    def run(prefix: str) -> None:
        argv = ["--manifest", manifest, "--output", gcs_bucket.uri(prefix), "--model", "tiny-isnet"]
        assert main(argv) == 0
        assert _summary(gcs_bucket, prefix)["counts"] == {"ok": 20, "skipped": 0, "failed": 0}

    run("clean")
    gcs_proxy.reset()
    gcs_proxy.faults = Faults(every=5, status=status)  # every 5th distinct request fails once
    run("faulty")
    assert gcs_proxy.injected > 20

    for kind in ("cutouts", "masks"):
        for n in range(20):
            key = f"{kind}/img-{n:03d}.png"
            assert gcs_bucket.get(f"faulty/{key}") == gcs_bucket.get(f"clean/{key}"), key
    assert not [key for key in gcs_bucket.keys() if ".tmp" in key]  # noqa: SIM118 (a method)
