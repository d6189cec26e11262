"""The main job: manifest -> cutouts, masks and one Parquet metrics row per manifest row.

ReadManifest -> FetchAndDecode -> Segment -> Score -> WriteOutputs -> WriteMetrics; every
failure on the way becomes a failed metrics row. `run.json` is written last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineResult

from matteflow.models.registry import RegistryError, check, get_spec
from matteflow.models.weights import WeightsError, native_weights
from matteflow.pipelines.config import ConfigError, RunConfig, load_config
from matteflow.pipelines.options import MatteflowOptions
from matteflow.pipelines.progress import local_runner, progress_bar
from matteflow.transforms.decode import FetchAndDecode
from matteflow.transforms.inference import MatteModelHandler, Segment
from matteflow.transforms.manifest import ManifestError, ReadManifest, read_manifest, validate
from matteflow.transforms.metrics import Score, WriteMetrics, failed_row, read_metrics
from matteflow.transforms.write import WriteOutputs, write_atomic

__all__ = ["Outputs", "PreflightError", "build", "main", "preflight", "run"]


class PreflightError(RuntimeError):
    """The run cannot start: bad manifest, model, device or output prefix."""


class Outputs(NamedTuple):
    """The job's named PCollections (for tests)."""

    tasks: beam.PCollection
    mattes: beam.PCollection
    rows: beam.PCollection


def _handler(cfg: RunConfig) -> MatteModelHandler:
    """The RunInference model handler the config asks for."""
    m = cfg.model
    return MatteModelHandler(
        m.name,
        m.device,
        m.dtype,
        max_batch_pixels=cfg.batching.max_pixels,
        channels_last=m.channels_last,
        torch_threads=m.torch_threads,
        require_commercial_license=m.require_commercial_license,
    )


def build(p: beam.Pipeline, cfg: RunConfig) -> Outputs:
    """Add the job's steps to p."""
    tasks = p | "ReadManifest" >> ReadManifest(cfg.manifest)
    decoded = tasks | "FetchAndDecode" >> FetchAndDecode(cfg.decode.max_pixels)
    segmented = decoded.ok | "Segment" >> Segment(_handler(cfg))
    scored = segmented.ok | "Score" >> Score()
    written = scored.ok | "WriteOutputs" >> WriteOutputs(cfg.output, cfg.outputs)
    failures = (
        (decoded.failures, segmented.failures, scored.failures, written.failures)
        | "CollectFailures" >> beam.Flatten()
        | "FailureRows" >> beam.Map(failed_row)
    )
    rows = (written.ok, failures) | "AllRows" >> beam.Flatten()
    _ = rows | "WriteMetrics" >> WriteMetrics(cfg.output)
    return Outputs(tasks, segmented.ok, rows)


def preflight(cfg: RunConfig) -> int:
    """Check manifest, model, device and output prefix before the graph runs; returns row count.

    Raises PreflightError with the reason and the fix.
    """
    if not cfg.manifest or not cfg.output:
        raise PreflightError("both --manifest and --output are required")
    try:
        rows = validate(cfg.manifest, read_manifest(cfg.manifest))
        spec = check(
            cfg.model.name,
            cfg.model.device,
            cfg.model.dtype,
            require_commercial_license=cfg.model.require_commercial_license,
        )
        if spec.format == "onnx":
            native_weights(spec)  # verify, and fetch/convert once, in the launcher
    except (ManifestError, RegistryError, WeightsError) as err:
        raise PreflightError(str(err)) from None
    probe = f"{cfg.output.rstrip('/')}/.matteflow-probe-{uuid.uuid4().hex}"
    try:
        write_atomic(probe, b"")
        FileSystems.delete([probe])
    except Exception as err:
        raise PreflightError(f"output {cfg.output} is not writable: {err}") from None
    return rows


def _is_local(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner
    return runner is None


def _versions() -> dict[str, str]:
    packages = ("matteflow", "apache-beam", "torch", "numpy", "pillow", "pyarrow")
    return {"python": platform.python_version(), **{p: version(p) for p in packages}}


def _finish(cfg: RunConfig, rows: int, started: float, started_at: str) -> dict[str, Any]:
    table = read_metrics(cfg.output)
    statuses = table.column("status").to_pylist()
    counts = {s: statuses.count(s) for s in ("ok", "skipped", "failed")}
    summary = {
        "status": "finished",
        "manifest": cfg.manifest,
        "output": cfg.output,
        "manifest_rows": rows,
        "counts": counts,
        "reconciled": sum(counts.values()) == rows == len(statuses),
        "model": {
            "name": cfg.model.name,
            "sha256": get_spec(cfg.model.name).sha256 or None,
            "device": cfg.model.device,
            "dtype": cfg.model.dtype,
        },
        "config": dataclasses.asdict(cfg),
        "versions": _versions(),
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - started, 3),
    }
    write_atomic(f"{cfg.output.rstrip('/')}/run.json", json.dumps(summary, indent=2).encode())
    return summary


def run(argv: list[str] | None = None) -> PipelineResult:
    """Parse options, preflight, run the job to completion and write run.json.

    Raises ConfigError or PreflightError before anything runs.
    """
    options = PipelineOptions(argv)
    mf = options.view_as(MatteflowOptions)
    cfg = load_config(mf.profile, manifest=mf.manifest, output=mf.output, model=mf.model)
    started, started_at = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    rows = preflight(cfg)
    local = _is_local(options)
    runner = local_runner(options) if local else None
    in_process = local and options.view_as(DirectOptions).direct_running_mode == "in_memory"
    with progress_bar(rows, enabled=in_process):
        p = beam.Pipeline(runner=runner, options=options)
        build(p, cfg)
        result = p.run()
        result.wait_until_finish()
    summary = _finish(cfg, rows, started, started_at)
    counts = summary["counts"]
    print(
        f"matteflow: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed"
        f" of {rows} in {summary['wall_s']:.1f}s; outputs in {cfg.output}"
        + ("" if summary["reconciled"] else " (WARNING: metrics rows do not match the manifest)")
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry: run the job; returns the process exit code (2 = bad setup, 1 = run failed)."""
    if argv is not None and {"-h", "--help"} & set(argv):
        parser = argparse.ArgumentParser(
            prog="matteflow run",
            description=__doc__,
            epilog="Any other flag is a Beam pipeline option (--runner, --direct_num_workers, …).",
        )
        MatteflowOptions._add_argparse_args(parser)
        parser.print_help()
        return 0
    try:
        result = run(argv)
    except (ConfigError, PreflightError) as err:
        print(f"matteflow: cannot start: {err}", file=sys.stderr)
        return 2
    return 0 if result.state == beam.runners.runner.PipelineState.DONE else 1


if __name__ == "__main__":
    sys.exit(main())
