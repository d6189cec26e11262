"""The `matteflow` command: `run`, `eval`, `review` and `models list | fetch | verify | convert`."""

from __future__ import annotations

import logging
import sys
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


@app.command("run", context_settings=_PASS_THROUGH, add_help_option=False)
def run_command(ctx: typer.Context) -> None:
    """Remove backgrounds: --manifest URI --output URI [--model NAME] [--profile FILE] [...].

    Every other flag is passed to Beam as a pipeline option.
    """
    from matteflow.pipelines.remove_background import main as run_main

    raise typer.Exit(run_main(list(ctx.args)))


@app.command("eval", context_settings=_PASS_THROUGH, add_help_option=False)
def eval_command(ctx: typer.Context) -> None:
    """Score the job (or another tool's outputs) on labelled images and write the HTML report:
    --data MANIFEST_OR_DIR --output URI [--name N] [--refine R] [--predictions DIR] [...].
    """
    from matteflow.pipelines.evaluate import main as eval_main

    raise typer.Exit(eval_main(list(ctx.args)))


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


@models_app.command("list")
def models_list() -> None:
    """Registered models with their input size, licence facts and local availability."""
    from matteflow.models.registry import specs
    from matteflow.models.weights import find_file

    # Nothing is cut with an ellipsis, however narrow the terminal (a pipe gets 80 columns):
    # names stay whole, and the licence facts wrap, long words (package names) included.
    table = Table(
        Column("model", no_wrap=True),
        Column("input", no_wrap=True),
        "commercial use",
        Column("weights licence", overflow="fold"),
        Column("distribution", overflow="fold"),
        "local",
    )
    for spec in specs().values():
        local = "generated" if spec.format == "random" else ("yes" if find_file(spec)[0] else "no")
        table.add_row(
            spec.name,
            f"{spec.input_size}px",
            spec.commercial_use,
            spec.weights_license,
            spec.distribution,
            local,
        )
    _out.print(table)


@models_app.command("fetch")
def models_fetch(name: str) -> None:
    """Make sure NAME's weights are local and verified: fetch into the cache when missing."""
    from matteflow.models.registry import RegistryError, get_spec
    from matteflow.models.weights import WeightsError, fetch_file, find_file, native_weights

    try:
        spec = get_spec(name)
        if spec.format == "random":
            _out.print(f"{name}: generated at load time, nothing to fetch")
            return
        path, notes = find_file(spec)
        if path is None:
            path = fetch_file(spec, notes)
        native = native_weights(spec, allow_fetch=False)
    except (RegistryError, WeightsError) as err:
        raise _fail(err) from None
    _out.print(f"{name}: verified {path} (sha256 {spec.sha256})\nnative weights: {native}")


@models_app.command("verify")
def models_verify(name: str) -> None:
    """Check that a local copy of NAME's weights matches its sha256 (never downloads)."""
    from matteflow.models.registry import RegistryError, get_spec
    from matteflow.models.weights import WeightsError, find_file, native_weights

    try:
        spec = get_spec(name)
        if spec.format == "random":
            _out.print(f"{name}: generated at load time, nothing to verify")
            return
        source, _ = find_file(spec)
        native = native_weights(spec, allow_fetch=False)
    except (RegistryError, WeightsError) as err:
        raise _fail(err) from None
    checked = f"{source} matches sha256 {spec.sha256}" if source else "no source copy kept"
    _out.print(f"{name}: OK; {checked}; native weights {native} match their recorded digest")


@models_app.command("convert")
def models_convert(
    onnx: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="IS-Net ONNX file")],
    output: Annotated[Path, typer.Argument(help="safetensors file to write")],
) -> None:
    """Convert an IS-Net ONNX export to native safetensors weights."""
    from matteflow.models.convert import ConversionError, convert_onnx

    try:
        convert_onnx(onnx, output, metadata={"source": onnx.name})
    except ConversionError as err:
        raise _fail(err) from None
    _out.print(f"wrote {output}")


class _DropImportNoise(logging.Filter):
    """Beam warns about BigQuery's apitools at import time; matteflow never uses BigQuery."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def main() -> None:
    """Console-script entry point."""
    logging.getLogger().addFilter(_DropImportNoise())
    app(prog_name="matteflow", args=sys.argv[1:])
