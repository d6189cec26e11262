"""The `matteflow` command: `run`, `eval`, `serve`, `review`, `purge` and `models list | fetch |
verify | convert | quantize` (`python -m matteflow` is the same)."""

from __future__ import annotations

import logging
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
models_app = typer.Typer(no_args_is_help=True, help="Inspect, fetch and verify model weights.")
app.add_typer(models_app, name="models")
_out = Console()
_err = Console(stderr=True)

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


_RUN_HELP = """Remove backgrounds: a cutout, mask and metrics row per manifest row.

\b
Examples:
  matteflow run --manifest photos.csv --output out/
  matteflow run --manifest photo.jpg --output out/   # one image
  matteflow run --manifest photos/ --output out/     # a folder
  matteflow run --manifest photos/*.jpg --output out/
  matteflow run --manifest photos.csv --output out/ --dry-run
  matteflow run --manifest photos.csv --output out/ \\
      --set outputs.cutout_format=webp
  matteflow run --manifest 'gs://b/in/**.jpg' --output gs://b/out \\
      --streaming
  matteflow run --manifest gs://b/m.csv --output gs://b/out \\
      --profile configs/dataflow-gpu.toml

\b
Modes:
  batch (default)   every row once, then run.json and the summary
  --streaming       images as they land under the --manifest glob
                    (or --subscription) until cancelled; no run.json
  --dry-run         check manifest, profile, sources, model, output;
                    count rows; time the model here; process nothing
  --no_wait_until_finish
                    start a batch job on a remote runner, return

\b
Exit codes:
  0    finished (failed rows within --max-failure-rate)
  1    the pipeline failed
  2    usage, configuration or preflight error: nothing ran
  3    more rows failed than --max-failure-rate allows
  130  interrupted (Ctrl-C), 143 terminated (SIGTERM): rerun

Flags may be written --flag-name or --flag_name. Other flags are Beam
pipeline options (--direct_num_workers, --project, --region, ...),
checked against Beam's own options.
"""
_REQUIRED = "Required (here or in the profile)"


@app.command("run", context_settings=_PASS_THROUGH, help=_RUN_HELP)
def run_command(
    ctx: typer.Context,
    manifest: Annotated[
        str | None,
        typer.Option(
            help="CSV/JSONL/Parquet manifest, a glob, one image or a folder (local, gs://, s3://)",
            rich_help_panel=_REQUIRED,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(help="output prefix (local folder, gs://, s3://)", rich_help_panel=_REQUIRED),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="registry model name (matteflow models list)")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="TOML profile (default: local)")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="TABLE.KEY=VALUE",
            help="override one profile setting, e.g. outputs.cutout_format=webp (repeatable)",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="redo rows whose outputs are already current")
    ] = False,
    force_unlock: Annotated[
        bool,
        typer.Option(
            "--force-unlock",
            "--force_unlock",
            help="take over the output's lock from a run that is gone (README: One run per output)",
        ),
    ] = False,
    max_failure_rate: Annotated[
        float | None,
        typer.Option(
            "--max-failure-rate",
            "--max_failure_rate",
            help="exit 3 when more than this share of rows failed (default 1.0)",
        ),
    ] = None,
    runner: Annotated[
        str | None, typer.Option(help="Beam runner (default: in-process DirectRunner)")
    ] = None,
    streaming: Annotated[
        bool, typer.Option("--streaming", help="watch --manifest's glob; see Modes")
    ] = False,
    subscription: Annotated[
        str | None,
        typer.Option(help="with --streaming: a Pub/Sub subscription of object notifications"),
    ] = None,
    allow_source: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-source",
            "--allow_source",
            metavar="PATTERN",
            help="a source URI pattern rows may read, e.g. 'gs://photos/*' (repeatable)",
        ),
    ] = None,
    allow_private_sources: Annotated[
        bool,
        typer.Option(
            "--allow-private-sources",
            "--allow_private_sources",
            help="let http(s) sources resolve to private addresses",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "--dry_run", help="check and estimate; see Modes")
    ] = False,
    progress_every: Annotated[
        float,
        typer.Option(
            "--progress-every",
            "--progress_every",
            help="seconds between progress lines when output is not a terminal",
        ),
    ] = 10.0,
) -> None:
    from matteflow.pipelines.interrupts import exit_on_interrupt
    from matteflow.pipelines.launcher import UsageError, check_args, check_runner, image_manifest

    ours = [opt for param in ctx.command.params for opt in param.opts]
    try:
        checked = check_args(ctx.args, ours)
        if checked.extra_inputs and not manifest:
            raise UsageError(f"unexpected argument {checked.extra_inputs[0]!r}")
        argv = [*checked.beam_args]
        if manifest:
            # A dry run writes nothing: a listing of images goes to a temporary folder.
            listing = tempfile.mkdtemp(prefix="matteflow-dry-run-") if dry_run else output
            argv += ["--manifest", image_manifest([manifest, *checked.extra_inputs], listing or "")]
        argv += ["--runner", check_runner(runner)] if runner else []
    except UsageError as err:
        _err.print(f"matteflow run: error: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for flag, value in (("--output", output), ("--model", model), ("--profile", profile)):
        argv += [flag, value] if value else []
    argv += [x for s in settings or [] for x in ("--set", s)]
    argv += [x for s in allow_source or [] for x in ("--allow_source", s)]
    argv += ["--force"] if force else []
    argv += ["--force_unlock"] if force_unlock else []
    argv += [f"--max_failure_rate={max_failure_rate}"] if max_failure_rate is not None else []
    argv += ["--streaming"] if streaming else []
    argv += ["--subscription", subscription] if subscription else []
    argv += ["--allow_private_sources"] if allow_private_sources else []
    with exit_on_interrupt():
        if dry_run:
            from matteflow.pipelines.dryrun import main as dry_main

            raise typer.Exit(dry_main(argv))
        from matteflow.pipelines.progress import set_progress_interval
        from matteflow.pipelines.remove_background import main as run_main

        set_progress_interval(progress_every)
        raise typer.Exit(run_main(argv))


_EVAL_HELP = """Score the job (or another tool's outputs) on labelled images and write the HTML
report (`{output}/report/index.html`).

\b
Examples:
  matteflow eval --data ../shared/data/eval-dev --output out/eval
  matteflow eval --data labels.csv --output out/eval --refine guided --name guided
  matteflow eval --data labels.csv --output out/eval --predictions other-tool/ --name other
  matteflow eval --data labels.csv --output out/eval --models a,b --slice-by category

\b
Exit codes: as `matteflow run` (0 done, 1 pipeline failed, 2 usage or cannot start,
3 too many failed rows, 130/143 interrupted).

Flags may be written --flag-name or --flag_name; other flags are Beam pipeline options,
checked against Beam's own options.
"""


@app.command("eval", context_settings=_PASS_THROUGH, help=_EVAL_HELP)
def eval_command(
    ctx: typer.Context,
    data: Annotated[
        str,
        typer.Option(help="labelled manifest (CSV/JSONL) or folder", rich_help_panel="Required"),
    ],
    output: Annotated[
        str, typer.Option(help="evaluation output prefix", rich_help_panel="Required")
    ],
    name: Annotated[
        str | None, typer.Option(help="run name (default: model-refine, or the folder name)")
    ] = None,
    predictions: Annotated[
        str | None, typer.Option(help="score another tool's outputs in this folder")
    ] = None,
    model: Annotated[str | None, typer.Option(help="registry model name")] = None,
    models: Annotated[
        str | None, typer.Option(help="several models, comma-separated: one run each")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="TABLE.KEY=VALUE", help="as in run (repeatable)"),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="replace a run of the same name")
    ] = False,
    slice_by: Annotated[
        list[str] | None,
        typer.Option(
            "--slice-by", "--slice_by", help="manifest column to compare runs by (repeatable)"
        ),
    ] = None,
    refine: Annotated[str | None, typer.Option(help="none | guided | matting")] = None,
    profile: Annotated[str | None, typer.Option(help="TOML profile")] = None,
    sheet_rows: Annotated[
        int, typer.Option("--sheet-rows", "--sheet_rows", help="images in the contact sheet")
    ] = 40,
) -> None:
    from matteflow.pipelines.evaluate import main as eval_main
    from matteflow.pipelines.interrupts import exit_on_interrupt
    from matteflow.pipelines.launcher import UsageError, check_args

    ours = [opt for param in ctx.command.params for opt in param.opts]
    try:
        checked = check_args(ctx.args, ours)
        if checked.extra_inputs:
            raise UsageError(f"unexpected argument {checked.extra_inputs[0]!r}")
    except UsageError as err:
        _err.print(f"matteflow eval: error: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    argv = ["--data", data, "--output", output, f"--sheet_rows={sheet_rows}"]
    for flag, value in (
        ("--name", name),
        ("--predictions", predictions),
        ("--model", model),
        ("--models", models),
        ("--refine", refine),
        ("--profile", profile),
    ):
        argv += [flag, value] if value else []
    argv += [x for s in settings or [] for x in ("--set", s)]
    argv += [x for c in slice_by or [] for x in ("--slice-by", c)]
    argv += ["--replace"] if replace else []
    with exit_on_interrupt():
        raise typer.Exit(eval_main([*argv, *checked.beam_args]))


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="address to bind; off localhost needs a token")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    profile: Annotated[str | None, typer.Option(help="TOML profile (default: local)")] = None,
    model: Annotated[str | None, typer.Option(help="registry model (default: profile's)")] = None,
    max_request_mb: Annotated[
        float, typer.Option("--max-request-mb", "--max_request_mb", help="request size limit")
    ] = 64.0,
    require_token: Annotated[
        bool,
        typer.Option(
            "--require-token", "--require_token", help="require the token on localhost too"
        ),
    ] = False,
    allow_private_callbacks: Annotated[
        bool,
        typer.Option(
            "--allow-private-callbacks",
            "--allow_private_callbacks",
            help="let callback URLs resolve to loopback or private addresses",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API: POST /v1/cutouts, POST /v1/jobs, GET /v1/jobs/{id}, /healthz,
    /readyz; OpenAPI page at /docs.

    \b
    Environment:
      MATTEFLOW_API_TOKEN       clients send 'Authorization: Bearer <token>'; required
                                when --host is not localhost
      MATTEFLOW_WEBHOOK_SECRET  signs job callbacks (X-Matteflow-Signature)

    \b
    Exit codes: 0 stopped; 2 cannot start (no token off localhost, port in use)
    """
    import uvicorn

    from matteflow.pipelines.serve import ServerSettings, create_server
    from matteflow.pipelines.web import AuthError, api_token

    try:
        token = api_token(host, require_token)
    except AuthError as err:
        _err.print(f"matteflow serve: error: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    settings = ServerSettings(
        model=model,
        profile=profile,
        token=token,
        max_request_bytes=int(max_request_mb * (1 << 20)),
        allow_private_callbacks=allow_private_callbacks,
    )
    server = uvicorn.Server(uvicorn.Config(create_server(settings), host=host, port=port))
    server.run()
    raise typer.Exit(0 if server.started else 2)


@app.command("purge", context_settings=_PASS_THROUGH)
def purge_command(
    ctx: typer.Context,
    output: Annotated[str, typer.Argument(help="output prefix of a run (local, gs://, s3://)")],
    older_than: Annotated[
        str | None, typer.Option(help="only objects older than this: 30d, 12h, 90m")
    ] = None,
    keep: Annotated[
        list[str] | None, typer.Option(help="a kind to keep, e.g. metrics (repeatable)")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="delete (default: only print the plan)")
    ] = False,
    force_unlock: Annotated[bool, typer.Option("--force-unlock")] = False,
) -> None:
    """Delete what runs stored under OUTPUT (see README, Data handling); a dry run without --yes.

    Other flags are Beam storage options (--s3_endpoint_url, ...).
    """
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from matteflow.pipelines.purge import main as purge_main

    FileSystems.set_options(PipelineOptions(list(ctx.args)))
    code = purge_main(
        output, older_than=older_than, keep=keep or [], yes=yes, force_unlock=force_unlock
    )
    raise typer.Exit(code)


@app.command("review")
def review_command(
    output: Annotated[str, typer.Argument(help="a finished run's output folder or prefix")],
    host: str = "127.0.0.1",
    port: int = 8765,
    all_rows: Annotated[bool, typer.Option("--all", help="every row, not the review list")] = False,
    reviewer: Annotated[str | None, typer.Option(help="name recorded with decisions")] = None,
    export: Annotated[bool, typer.Option(help="write review/rework.csv, rejected.csv")] = False,
) -> None:
    """Review a run's uncertain cutouts in the browser, or --export the decisions."""
    from matteflow.pipelines.review import ReviewError
    from matteflow.pipelines.review import export as export_decisions

    try:
        if export:
            rework, rejected, n_rework, n_rejected = export_decisions(output)
            counts = f"wrote {rework} ({n_rework} rows) and {rejected} ({n_rejected} rows)"
            _out.print(counts, soft_wrap=True)
            return
        from matteflow.pipelines.review_server import serve

        serve(output, host, port, all_rows=all_rows, reviewer=reviewer)
    except ReviewError as err:
        raise _fail(err) from None


def _fail(err: Exception) -> typer.Exit:
    # soft_wrap: no line breaks inserted, so paths and commands in the message stay copyable.
    _err.print(f"[red]error:[/red] {err}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _size_on_disk(path: Path | None) -> str:
    return "-" if path is None else f"{path.stat().st_size / 1e6:.1f} MB"


@models_app.command("list")
def models_list() -> None:
    """Registered models: task, engine, input size, size on disk, licence class, whether a
    verified copy is here; then each one's licence facts and sources."""
    from matteflow.models.registry import specs
    from matteflow.models.weights import find_file

    # Nothing is cut with an ellipsis, however narrow the terminal (a pipe gets 80 columns):
    # the table holds the short facts; each model's licence facts follow it in full.
    table = Table(
        Column("model", no_wrap=True),
        Column("task", no_wrap=True),
        Column("engine", no_wrap=True),
        Column("input", no_wrap=True),
        Column("size", no_wrap=True),
        Column("licence", no_wrap=True),
        Column("here", no_wrap=True),
        box=None,
        pad_edge=False,
    )
    facts = []
    for spec in specs().values():
        path = None if spec.format == "random" else find_file(spec)[0]
        here = "seeded" if spec.format == "random" else ("yes" if path else "no")
        size = _size_on_disk(path) if path else "-"
        table.add_row(
            spec.name,
            spec.task,
            spec.engine,
            f"{spec.input_size}px",
            size,
            spec.licence_class,
            here,
        )
        links = f" See {', '.join(spec.links)}." if spec.links else ""
        sources = ", ".join(spec.sources) or "none"
        facts.append(
            f"{spec.name} ({spec.licence_class}): weights: {spec.weights_license}."
            f" Distribution: {spec.distribution}. Sources: {sources}.{links}"
        )
    _out.print(table)
    for line in facts:
        _out.print(line, highlight=False, soft_wrap=True)


@models_app.command("fetch")
def models_fetch(name: str) -> None:
    """Make sure NAME's weights are local and verified: fetch into the cache when missing."""
    from matteflow.models.registry import RegistryError, get_spec, prepare
    from matteflow.models.weights import WeightsError, fetch_file, find_file

    try:
        spec = get_spec(name)
        if spec.format == "random":
            _out.print(f"{name}: generated at load time, nothing to fetch")
            return
        path, notes = find_file(spec)
        if path is None:
            path = fetch_file(spec, notes)
        ready = prepare(spec, allow_fetch=False)
    except (RegistryError, WeightsError) as err:
        raise _fail(err) from None
    _out.print(f"{name}: verified {path} (sha256 {spec.sha256})\n{spec.engine} loads: {ready}")


@models_app.command("verify")
def models_verify(name: str) -> None:
    """Check that a local copy of NAME's weights matches its sha256 (never downloads)."""
    from matteflow.models.registry import RegistryError, get_spec, prepare
    from matteflow.models.weights import WeightsError, find_file

    try:
        spec = get_spec(name)
        if spec.format == "random":
            _out.print(f"{name}: generated at load time, nothing to verify")
            return
        source, _ = find_file(spec)
        ready = prepare(spec, allow_fetch=False)
    except (RegistryError, WeightsError) as err:
        raise _fail(err) from None
    checked = f"{source} matches sha256 {spec.sha256}" if source else "no source copy kept"
    _out.print(f"{name}: OK; {checked}; {spec.engine} loads {ready}, verified")


@models_app.command("add")
def models_add(
    name: str,
    onnx: Annotated[str, typer.Option(help="ONNX file path, or a gs://, s3://, https:// URI")],
    sha256: Annotated[str, typer.Option(help="sha256 of the ONNX file (64 hex digits)")],
    input_size: Annotated[int, typer.Option(help="square side the model is fed")],
    licence_class: Annotated[str, typer.Option(help="permissive|copyleft|non-commercial|unclear")],
    mean: Annotated[tuple[float, float, float], typer.Option(help="per-channel mean")] = (
        0.485,
        0.456,
        0.406,
    ),
    std: Annotated[tuple[float, float, float], typer.Option(help="per-channel std")] = (
        0.229,
        0.224,
        0.225,
    ),
    output: Annotated[str, typer.Option(help="graph output that is alpha")] = "alpha",
    task: Annotated[str, typer.Option(help="general | human")] = "general",
    output_norm: Annotated[str, typer.Option(help="none | minmax")] = "none",
    weights_license: Annotated[str, typer.Option(help="the weights' licence, as stated")] = "",
) -> None:
    """Register your own ONNX model (runs on onnxruntime) in the user's models.toml
    ($MATTEFLOW_CONFIG_DIR/models.toml, default ~/.config/matteflow)."""
    from matteflow.models.registry import RegistryError, add_user_model

    try:
        path = add_user_model(
            name,
            onnx,
            sha256=sha256,
            input_size=input_size,
            mean=mean,
            std=std,
            output=output,
            output_norm=output_norm,
            licence_class=licence_class,
            task=task,
            weights_license=weights_license,
        )
    except RegistryError as err:
        raise _fail(err) from None
    _out.print(f"{name}: added to {path}; run it with --model {name}")


@models_app.command("convert")
def models_convert(
    onnx: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="ONNX export")],
    output: Annotated[Path, typer.Argument(help="safetensors file to write")],
    arch: Annotated[str, typer.Option(help="native architecture (isnet, u2netp)")] = "isnet",
) -> None:
    """Convert a published ONNX export to native safetensors weights of ARCH."""
    from matteflow.models.architectures import ArchitectureError
    from matteflow.models.convert import ConversionError, convert_onnx

    try:
        convert_onnx(onnx, output, metadata={"source": onnx.name}, arch=arch)
    except (ConversionError, ArchitectureError) as err:
        raise _fail(err) from None
    _out.print(f"wrote {output}")


@models_app.command("quantize")
def models_quantize(
    name: str,
    calibration: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="folder of .jpg/.png photos to calibrate on (default: the bundled sample)",
        ),
    ] = None,
) -> None:
    """Build NAME's int8 file (CPU, `--set model.dtype=int8`) into the cache ahead of a run;
    a file already built from the same weights, recipe and images is verified and kept."""
    import time

    from matteflow.models.quantize import QuantiseError, int8_model
    from matteflow.models.registry import INT8, RegistryError, check
    from matteflow.models.weights import WeightsError

    start = time.perf_counter()
    try:
        path = int8_model(check(name, "cpu", INT8), calibration)
    except (RegistryError, WeightsError, QuantiseError) as err:
        raise _fail(err) from None
    _out.print(
        f"{name}: int8 file ready in {time.perf_counter() - start:.0f} s: {path}",
        highlight=False,
        soft_wrap=True,
    )


class _DropImportNoise(logging.Filter):
    """Beam warns about BigQuery's apitools at import time; matteflow never uses BigQuery."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def _version(show: bool) -> None:
    if show:
        _out.print(f"matteflow {version('matteflow')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Background removal at catalog scale: run, eval, models, serve."""


def _flex_template_flags(args: list[str]) -> list[str]:
    """--force=true|false (as a Flex Template passes booleans) as the plain --force flag."""
    force = {"--force=true": ["--force"], "--force=false": []}
    return [x for a in args for x in force.get(a.lower(), [a])]


def main() -> None:
    """Console-script entry point."""
    logging.getLogger().addFilter(_DropImportNoise())
    app(prog_name="matteflow", args=_flex_template_flags(sys.argv[1:]))
