"""The main job under the portable runner and the multi-process DirectRunner (issue 9): the
same outputs as the in-process run, byte for byte, and one model load per worker process."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from tests.images import colour_subject, encode, pattern

# What may differ between runners: time, and how the runner's bundles fell into batches.
_RUN_DEPENDENT = {
    "batch_size",
    "fetch_ms",
    "decode_ms",
    "infer_ms",
    "refine_ms",
    "score_ms",
    "encode_ms",
    "write_ms",
    "total_ms",
}
MULTI_PROCESS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
RUNNERS = {
    "portable": ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
    "multi_process": ["--runner=DirectRunner", *MULTI_PROCESS],
    # No --runner: matteflow's own FnApiRunner (pipelines/progress.py), in two processes.
    "multi_process_default": MULTI_PROCESS,
}
# Worker processes that may each load the model once.
PROCESSES = {"in_process": 1, "portable": 1, "multi_process": 2, "multi_process_default": 2}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small images of odd sizes (some with a subject), a missing one and a text file."""
    root = tmp_path_factory.mktemp("portability")
    sizes = [(17, 11), (40, 23), (31, 64), (96, 80), (50, 50), (23, 41)]
    rows = []
    for i, (w, h) in enumerate(sizes):
        image = colour_subject(w, h) if i % 2 else pattern(w, h)
        (root / f"im{i}.png").write_bytes(encode(image, "PNG"))
        rows.append({"uri": f"im{i}.png", "shop": str(i)})
    (root / "notes.jpg").write_text("not an image")
    rows += [{"uri": "notes.jpg", "shop": "x"}, {"uri": "gone.png", "shop": "y"}]
    path = root / "manifest.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["uri", "shop"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _run(manifest: Path, out: Path, runner_args: list[str]) -> dict[str, Any]:
    argv = ["--manifest", str(manifest), "--output", str(out), "--model", "tiny-isnet"]
    assert main([*argv, *runner_args]) == 0
    return dict(json.loads((out / "run.json").read_text()))


def _files(out: Path) -> dict[str, bytes]:
    """Every output file but the run's own records (metrics are compared as rows); the output
    prefix, which state records and the review list name, reads "{output}"."""
    skip = {"metrics", "run.json"}
    return {
        str(p.relative_to(out)): p.read_bytes().replace(str(out).encode(), b"{output}")
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.relative_to(out).parts[0] not in skip
    }


def _rows(out: Path) -> list[dict[str, Any]]:
    rows = [
        {
            k: v.replace(str(out), "{output}") if isinstance(v, str) else v
            for k, v in row.items()
            if k not in _RUN_DEPENDENT
        }
        for row in read_metrics(str(out)).to_pylist()
    ]
    return sorted(rows, key=lambda r: r["id"])


@pytest.fixture(scope="module")
def in_process(manifest: Path) -> Path:
    """The reference: the default in-process run."""
    out = manifest.parent / "in_process"
    summary = _run(manifest, out, [])
    assert summary["model_loads"] == PROCESSES["in_process"]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_runner_writes_what_the_in_process_run_writes(
    runner: str, manifest: Path, in_process: Path
) -> None:
    out = manifest.parent / runner
    summary = _run(manifest, out, RUNNERS[runner])
    reference = json.loads((in_process / "run.json").read_text())

    expected = _files(in_process)
    assert sorted(expected) == sorted(_files(out))
    assert [name for name, data in _files(out).items() if data != expected[name]] == []
    assert _rows(out) == _rows(in_process)
    assert len(_rows(out)) == 8
    for key in ("counts", "manifest_rows", "reconciled", "inferred_images", "needs_review"):
        assert summary[key] == reference[key], key
    assert summary["counts"] == {"ok": 6, "skipped": 0, "failed": 2}
    # RunInference shares one model per process: at least one load, never more than processes.
    assert 1 <= summary["model_loads"] <= PROCESSES[runner]
