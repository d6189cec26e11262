"""`matteflow eval`: the same job on labelled images, scored, plus head-to-head reports.

    matteflow eval --data MANIFEST_OR_DIR --output URI [--name NAME] [--model M | --models A,B]
                   [--refine R] [--profile FILE] [--set TABLE.KEY=VALUE ...] [--replace]
                   [--slice-by COLUMN ...] [Beam options]
    matteflow eval --data MANIFEST_OR_DIR --output URI --predictions DIR [--name NAME]

`--data` is a CSV or JSONL manifest with `uri` (or `image`), `ground_truth_uri` (or `alpha`) and
optional `id` and `category` columns, or a folder holding `manifest.csv`; relative paths resolve
against the manifest's folder. Each invocation adds one run under `{output}/runs/{name}/`:
our pipeline (metrics, masks, cutouts as `matteflow run` writes them), or another tool's
predictions (`--predictions`: `{id}.png` or `{id}.webp` per image, grey alpha or RGBA cutouts;
an optional `timings.csv` with `id,seconds` gives their time per image) scored alike. Then
`{output}/report/index.html` is rewritten with every run found under `{output}/runs/`.
`--models a,b` adds one run per model; a run's default name comes from its settings and an
existing run is refused unless `--replace` (eval_runs.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import posixpath
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from matteflow.pipelines.config import RunConfig, load_config
from matteflow.pipelines.eval_runs import (
    RunExists,
    check_slices,
    claim,
    default_name,
    model_list,
    run_name,
)
from matteflow.pipelines.options import MatteflowOptions
from matteflow.pipelines.remove_background import exit_code, launch
from matteflow.pipelines.report import RunResult, Sample, write_report
from matteflow.transforms.csvfile import write_csv
from matteflow.transforms.failures import MatteflowError, NotFound, ScoreError
from matteflow.transforms.manifest import absolute_uri, check_key, read_records, resolve_uri
from matteflow.transforms.metrics import SCHEMA, MetricsRow, metrics_row, read_metrics
from matteflow.transforms.quality import scores
from matteflow.transforms.reader import Reader
from matteflow.transforms.storage import exists, read_bytes, write_atomic
from matteflow.transforms.types import Failed, ImageTask

__all__ = ["RunExists", "load_samples", "main", "run_name", "score_predictions"]

_PREDICTION_EXTENSIONS = (".png", ".webp")


def load_samples(data: str) -> list[Sample]:
    """The labelled images of a manifest (CSV/JSONL) or of a folder's manifest.csv."""
    manifest = data if data.endswith((".csv", ".jsonl")) else f"{data.rstrip('/')}/manifest.csv"
    records = read_records(manifest)
    base = manifest[: manifest.rfind("/") + 1]
    samples = []
    for record in records:
        uri = resolve_uri(base, str(record.get("uri") or record.get("image") or ""))
        truth = resolve_uri(base, str(record.get("ground_truth_uri") or record.get("alpha") or ""))
        if not uri or not truth:
            raise ValueError(f"{manifest}: every row needs an image and its ground truth: {record}")
        sample_id = str(record.get("id") or posixpath.splitext(posixpath.basename(uri))[0])
        columns = tuple((str(k), "" if v is None else str(v)) for k, v in record.items())
        samples.append(Sample(sample_id, uri, truth, str(record.get("category") or ""), columns))
    if len({s.id for s in samples}) != len(samples):
        raise ValueError(f"{manifest}: ids are not unique")
    return samples


def _timings(predictions: str) -> dict[str, float]:
    """id -> seconds from an optional `timings.csv` beside the predictions."""
    try:
        text = read_bytes(f"{predictions.rstrip('/')}/timings.csv").decode()
    except NotFound:
        return {}
    return {row["id"]: float(row["seconds"]) for row in csv.DictReader(io.StringIO(text))}


def score_predictions(samples: list[Sample], predictions: str) -> pa.Table:
    """Metrics rows (SCHEMA) scoring another tool's alpha or RGBA files against ground truth;
    raises NotFound when no sample has a prediction file."""
    seconds = _timings(predictions)
    reader = Reader()
    rows = []
    matched = 0
    for sample in samples:
        task = ImageTask(
            sample.id,
            sample.image_uri,
            sample.id,
            sample.ground_truth_uri,
            (("category", sample.category),),
        )
        candidates = [
            f"{predictions.rstrip('/')}/{sample.id}{ext}" for ext in _PREDICTION_EXTENSIONS
        ]
        try:
            check_key(sample.id)  # ids are paths below the folder, never "../x" (issue 17)
            found = next((uri for uri in candidates if exists(uri)), None)
            matched += found is not None
            if found is None:
                raise NotFound(f"no prediction for {sample.id} in {predictions}")
            pred = reader.alpha(found)
            truth = reader.alpha(sample.ground_truth_uri)
            if pred.shape != truth.shape:
                shapes = f"{pred.shape[1]}x{pred.shape[0]}, not {truth.shape[1]}x{truth.shape[0]}"
                raise ScoreError(f"{found}: {shapes}", code="size_mismatch")
        except MatteflowError as err:  # a missing prediction scores as a failure, too
            rows.append(metrics_row(Failed(task, "score", err.code, str(err))))
            continue
        rows.append(
            MetricsRow.of_task(
                task,
                "ok",
                uris=(("mask_uri", found),),
                height=pred.shape[0],
                width=pred.shape[1],
                scores=scores(pred, truth),
                total_ms=seconds[sample.id] * 1e3 if sample.id in seconds else None,
            )
        )
    if samples and not matched:
        extensions = " or ".join(_PREDICTION_EXTENSIONS)
        raise NotFound(
            f"{predictions}: no {{id}}{extensions} file for any of the {len(samples)} ids"
        )
    return pa.Table.from_pylist([r.record() for r in rows], schema=SCHEMA)


def _write_manifest(samples: list[Sample], uri: str) -> None:
    """The run's manifest; local paths absolute, as it lives in another folder (issue 17)."""
    write_csv(
        uri,
        ["id", "uri", "ground_truth_uri", "category"],
        (
            [s.id, absolute_uri(s.image_uri), absolute_uri(s.ground_truth_uri), s.category]
            for s in samples
        ),
    )


def _runs(output: str) -> list[RunResult]:
    """Every run under {output}/runs/, by name."""
    found = FileSystems.match([f"{output}/runs/*/metrics/*.parquet"])[0].metadata_list
    names = sorted({m.path.split("/runs/", 1)[1].split("/", 1)[0] for m in found})
    return [RunResult(name, read_metrics(f"{output}/runs/{name}")) for name in names]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matteflow eval", description=__doc__)
    parser.add_argument("--data", required=True, help="labelled manifest (CSV/JSONL) or folder")
    parser.add_argument("--output", required=True, help="evaluation output prefix")
    parser.add_argument("--name", help="run name (default: model-refine, or the folder name)")
    parser.add_argument("--predictions", help="score another tool's outputs in this folder")
    parser.add_argument("--model", help="registry model name")
    parser.add_argument("--models", help="several models, comma-separated: one run each")
    parser.add_argument("--set", action="append", default=[], help="TABLE.KEY=VALUE, as in run")
    parser.add_argument("--replace", action="store_true", help="replace a run of the same name")
    parser.add_argument(
        "--slice-by", action="append", default=[], help="manifest column to compare runs by"
    )
    parser.add_argument("--refine", help="none | guided | matting")
    parser.add_argument("--profile", help="TOML profile")
    parser.add_argument("--sheet_rows", type=int, default=40, help="images in the contact sheet")
    return parser


def _run_config(
    args: argparse.Namespace, rest: list[str], manifest: str, output: str, model: str | None
) -> RunConfig:
    """The config of our pipeline's run of `model` on the labelled set: the profile,
    --refine, --set and the `matteflow run` flags among `rest` (--allow_source, ...); always
    --force."""
    mf = PipelineOptions(rest).view_as(MatteflowOptions)
    refine = [f"refine.refine={args.refine}"] if args.refine else []
    return load_config(
        args.profile,
        manifest=manifest,
        output=output,
        model=model,
        force=True,
        max_failure_rate=mf.max_failure_rate,
        settings=[*refine, *args.set, *(mf.settings or [])],
        allow_sources=mf.allow_sources,
        allow_private_sources=mf.allow_private_sources,
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry: add one run, rewrite the report; exit codes as `matteflow run`."""
    args, rest = _parser().parse_known_args(argv)
    output = args.output.rstrip("/")
    FileSystems.set_options(PipelineOptions(rest))
    try:
        samples = load_samples(args.data)
        check_slices(samples, args.slice_by)
        models = model_list(args.models, args.model)
        if args.name and len(models) > 1:
            raise ValueError("--name names one run; --models makes one per model")
        if args.predictions:
            names = [run_name(args.name or posixpath.basename(args.predictions.rstrip("/")))]
            table = score_predictions(samples, args.predictions)
        else:
            names = [
                run_name(args.name or default_name(m, args.profile, args.refine, args.set))
                for m in models
            ]
        for name in names:
            claim(output, name, args.replace)
    except (ValueError, MatteflowError) as err:  # RunExists is a ValueError
        print(f"matteflow eval: cannot start: {err}", file=sys.stderr)
        return 2
    start = time.monotonic()
    if args.predictions:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        write_atomic(f"{output}/runs/{name}/metrics/part-00000-of-00001.parquet", buf.getvalue())
    for model, name in zip([] if args.predictions else models, names, strict=False):
        manifest = f"{output}/runs/{name}/eval-manifest.csv"
        _write_manifest(samples, manifest)
        run_output = f"{output}/runs/{name}"
        code: int = exit_code(  # errors reported and exit codes as `matteflow run`
            lambda m=manifest, o=run_output, n=model: launch(_run_config(args, rest, m, o, n), rest)
        )
        if code != 0:
            return code
    runs = _runs(output)
    index = write_report(output, samples, runs, sheet_rows=args.sheet_rows, slice_by=args.slice_by)
    for run in runs:
        ok = [r for r in run.metrics.to_pylist() if r["status"] == "ok" and r["iou"] is not None]
        means = {
            k: sum(r[k] for r in ok) / len(ok) if ok else float("nan")
            for k in ("iou", "mae", "edge_mae")
        }
        print(
            f"{run.name}: {len(ok)} scored, iou {means['iou']:.4f}, mae {means['mae']:.4f},"
            f" edge_mae {means['edge_mae']:.4f}"
        )
    done = ", ".join(names)
    print(f"matteflow eval: run {done} in {time.monotonic() - start:.1f}s; report {index}")
    statuses = {n: read_metrics(f"{output}/runs/{n}").column("status").to_pylist() for n in names}
    failed = [n for n in names if "ok" not in statuses[n]]
    if failed:  # nothing was scored: not a result (exit code as `run`'s 3)
        print(
            f"matteflow eval: run {', '.join(failed)}: every row failed; see its metrics",
            file=sys.stderr,
        )
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
