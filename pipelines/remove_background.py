"""The main job: manifest -> cutouts, masks and one Parquet metrics row per manifest row.

ReadManifest -> FetchAndDecode -> Segment -> Refine -> Score -> WriteOutputs -> Rows ->
WriteMetrics; every failure on the way becomes a failed metrics row. The launcher parses,
checks (preflight) and hands over; summary.py writes `run.json`, last. With --streaming,
ReadArrivals (new objects as they land) replaces ReadManifest and metrics are written per window.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from matteflow.models.quantize import (
    QuantiseError,
    calibration_digest,
    calibration_files,
    int8_model,
)
from matteflow.models.registry import (
    INT8,
    RegistryError,
    check,
    get_spec,
    prepare,
    resolve_dtype,
)
from matteflow.models.threads import inference_threads
from matteflow.models.weights import WeightsError
from matteflow.pipelines.config import ConfigError, RunConfig, load_config
from matteflow.pipelines.interrupts import cancel_on_interrupt
from matteflow.pipelines.lock import OutputLocked, output_lock
from matteflow.pipelines.options import MatteflowOptions, RunnerKind
from matteflow.pipelines.progress import local_runner, local_worker_flags, progress_bar
from matteflow.pipelines.run_summary import summary_lines
from matteflow.pipelines.summary import clear_previous_run, write_summary
from matteflow.transforms.arrivals import ReadArrivals
from matteflow.transforms.decode import FetchAndDecode
from matteflow.transforms.inference import MatteModelHandler, Segment
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.manifest import (
    ManifestError,
    ManifestRows,
    ReadManifest,
    check_manifest,
    count_rows,
    is_glob,
)
from matteflow.transforms.metrics import MetricsRow, WriteMetrics, metrics_row
from matteflow.transforms.reader import Reader
from matteflow.transforms.refine import Refine
from matteflow.transforms.resume import Resume, settings_digest
from matteflow.transforms.routing import member_models
from matteflow.transforms.score import Score
from matteflow.transforms.settings import background_colour
from matteflow.transforms.storage import exists, write_atomic
from matteflow.transforms.types import ImageTask, Matte
from matteflow.transforms.write import WriteOutputs

__all__ = [
    "Outputs",
    "PreflightError",
    "TooManyFailures",
    "build",
    "compute_dtype",
    "exit_code",
    "int8_calibration",
    "launch",
    "main",
    "model_handler",
    "parse_config",
    "preflight",
    "process",
    "reader",
    "resume_for",
    "run",
]


class PreflightError(RuntimeError):
    """The run cannot start: bad manifest, model, device or output prefix."""


class TooManyFailures(RuntimeError):
    """The run finished, but more rows failed than --max_failure_rate allows."""


class Outputs(NamedTuple):
    """The job's named PCollections (for tests)."""

    tasks: beam.pvalue.PCollection[ImageTask]
    mattes: beam.pvalue.PCollection[Matte]
    rows: beam.pvalue.PCollection[MetricsRow]


def compute_dtype(cfg: RunConfig, options: PipelineOptions) -> str:
    """The dtype every forward pass computes in: "auto" resolved here when the model runs on
    this machine (so the resume fingerprint names what computed the outputs), left to the
    workers of a remote runner (their CPU or GPU decides)."""
    asked: str = cfg.model.dtype
    device = torch.device(cfg.model.device)
    if not RunnerKind.of(options).model_here or (
        device.type == "cuda" and not torch.cuda.is_available()
    ):
        return asked
    resolved: str = resolve_dtype(asked, device)
    return resolved


def int8_calibration(folder: str) -> str:
    """What an int8 run's outputs depend on besides its model: the digest of its calibration
    images ("" = the bundled sample) and recipe (`calibration_digest`); "" when the folder
    has none (preflight says so)."""
    try:
        digest: str = calibration_digest(calibration_files(Path(folder) if folder else None))
    except QuantiseError:
        return ""
    return digest


def model_handler(cfg: RunConfig) -> MatteModelHandler:
    """The RunInference model handler the config asks for (also the Python API's model)."""
    m = cfg.model
    return MatteModelHandler(
        m.name,
        m.device,
        m.dtype,  # "auto" stays auto: each model of the set resolves it (spec.auto_dtype)
        max_batch_pixels=cfg.batching.max_pixels,
        inference_size=m.inference_size,
        channels_last=m.channels_last,
        torch_threads=inference_threads(m.torch_threads),
        allow_licences=m.licences,
        flip_tta=m.flip_tta,
        routing=cfg.routing,
        calibration=m.calibration,
    )


def resume_for(cfg: RunConfig, options: PipelineOptions) -> Resume:
    """Resume with the digest of the settings that change outputs, the dtype as it computes
    (`compute_dtype`; model.torch_threads is marked in the config, issue 17) and, for int8,
    the digest of the calibration images and recipe in place of the folder's name."""
    dtype = compute_dtype(cfg, options)
    calibration = int8_calibration(cfg.model.calibration) if dtype == INT8 else ""
    model = dataclasses.replace(cfg.model, dtype=dtype, calibration=calibration)
    names = member_models(cfg.model.name, cfg.routing)
    specs = get_spec(names[0]) if len(names) == 1 else [get_spec(n) for n in names]
    digest = settings_digest(specs, dataclasses.replace(cfg, model=model))
    return Resume(cfg.output, digest, force=cfg.force, kms_key=cfg.outputs.kms_key)


def reader(cfg: RunConfig) -> Reader:
    """The run's one Reader: its source policy and size limits, for every source it reads."""
    return Reader(cfg.sources, cfg.decode.max_bytes, cfg.decode.max_pixels)


def process(
    manifest: ManifestRows,
    cfg: RunConfig,
    options: PipelineOptions,
    write: beam.PTransform[Any, Any] | None = None,
) -> Outputs:
    """The job's steps from tasks to metrics rows (one per task or manifest failure): decode,
    segment, refine, score and `write` (default: WriteOutputs under cfg.output, with resume);
    every failure on the way becomes a failed row. Also the Python API's RemoveBackground."""
    # Without an output prefix there is nothing to resume from: every row is processed.
    resume = resume_for(cfg, options) if cfg.output else Resume("", "", force=True)
    read = reader(cfg)
    decoded = manifest.ok | "FetchAndDecode" >> FetchAndDecode(cfg.decode, resume, read)
    segmented = decoded.ok | "Segment" >> Segment(model_handler(cfg), cfg.matte)
    refined = segmented.ok | "Refine" >> Refine(cfg.refine)
    scored = refined.ok | "Score" >> Score(read)
    write = write or WriteOutputs(cfg.output, cfg.outputs, cfg.framing, resume, read)
    written = scored.ok | "WriteOutputs" >> write
    # Rows are made where each outcome leaves its stage, before any Flatten: no pixels travel
    # past WriteOutputs, and a local runner (which runs what follows a Flatten as a stage of
    # its own, after the rest) reports each row's progress as it is made, not all at the end.
    failed = {
        "Manifest": manifest.failures,
        "Decode": decoded.failures,
        "Segment": segmented.failures,
        "Refine": refined.failures,
        "Score": scored.failures,
        "Write": written.failures,
    }
    rows = [
        written.ok | "OkRows" >> beam.Map(metrics_row),
        decoded.skipped | "SkippedRows" >> beam.Map(metrics_row),
        *(pc | f"FailureRows{step}" >> beam.Map(metrics_row) for step, pc in failed.items()),
    ]
    all_rows = rows | "AllRows" >> beam.Flatten()
    return Outputs(manifest.ok, segmented.ok, all_rows)


def build(p: beam.Pipeline, cfg: RunConfig, arrivals: ReadArrivals | None = None) -> Outputs:
    """Add the job's steps to p: tasks from the manifest or, streaming, from `arrivals` (new
    objects as they land; their metrics rows are written per window)."""
    if arrivals is None:
        manifest = p | "ReadManifest" >> ReadManifest(cfg.manifest, cfg.sources, exclude=cfg.output)
    else:
        manifest = p | "ReadArrivals" >> arrivals
    outputs = process(manifest, cfg, p.options)
    _ = outputs.rows | "WriteMetrics" >> WriteMetrics(OutputLayout(cfg.output))
    return outputs


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
        for name in member_models(cfg.model.name, cfg.routing):  # auto: each member model
            spec = check(
                name,
                cfg.model.device,
                cfg.model.dtype,
                allow_licences=cfg.model.licences,
                device_here=local,
            )
            size = cfg.model.inference_size
            if cfg.model.dtype == INT8 and size not in (0, spec.input_size):
                raise PreflightError(
                    f"model {name!r}, dtype int8: the quantised graph runs at its own"
                    f" {spec.input_size} px only; model.inference_size = {size} asked"
                )
            if local and cfg.model.dtype == INT8:  # built once here, not in each worker
                calibration = cfg.model.calibration
                int8_model(spec, Path(calibration) if calibration else None)
            elif local:
                prepare(spec)  # verify, and fetch/convert once, in the launcher
        background = cfg.outputs.background
        if cfg.outputs.composite and not background_colour(background) and not exists(background):
            raise PreflightError(f"outputs.background {background}: no such image")
    except (ManifestError, RegistryError, WeightsError, QuantiseError) as err:
        raise PreflightError(str(err)) from None
    kms_key = cfg.outputs.kms_key
    if kms_key and not cfg.output.startswith(("gs://", "s3://")):
        raise PreflightError(
            f"outputs.kms_key encrypts gs:// and s3:// objects; {cfg.output} is not in a bucket"
            " (encrypt a local disk with the operating system's means)"
        )
    probe = OutputLayout(cfg.output).probe()
    try:  # with kms_key, this also proves the key can be used
        write_atomic(probe, b"probe", kms_key=kms_key)  # not empty: S3 refuses 0-part uploads
        FileSystems.delete([probe])
    except Exception as err:
        raise PreflightError(f"output {cfg.output} is not writable: {err}") from None


def parse_config(argv: list[str]) -> tuple[RunConfig, MatteflowOptions]:
    """The run's config from a profile and the command line (ConfigError when it is bad)."""
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
    return cfg, mf


def run(argv: list[str] | None = None) -> PipelineResult:
    """Parse options (a profile's [beam] args, then argv) and `launch` the job.

    Raises ConfigError before anything runs, and what `launch` raises.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, mf = parse_config(argv)
    return launch(cfg, argv, mf.subscription, force_unlock=mf.force_unlock)


def launch(
    cfg: RunConfig,
    argv: list[str] | None = None,
    subscription: str | None = None,
    *,
    force_unlock: bool = False,
) -> PipelineResult:
    """Preflight, run the job to completion and write run.json; with --streaming or
    --no_wait_until_finish in `argv` (Beam options), start it instead (_start). A batch run
    holds the output's lock (pipelines/lock.py); `force_unlock` takes it over.

    Raises PreflightError before anything runs, OutputLocked when another run holds the
    output's lock, and TooManyFailures (after run.json) when the share of failed rows is over
    max_failure_rate.
    """
    command = list(argv or [])  # as given, for run.json's audit block
    argv = [*cfg.beam.args, *command]  # a profile's Beam options first: argv's win
    kind = RunnerKind.of(PipelineOptions(argv))
    in_process = kind is RunnerKind.IN_PROCESS
    options = PipelineOptions([*argv, *local_worker_flags(argv)] if in_process else argv)
    FileSystems.set_options(options)  # preflight reads buckets with the run's endpoint/credentials
    streaming = options.view_as(StandardOptions).streaming
    started, started_at = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    preflight(cfg, kind.model_here, streaming=streaming)
    if streaming:
        return _start(
            cfg,
            options,
            ReadArrivals(cfg.manifest, cfg.streaming, subscription, exclude=cfg.output),
        )
    layout = OutputLayout(cfg.output)
    if options.view_as(StandardOptions).no_wait_until_finish and not in_process:
        clear_previous_run(layout)
        return _start(cfg, options)  # no lock: this process does not see the job end
    with output_lock(
        cfg.output, force=force_unlock, argv=command, kms_key=cfg.outputs.kms_key
    ):  # one run per output: OutputLocked if another holds it
        clear_previous_run(layout)
        runner = local_runner(options) if in_process else None
        mode = options.view_as(DirectOptions).direct_running_mode
        show_progress = in_process and mode != "multi_processing"
        rows = count_rows(cfg.manifest, cfg.output) if show_progress else 0
        with progress_bar(rows, enabled=show_progress):
            p = beam.Pipeline(runner=runner, options=options)
            build(p, cfg)
            try:
                result = p.run()
                if not in_process:  # a job elsewhere: Ctrl-C cancels it (pipelines/interrupts.py)
                    cancel_on_interrupt(result)
                result.wait_until_finish()
            except BaseException:
                clear_previous_run(layout)  # what the failed sink left: metrics/ reads
                raise
        summary = write_summary(cfg, result, started, started_at, command)
    counts = summary["counts"]
    print("\n".join(summary_lines(summary)))
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
    cancel_on_interrupt(result)
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
    return exit_code(lambda: run(argv))


def exit_code(start: Callable[[], PipelineResult]) -> int:
    """Run `start` (run or launch) and say how it ended as the CLI's exit code, its errors
    printed (README, "Exit codes")."""
    try:
        result = start()
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
