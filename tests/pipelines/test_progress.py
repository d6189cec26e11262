"""Progress is counted as each row is made (not when the run ends), printed as plain lines when
stdout is not a terminal, and the end summary names failures by code."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline

from matteflow.pipelines.config import load_config
from matteflow.pipelines.progress import local_workers, progress_bar, set_progress_interval
from matteflow.pipelines.remove_background import build
from matteflow.pipelines.run_summary import summary_lines
from matteflow.transforms.metrics import MetricsRow, metrics_row, set_progress_listener
from matteflow.transforms.types import Failed, ImageTask
from tests.images import encode, pattern

ROWS = 6


def test_rows_are_reported_as_they_are_written(tmp_path: Path) -> None:
    with (tmp_path / "m.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri"])
        for i in range(ROWS):
            (tmp_path / f"{i}.png").write_bytes(encode(pattern(40 + i, 30), "PNG"))
            writer.writerow([f"{i}.png"])
        writer.writerow(["gone.png"])
    out = tmp_path / "out"
    cfg = load_config(
        manifest=str(tmp_path / "m.csv"),
        output=str(out),
        model="tiny-isnet",
        settings=["refine.decontaminate=false"],
    )
    seen: list[tuple[str, int]] = []  # (status, cutouts on disk) at each report

    def listener(row: MetricsRow) -> None:
        seen.append((row.status, len(list(out.glob("cutouts/*.png")))))

    set_progress_listener(listener)
    try:
        with BeamPipeline(runner="FnApiRunner") as p:
            build(p, cfg)
    finally:
        set_progress_listener(None)
    assert sorted(s for s, _ in seen) == ["failed"] + ["ok"] * ROWS
    ok = [n for s, n in seen if s == "ok"]
    # Reported while the rest was still being written, not all at the end of the run.
    assert ok[0] < ROWS
    assert ok == sorted(ok)


def test_plain_progress_lines_when_stdout_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_progress_interval(0.05)
    task = ImageTask("x", "x.png", "x")
    try:
        with progress_bar(4, enabled=True):
            metrics_row(Failed(task, "decode", "truncated", "x.png: cut short"))
            time.sleep(0.3)
    finally:
        set_progress_interval(10)
    lines = capsys.readouterr().out.splitlines()
    assert lines and lines[-1].startswith("matteflow: 1/4 rows (25%), ")
    assert lines[-1].endswith(", 1 failed")


def test_the_summary_names_failures_by_code_the_review_list_and_the_licence() -> None:
    codes = {f"decode/code{i}": 10 - i for i in range(7)}
    summary = {
        "counts": {"ok": 5, "skipped": 1, "failed": 49},
        "manifest_rows": 55,
        "wall_s": 3.0,
        "output": "gs://b/out/",
        "reconciled": True,
        "failures_by_code": codes,
        "needs_review": 2,
        "model": {"name": "tiny-isnet", "members": ["tiny-isnet"], "licence_class": "permissive"},
    }
    lines = summary_lines(summary)
    assert lines[0].startswith("matteflow: 5 ok, 1 skipped, 49 failed of 55 in 3.0s")
    assert lines[1] == (
        "  failures: decode/code0 10, decode/code1 9, decode/code2 8, decode/code3 7,"
        " decode/code4 6 (and 2 more codes); every row in gs://b/out/metrics/"
    )
    assert lines[2] == "  review: 2 rows need a look, listed in gs://b/out/review/manifest.csv"
    assert lines[3].startswith("  model: tiny-isnet, licence class: permissive")


@pytest.mark.parametrize(
    ("cores", "gib", "workers"),
    [(2, 24, 2), (8, 32, 8), (8, 16, 6), (16, 8, 2), (4, 4, 1), (1, 256, 1)],
    ids=["this-machine", "8-cores-32g", "8-cores-16g", "16-cores-8g", "small", "one-core"],
)
def test_local_workers_one_per_core_as_memory_allows(cores: int, gib: int, workers: int) -> None:
    # 2.5 GB for the first worker and 1 GB for each further one, in half the memory
    assert local_workers(cores, gib << 30) == workers
