"""Streaming (issue 9): objects processed as they arrive, with the batch job's transforms,
idempotent outputs and one set of metrics files per fixed window. A TestStream stands in for the
bucket's notifications, so the run is deterministic and ends by itself."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream as Arriving  # not collected
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from matteflow.pipelines.config import load_config
from matteflow.pipelines.remove_background import build, main
from matteflow.transforms.arrivals import ReadArrivals, StreamingSettings
from tests.images import encode, pattern

START = Timestamp.from_utc_datetime(datetime(2026, 11, 27, 6, 20, tzinfo=UTC))
WINDOW_NAME = re.compile(r"part-\[(\S+), (\S+)\)-\d{5}-of-\d{5}\.parquet")


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    (folder / "shoes").mkdir(parents=True)
    for name, (w, h) in {"a": (17, 11), "b": (40, 23), "shoes/c": (31, 64)}.items():
        (folder / f"{name}.png").write_bytes(encode(pattern(w, h), "PNG"))
    (folder / "notes.txt").write_text("not an image, and not matched by the glob")
    return folder


def _at(uri: Path, seconds: int) -> TimestampedValue:
    return TimestampedValue(str(uri), START + seconds)


def test_arrivals_are_processed_per_window_and_a_repeat_is_skipped(
    incoming: Path, tmp_path: Path
) -> None:
    out = incoming / "out"  # inside the watched folder: its files must not come back in
    glob = f"{incoming}/**.png"
    events = (
        Arriving()
        .advance_watermark_to(START)
        .add_elements([_at(incoming / "a.png", 1), _at(incoming / "b.png", 5)])
        .advance_watermark_to(START + 60)
        .add_elements(
            [
                _at(incoming / "shoes/c.png", 61),
                _at(incoming / "a.png", 70),  # delivered again: its outputs are current
                _at(incoming / "gone.png", 71),  # notified, then deleted before it was read
                _at(incoming / "notes.txt", 72),  # not matched: ignored
                _at(incoming / "out" / "masks" / "b.png", 73),  # the job's own output: ignored
            ]
        )
        .advance_watermark_to_infinity()
    )
    cfg = load_config(manifest=glob, output=str(out), model="tiny-isnet")
    arrivals = ReadArrivals(glob, StreamingSettings(window_s=60), uris=events, exclude=str(out))
    with beam.Pipeline(options=PipelineOptions(["--streaming"])) as p:
        build(p, cfg, arrivals)

    windows: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {}
    for path in sorted((out / "metrics").iterdir()):
        match = WINDOW_NAME.fullmatch(path.name)
        assert match, path.name
        rows = pq.read_table(path).to_pylist()
        windows.setdefault(match.groups(), []).extend(
            (r["id"], r["status"], r["error_code"]) for r in rows
        )
    assert {k: sorted(v) for k, v in windows.items()} == {
        ("2026-11-27T06-20-00", "2026-11-27T06-21-00"): [("a", "ok", None), ("b", "ok", None)],
        ("2026-11-27T06-21-00", "2026-11-27T06-22-00"): [
            ("a", "skipped", None),
            ("gone", "failed", "not_found"),
            ("shoes/c", "ok", None),
        ],
    }
    assert sorted(str(p.relative_to(out)) for p in (out / "masks").rglob("*.png")) == [
        "masks/a.png",
        "masks/b.png",
        "masks/shoes/c.png",
    ]
    assert not (out / "run.json").exists()  # a streaming job has no end to summarise


def test_streaming_needs_a_glob_to_watch(incoming: Path, tmp_path: Path) -> None:
    argv = ["--streaming", "--manifest", str(incoming / "a.png"), "--output", str(tmp_path)]
    assert main([*argv, "--model", "tiny-isnet"]) == 2
