"""Images/s of the whole job on the same images from local files, the GCS emulator and moto.

A benchmark, not a test: it starts both servers on 127.0.0.1, uploads the same N images to
each, runs the job three times (local -> local, gs:// -> gs://, s3:// -> s3://) in one process,
and prints images/s per run and the ratios to the local run. Use `--model tiny-isnet` (the
default) to see the storage overhead, the real model to see what it costs a real run.

    .venv/bin/python bench/storage.py --images 60 --out out/bench/storage.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import boto3
import numpy as np
from google.cloud import storage
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*

from matteflow.pipelines.remove_background import main
from tests.storage.conftest import FAKE_ADC, KEY_ID, REGION, SECRET, beam_s3_flags
from tests.storage.servers import free_port, start_server


def _images(count: int, size: tuple[int, int]) -> list[bytes]:
    """count distinct JPEGs (smooth noise, so they compress like photos)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _manifest(uris: list[str]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "uri"])
    writer.writerows((f"img-{n:04d}", uri) for n, uri in enumerate(uris))
    return buf.getvalue().encode()


def _timed_run(manifest: str, output: str, model: str, extra: list[str]) -> float:
    start = time.perf_counter()
    code = main(["--manifest", manifest, "--output", output, "--model", model, *extra])
    if code != 0:
        raise SystemExit(f"run for {output} exited {code}")
    return time.perf_counter() - start


def main_bench() -> None:
    """Parse arguments, run the three jobs, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, nargs=2, default=(800, 600), metavar=("W", "H"))
    parser.add_argument("--model", default="tiny-isnet")
    parser.add_argument("--out", type=Path, default=Path("out/bench/storage.json"))
    args = parser.parse_args()

    data = _images(args.images, tuple(args.size))
    work = Path(tempfile.mkdtemp(prefix="matteflow-bench-"))
    adc = work / "adc.json"
    adc.write_text(json.dumps(FAKE_ADC))
    gcs_port, s3_port = free_port(), free_port()
    gcs = start_server(
        "gcp-storage-emulator",
        ["start", "--host", "127.0.0.1", "--port", str(gcs_port), "--in-memory"],
        gcs_port,
        work,
    )
    s3 = start_server("moto_server", ["-H", "127.0.0.1", "-p", str(s3_port)], s3_port, work)
    os.environ.update(
        STORAGE_EMULATOR_HOST=gcs.url,
        GOOGLE_APPLICATION_CREDENTIALS=str(adc),
        NO_GCE_CHECK="true",
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION=REGION,
    )
    try:
        (work / "images").mkdir()
        local = []
        for n, blob in enumerate(data):
            path = work / "images" / f"{n:04d}.jpg"
            path.write_bytes(blob)
            local.append(str(path))
        (work / "m.csv").write_bytes(_manifest(local))

        bucket = storage.Client(project="bench").create_bucket("bench")
        for n, blob in enumerate(data):
            bucket.blob(f"images/{n:04d}.jpg").upload_from_string(blob)
        uris = [f"gs://bench/images/{n:04d}.jpg" for n in range(len(data))]
        bucket.blob("m.csv").upload_from_string(_manifest(uris))

        client = boto3.client("s3", endpoint_url=s3.url, region_name=REGION)
        client.create_bucket(Bucket="bench")
        for n, blob in enumerate(data):
            client.put_object(Bucket="bench", Key=f"images/{n:04d}.jpg", Body=blob)
        uris = [f"s3://bench/images/{n:04d}.jpg" for n in range(len(data))]
        client.put_object(Bucket="bench", Key="m.csv", Body=_manifest(uris))

        seconds = {
            "local": _timed_run(str(work / "m.csv"), str(work / "out"), args.model, []),
            "gcs-emulator": _timed_run("gs://bench/m.csv", "gs://bench/out", args.model, []),
            "s3-moto": _timed_run(
                "s3://bench/m.csv", "s3://bench/out", args.model, beam_s3_flags(s3.url)
            ),
        }
    finally:
        gcs.stop()
        s3.stop()
    rates = {name: len(data) / s for name, s in seconds.items()}
    report = {
        "images": len(data),
        "size": list(args.size),
        "model": args.model,
        "seconds": seconds,
        "images_per_s": rates,
        "ratio_to_local": {name: rate / rates["local"] for name, rate in rates.items()},
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main_bench()
