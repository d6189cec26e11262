"""A finished run's output written by hand (metrics, cutouts, masks, review list, run.json), and
a real review server on 127.0.0.1, for the review tests."""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import uvicorn
from PIL import Image

from matteflow.pipelines.review_server import create_app
from matteflow.transforms.metrics import SCHEMA

__all__ = ["CATEGORIES", "UNCERTAINTY", "free_port", "make_run", "metrics_record", "running_server"]

# id -> uncertainty; rows at 0.5 or more are on the review list, most uncertain first.
UNCERTAINTY = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": 0.55, "f": 0.1}
CATEGORIES = {"a": "shoes", "b": "shoes", "c": "bags", "d": "bags", "e": "", "f": "shoes"}


def metrics_record(item_id: str, source_uri: str, **values: object) -> dict[str, object]:
    """An ok metrics row as Parquet holds it (every SCHEMA column; the ones given set)."""
    row: dict[str, object] = dict.fromkeys(SCHEMA.names)
    row.update(id=item_id, source_uri=source_uri, output_key=item_id, status="ok", warnings=[])
    row.update({"metadata": {}, "row_settings": {}, **values})
    return row


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def make_run(root: Path, model: str = "tiny-isnet") -> Path:
    """Write a finished run of six 40 x 30 images under root/out; returns root/out."""
    out, src = root / "out", root / "src"
    for folder in (out / "metrics", out / "cutouts", out / "masks", out / "review", src):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:30, 0:40]
    alpha = np.clip((12 - np.hypot(yy - 15, xx - 20)) * 40 + 128, 0, 255).astype(np.uint8)
    rows = []
    for item_id, doubt in UNCERTAINTY.items():
        rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        (src / f"{item_id}.png").write_bytes(_png(rgb))
        (out / "cutouts" / f"{item_id}.png").write_bytes(_png(np.dstack([rgb, alpha])))
        (out / "masks" / f"{item_id}.png").write_bytes(_png(alpha))
        row = metrics_record(
            item_id,
            str(src / f"{item_id}.png"),
            metadata={"category": CATEGORIES[item_id]} if CATEGORIES[item_id] else {},
            uncertainty=doubt,
            needs_review=doubt >= 0.5,
            model=model,
            cutout_uri=str(out / "cutouts" / f"{item_id}.png"),
            mask_uri=str(out / "masks" / f"{item_id}.png"),
        )
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / "metrics" / "part-0.parquet")
    with (out / "review" / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "uri", "output_key", "uncertainty", "cutout_uri", "mask_uri"])
        for r in sorted(rows, key=lambda r: -r["uncertainty"]):
            if r["needs_review"]:
                columns = (
                    "id",
                    "source_uri",
                    "output_key",
                    "uncertainty",
                    "cutout_uri",
                    "mask_uri",
                )
                writer.writerow([r[c] for c in columns])
    run = {"status": "finished", "output": str(out), "model": {"name": model}, "config": {}}
    (out / "run.json").write_text(json.dumps(run))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(
    output: Path, *, reviewer: str = "tester", all_rows: bool = False
) -> Iterator[str]:
    """The workbench over output, served by uvicorn on 127.0.0.1 in a thread; yields its URL."""
    app = create_app(str(output), all_rows=all_rows, reviewer=reviewer)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("review server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
