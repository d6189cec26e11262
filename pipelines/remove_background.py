"""The main job: manifest -> cutouts, masks and one Parquet metrics row per manifest row.

ReadManifest -> FetchAndDecode -> Segment -> Score -> WriteOutputs -> WriteMetrics; every
failure on the way becomes a failed metrics row. `run.json` is written last. With --streaming,
ReadArrivals (new objects as they land) replaces ReadManifest and metrics are written per window.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineResult, PipelineState

from matteflow.models.registry import RegistryError, check, get_spec
from matteflow.models.weights import WeightsError, native_weights
from matteflow.pipelines.audit import audit_record, versions
from matteflow.pipelines.config import ConfigError, RunConfig, load_config
from matteflow.pipelines.lock import OutputLocked, output_lock
from matteflow.pipelines.options import MatteflowOptions
from matteflow.pipelines.progress import local_runner, local_worker_flags, progress_bar
from matteflow.transforms.arrivals import ReadArrivals
from matteflow.transforms.decode import FetchAndDecode
from matteflow.transforms.inference import MatteModelHandler, Segment
from matteflow.transforms.manifest import (
    ManifestError,
    ReadManifest,
    check_manifest,
    count_rows,
    is_glob,
)
from matteflow.transforms.metrics import Score, WriteMetrics, failed_row, read_metrics
from matteflow.transforms.refine import Refine
from matteflow.transforms.resume import Resume, settings_digest
from matteflow.transforms.settings import background_colour
from matteflow.transforms.storage import encrypt_in_place, exists, write_atomic
from matteflow.transforms.write import WriteOutputs

__all__ = [
    "Outputs",
    "PreflightError",
    "TooManyFailures",
    "build",
    "main",
    "preflight",
    "run",
    "worker_torch_threads",
]

_LOG = logging.getLogger(__name__)


class PreflightError(RuntimeError):
    """The run cannot start: bad manifest, model, device or output prefix."""


class TooManyFailures(RuntimeError):
    """The run finished, but more rows failed than --max_failure_rate allows."""


class Outputs(NamedTuple):
    """The job's named PCollections (for tests)."""

    tasks: beam.PCollection
    mattes: beam.PCollection
    rows: beam.PCollection


def worker_torch_threads(cfg: RunConfig, options: PipelineOptions) -> int:
    """Torch threads for each worker: the profile's, else, when the local runner starts several
    workers (--direct_num_workers, threads or processes), this machine's cores shared among
    them so that they do not oversubscribe it; 0 leaves torch's default (all cores)."""
    if cfg.model.torch_threads:
        return cfg.model.torch_threads
    workers = options.view_as(DirectOptions).direct_num_workers or os.cpu_count() or 1
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0


def _handler(cfg: RunConfig, options: PipelineOptions) -> MatteModelHandler:
    """The RunInference model handler the config asks for."""
    m = cfg.model
    return MatteModelHandler(
        m.name,
        m.device,
        m.dtype,
        max_batch_pixels=cfg.batching.max_pixels,
        inference_size=m.inference_size,
        channels_last=m.channels_last,
        torch_threads=worker_torch_threads(cfg, options),
        require_commercial_license=m.require_commercial_license,
        flip_tta=m.flip_tta,
    )


def _resume(cfg: RunConfig) -> Resume:
    settings = settings_digest(
        get_spec(cfg.model.name),
        cfg.model.dtype,
        cfg.outputs,
        cfg.framing,
        cfg.matte,
        cfg.refine,
        cfg.decode.intent,
        cfg.model.flip_tta,
        cfg.model.inference_size,
    )
    return Resume(cfg.output, settings, force=cfg.force, kms_key=cfg.outputs.kms_key)


def build(p: beam.Pipeline, cfg: RunConfig, arrivals: ReadArrivals | None = None) -> Outputs:
    """Add the job's steps to p: tasks from the manifest or, streaming, from `arrivals` (new
    objects as they land; their metrics rows are written per window)."""
    resume = _resume(cfg)
    if arrivals is None:
        manifest = p | "ReadManifest" >> ReadManifest(cfg.manifest, cfg.sources)
    else:
        manifest = p | "ReadArrivals" >> arrivals
    decoded = manifest.ok | "FetchAndDecode" >> FetchAndDecode(
        cfg.decode, resume, allow_private=cfg.sources.allow_private
    )
    segmented = decoded.ok | "Segment" >> Segment(_handler(cfg, p.options), cfg.matte)
    refined = segmented.ok | "Refine" >> Refine(cfg.refine)
    scored = refined.ok | "Score" >> Score()
    written = scored.ok | "WriteOutputs" >> WriteOutputs(
        cfg.output, cfg.outputs, cfg.framing, resume
    )
    failures = (
        (
            manifest.failures,
            decoded.failures,
            segmented.failures,
            refined.failures,
            scored.failures,
            written.failures,
        )
        | "CollectFailures" >> beam.Flatten()
        | "FailureRows" >> beam.Map(failed_row)
    )
    rows = (written.ok, decoded.skipped, failures) | "AllRows" >> beam.Flatten()
    _ = rows | "WriteMetrics" >> WriteMetrics(cfg.output)
    return Outputs(manifest.ok, segmented.ok, rows)


def preflight(cfg: RunConfig, local: bool = True, *, streaming: bool = False) -> None:
    """Check manifest header, model, device and output prefix before the graph runs.

    A run on this machine (`local`) also checks that the device exists here and readies the
    weights; on a remote runner the workers check both when they load the model. `streaming`:
    the manifest is a glob to watch, which may match nothing yet. Raises PreflightError with
    the reason and the fix.
    """
    if not cfg.manifest or not cfg.output:
        raise PreflightError("both --manifest and --output are required")
    if not 0.0 <= cfg.max_failure_rate <= 1.0:
        raise PreflightError(f"--max_failure_rate {cfg.max_failure_rate}: expected 0.0 .. 1.0")
    if streaming and not is_glob(cfg.manifest):
        raise PreflightError(
            f"--streaming watches a glob, not a manifest file: --manifest {cfg.manifest!r};"
            " e.g. --manifest 'gs://bucket/incoming/**.jpg'"
        )
    try:
        if not streaming:
            check_manifest(cfg.manifest)
        spec = check(
            cfg.model.name,
            cfg.model.device,
            cfg.model.dtype,
            require_commercial_license=cfg.model.require_commercial_license,
            device_here=local,
        )
        if spec.format == "onnx" and local:
            native_weights(spec)  # verify, and fetch/convert once, in the launcher
        background = cfg.outputs.background
        if cfg.outputs.composite and not background_colour(background) and not exists(background):
            raise PreflightError(f"outputs.background {background}: no such image")
    except (ManifestError, RegistryError, WeightsError) as err:
        raise PreflightError(str(err)) from None
    kms_key = cfg.outputs.kms_key
    if kms_key and not cfg.output.startswith(("gs://", "s3://")):
        raise PreflightError(
            f"outputs.kms_key encrypts gs:// and s3:// objects; {cfg.output} is not in a bucket"
            " (encrypt a local disk with the operating system's means)"
        )
    probe = f"{cfg.output.rstrip('/')}/.matteflow-probe-{uuid.uuid4().hex}"
    try:  # with kms_key, this also proves the key can be used
        write_atomic(probe, b"probe", kms_key=kms_key)  # not empty: S3 refuses 0-part uploads
        FileSystems.delete([probe])
    except Exception as err:
        raise PreflightError(f"output {cfg.output} is not writable: {err}") from None


def _clear_previous_run(output: str) -> None:
    """A run replaces the metrics, review list and run.json of the last one (state/ stays: it
    is resume). Everything under metrics/ goes, at any depth: a run that died while Beam wrote
    the Parquet files (a full disk, say) leaves metrics/beam-temp-*/ behind, which would stop
    `metrics/` from reading as one dataset."""
    prefix = output.rstrip("/")
    stale = [
        m.path
        for pattern in (f"{prefix}/metrics/**", f"{prefix}/review/*")
        for m in FileSystems.match([pattern])[0].metadata_list
    ]
    run_json = f"{prefix}/run.json"
    if FileSystems.exists(run_json):
        stale.append(run_json)
    if stale:
        FileSystems.delete(stale)
    metrics = f"{prefix}/metrics"
    for folder, _, _ in os.walk(metrics, topdown=False):  # local: the emptied folders
        if folder != metrics and not os.listdir(folder):
            os.rmdir(folder)


def _write_review(output: str, table: pa.Table, kms_key: str = "") -> int:
    """Write {output}/review/manifest.csv: the rows flagged needs_review, most uncertain first,
    as a manifest another run (a stronger model, a human tool) can take. Returns the count."""
    rows = [r for r in table.to_pylist() if r["needs_review"]]
    rows.sort(key=lambda r: (-r["uncertainty"], r["id"]))  # ties by id: same list on any runner
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "uri", "output_key", "uncertainty", "cutout_uri", "mask_uri"])
    for r in rows:
        uncertain = f"{r['uncertainty']:.4f}"
        outputs = [r["cutout_uri"] or "", r["mask_uri"] or ""]
        writer.writerow([r["id"], r["source_uri"], r["output_key"], uncertain, *outputs])
    uri = f"{output.rstrip('/')}/review/manifest.csv"
    write_atomic(uri, buf.getvalue().encode(), kms_key=kms_key)
    return len(rows)


def _counter(result: PipelineResult, namespace: str, name: str) -> int | None:
    """A Beam counter's committed value (a distribution's: its count), summed over steps; None
    when the runner reports no such metric."""
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    except Exception as err:  # a runner without metrics, or its service failing: run.json stays
        _LOG.warning("metrics unavailable from the runner (%s: %s)", type(err).__name__, err)
        return None
    values = [c.committed for c in query["counters"] if c.committed is not None]
    values += [d.committed.count for d in query["distributions"] if d.committed is not None]
    return sum(values) if values else None


def _is_local(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner
    return runner is None


_LOCAL_RUNNERS = {"directrunner", "fnapirunner", "bundlebaseddirectrunner", "switchingdirectrunner"}


def _is_remote(options: PipelineOptions) -> bool:
    """True when the model runs on workers elsewhere (Dataflow, Flink, Spark...), not here:
    a runner other than Beam's local ones, unless its SDK workers loop back to this process."""
    runner = (options.view_as(StandardOptions).runner or "DirectRunner").lower()
    if runner in _LOCAL_RUNNERS:
        return False
    return options.view_as(PortableOptions).environment_type != "LOOPBACK"


def _encrypt_metrics(cfg: RunConfig) -> None:
    """With outputs.kms_key, re-encrypt the Parquet files Beam's sink wrote (it cannot set a
    key) under the customer's key, before run.json says the run is complete."""
    if cfg.outputs.kms_key:
        pattern = f"{cfg.output.rstrip('/')}/metrics/*.parquet"
        for meta in FileSystems.match([pattern])[0].metadata_list:
            encrypt_in_place(meta.path, cfg.outputs.kms_key)


def _finish(
    cfg: RunConfig, result: PipelineResult, started: float, started_at: str, argv: list[str]
) -> dict[str, Any]:
    """Count the metrics rows, reconcile them with the manifest, write run.json (last)."""
    _encrypt_metrics(cfg)
    table = read_metrics(cfg.output)
    statuses = table.column("status").to_pylist()
    review = _write_review(cfg.output, table, cfg.outputs.kms_key)
    counts = {s: statuses.count(s) for s in ("ok", "skipped", "failed")}
    manifest_rows = _counter(result, "matteflow.manifest", "rows")
    if manifest_rows is None:  # a runner without metrics: count the manifest itself
        manifest_rows = count_rows(cfg.manifest)
    failure_rate = counts["failed"] / len(statuses) if statuses else 0.0
    summary = {
        "status": "finished",
        "manifest": cfg.manifest,
        "output": cfg.output,
        "manifest_rows": manifest_rows,
        "counts": counts,
        "reconciled": len(statuses) == manifest_rows,
        "failure_rate": round(failure_rate, 6),
        "max_failure_rate": cfg.max_failure_rate,
        "inferred_images": _counter(result, "matteflow.segment", "images"),
        # RunInference's own record of each model load: one per worker process that segmented.
        "model_loads": _counter(result, "matteflow.segment", "load_model_latency_milli_secs"),
        "needs_review": review,
        "model": {
            "name": cfg.model.name,
            "sha256": get_spec(cfg.model.name).sha256 or None,
            "device": cfg.model.device,
            "dtype": cfg.model.dtype,
        },
        "config": dataclasses.asdict(cfg),
        "versions": versions(),
        "audit": audit_record(argv, get_spec(cfg.model.name).sha256 or None),
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - started, 3),
    }
    run_json = f"{cfg.output.rstrip('/')}/run.json"
    write_atomic(run_json, json.dumps(summary, indent=2).encode(), kms_key=cfg.outputs.kms_key)
    return summary


def run(argv: list[str] | None = None) -> PipelineResult:
    """Parse options (a profile's [beam] args, then argv), preflight, run the job to completion
    and write run.json; with --streaming or --no_wait_until_finish, start it instead (_start).

    Raises ConfigError or PreflightError before anything runs, OutputLocked when another run
    holds the output's lease (pipelines/lock.py), and TooManyFailures (after run.json) when
    the share of failed rows is over --max_failure_rate.
    """
    argv = command = list(sys.argv[1:] if argv is None else argv)
    mf = PipelineOptions(argv).view_as(MatteflowOptions)
    cfg = load_config(
        mf.profile,
        manifest=mf.manifest,
        output=mf.output,
        model=mf.model,
        force=mf.force,
        max_failure_rate=mf.max_failure_rate,
        settings=mf.settings,
        allow_sources=mf.allow_sources,
        allow_private_sources=mf.allow_private_sources,
    )
    argv = [*cfg.beam.args, *argv]  # a profile's Beam options first: the command line's win
    local = _is_local(PipelineOptions(argv))
    options = PipelineOptions([*argv, *local_worker_flags(argv)] if local else argv)
    FileSystems.set_options(options)  # preflight reads buckets with the run's endpoint/credentials
    streaming = options.view_as(StandardOptions).streaming
    started, started_at = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    preflight(cfg, not _is_remote(options), streaming=streaming)
    if streaming:
        return _start(cfg, options, ReadArrivals(cfg.manifest, cfg.streaming, mf.subscription))
    if options.view_as(StandardOptions).no_wait_until_finish and not local:
        _clear_previous_run(cfg.output)
        return _start(cfg, options)  # no lease: this process does not see the job end
    with output_lock(
        cfg.output, force=mf.force_unlock, argv=command, kms_key=cfg.outputs.kms_key
    ):  # one run per output: OutputLocked if another holds it
        _clear_previous_run(cfg.output)
        runner = local_runner(options) if local else None
        mode = options.view_as(DirectOptions).direct_running_mode
        in_process = local and mode != "multi_processing"
        with progress_bar(count_rows(cfg.manifest) if in_process else 0, enabled=in_process):
            p = beam.Pipeline(runner=runner, options=options)
            build(p, cfg)
            try:
                result = p.run()
                result.wait_until_finish()
            except BaseException:
                _clear_previous_run(cfg.output)  # what the failed sink left: metrics/ reads
                raise
        summary = _finish(cfg, result, started, started_at, command)
    counts = summary["counts"]
    print(
        f"matteflow: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed"
        f" of {summary['manifest_rows']} in {summary['wall_s']:.1f}s; outputs in {cfg.output}"
        + ("" if summary["reconciled"] else " (WARNING: metrics rows do not match the manifest)")
    )
    if summary["failure_rate"] > cfg.max_failure_rate:
        raise TooManyFailures(
            f"{counts['failed']} of {sum(counts.values())} rows failed"
            f" ({summary['failure_rate']:.1%}), over --max_failure_rate {cfg.max_failure_rate}"
        )
    return result


def _start(
    cfg: RunConfig, options: PipelineOptions, arrivals: ReadArrivals | None = None
) -> PipelineResult:
    """Start a job that writes no run.json: a streaming job (`arrivals`: objects processed as
    they land until the job is drained or cancelled; metrics per window), waited for unless
    --no_wait_until_finish, or a batch job left to its runner (--no_wait_until_finish)."""
    p = beam.Pipeline(options=options)  # runner from the options: locally, Beam's DirectRunner
    build(p, cfg, arrivals)
    result = p.run()
    kind = "streaming" if arrivals is not None else "batch"
    print(f"matteflow: started {kind} job {cfg.manifest} -> {cfg.output} (no run.json)")
    if not options.view_as(StandardOptions).no_wait_until_finish:
        result.wait_until_finish()
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry: run the job; returns the exit code (see README, "Exit codes")."""
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
    except (ConfigError, PreflightError, OutputLocked) as err:
        print(f"matteflow: cannot start: {err}", file=sys.stderr)
        return 2
    except TooManyFailures as err:
        print(f"matteflow: {err}", file=sys.stderr)
        return 3
    # DRAINED: a streaming job's normal end. Not terminal: a job left to its runner.
    state = result.state
    ended = state in (PipelineState.DONE, PipelineState.DRAINED)
    return 0 if ended or not PipelineState.is_terminal(state) else 1


if __name__ == "__main__":
    sys.exit(main())
