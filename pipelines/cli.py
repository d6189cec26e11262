"""The `matteflow` command: `run`, `eval`, and `models list | fetch | verify | convert`."""

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


class _DropImportNoise(logging.Filter):
    """Beam warns about BigQuery's apitools at import time; matteflow never uses BigQuery."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def main() -> None:
    """Console-script entry point."""
    logging.getLogger().addFilter(_DropImportNoise())
    app(prog_name="matteflow", args=sys.argv[1:])
