"""The job through a fault-injecting proxy: does it lose anything, and what do faults cost?

A benchmark, not a test: it starts moto on 127.0.0.1 with a FaultProxy (tests/storage/servers.py)
in front, uploads N small images and a manifest, runs the job once without faults and once with
a share of distinct storage requests answered 503 or dropped, and prints: inputs tried, faults
injected, rows ok / failed by code, rows lost (must be 0), partial files (must be 0), outputs
that differ from the clean run (must be 0), and the wall time of each run.

    .venv/bin/python bench/faults.py --images 100 --rate 0.2 --out out/bench/faults.json \
        --direct_num_workers=8 --direct_running_mode=multi_threading    # any Beam flags
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from tests.storage.conftest import KEY_ID, REGION, SECRET, beam_s3_flags
from tests.storage.servers import FaultProxy, Faults, free_port, start_server

BUCKET = "faults"


def _images(count: int, size: tuple[int, int]) -> list[bytes]:
    """count distinct PNGs of smooth noise."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (max(1, size[1] // 8), max(1, size[0] // 8), 3), np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _run(manifest: str, prefix: str, model: str, endpoint: str, beam: list[str]) -> float:
    start = time.perf_counter()
    argv = ["--manifest", manifest, "--output", f"s3://{BUCKET}/{prefix}", "--model", model]
    code = main([*argv, *beam_s3_flags(endpoint), *beam])
    if code != 0:
        raise SystemExit(f"run {prefix} exited {code}")
    return time.perf_counter() - start


def _outcomes(client: Any, prefix: str, ids: list[str]) -> dict[str, Any]:
    """Rows by status and failure code, rows lost, and temporaries left under prefix."""
    rows = read_metrics(f"s3://{BUCKET}/{prefix}").to_pylist()
    by_code = collections.Counter(
        "ok" if r["status"] == "ok" else f"{r['error_stage']}/{r['error_code']}" for r in rows
    )
    seen = collections.Counter(r["id"] for r in rows)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    return {
        "rows": dict(by_code),
        "rows_lost": sum(1 for i in ids if seen[i] == 0),
        "rows_duplicated": sum(n - 1 for n in seen.values() if n > 1),
        "partial_files": sum(1 for k in keys if k.rsplit("/", 1)[-1].startswith(".")),
        "keys": keys,
    }


def main_bench() -> None:
    """Parse arguments, run the clean and the faulty job, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 48), metavar=("W", "H"))
    parser.add_argument("--rate", type=float, default=0.2, help="share of requests that fail")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--model", default="tiny-isnet")
    parser.add_argument("--out", type=Path, default=Path("out/bench/faults.json"))
    args, beam = parser.parse_known_args()  # the rest are Beam flags (--direct_num_workers=8)

    work = Path(tempfile.mkdtemp(prefix="matteflow-faults-"))
    port = free_port()
    s3 = start_server("moto_server", ["-H", "127.0.0.1", "-p", str(port)], port, work)
    os.environ.update(
        AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION=REGION
    )
    proxy = FaultProxy(s3.url)
    try:
        client = boto3.client("s3", endpoint_url=s3.url, region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        ids = [f"img-{n:04d}" for n in range(args.images)]
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["id", "uri"])
        for row_id, data in zip(ids, _images(args.images, tuple(args.size)), strict=True):
            client.put_object(Bucket=BUCKET, Key=f"images/{row_id}.png", Body=data)
            writer.writerow([row_id, f"s3://{BUCKET}/images/{row_id}.png"])
        client.put_object(Bucket=BUCKET, Key="manifest.csv", Body=buf.getvalue().encode())
        manifest = f"s3://{BUCKET}/manifest.csv"

        clean_s = _run(manifest, "clean", args.model, proxy.url, beam)
        requests_clean = proxy.forwarded
        proxy.reset()
        proxy.faults = Faults(rate=args.rate, seed=args.seed, statuses=(503, 0))
        faulty_s = _run(manifest, "faulty", args.model, proxy.url, beam)
        injected = proxy.injected_by_status
        requests = proxy.forwarded

        clean, faulty = _outcomes(client, "clean", ids), _outcomes(client, "faulty", ids)
        outputs = [k.removeprefix("clean/") for k in clean.pop("keys")]
        outputs = [k for k in outputs if k.startswith(("cutouts/", "masks/"))]
        faulty.pop("keys")

        def body(key: str) -> bytes:
            return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

        differ = sum(1 for k in outputs if body(f"faulty/{k}") != body(f"clean/{k}"))
    finally:
        proxy.stop()
        s3.stop()
    report = {
        "inputs_tried": args.images,
        "fault_rate": args.rate,
        "requests_clean_run": requests_clean,
        "requests_faulty_run": requests,
        "faults_injected": {"503": injected.get(503, 0), "dropped": injected.get(0, 0)},
        "clean": clean,
        "faulty": faulty,
        "outputs_compared": len(outputs),
        "outputs_differing": differ,
        "wall_s": {"clean": round(clean_s, 1), "faulty": round(faulty_s, 1)},
        "model": args.model,
        "size": list(args.size),
        "beam_flags": beam,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main_bench()
