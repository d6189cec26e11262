"""`matteflow run --dry-run`: check a run without running it.

Reads the manifest and profile, checks the model, the output prefix and the first rows'
sources, counts the rows, and times the model on a few of the manifest's own images on this
machine to estimate the run's time. Writes nothing but the preflight's probe (deleted).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from matteflow.models.registry import RegistryError, get_spec, strictest_licence
from matteflow.models.weights import WeightsError
from matteflow.pipelines.config import ConfigError, RunConfig
from matteflow.pipelines.options import RunnerKind
from matteflow.pipelines.progress import LOCAL_WORKERS
from matteflow.pipelines.remove_background import PreflightError, parse_config, preflight
from matteflow.transforms.failures import MatteflowError
from matteflow.transforms.manifest import count_rows, is_glob, resolve_uri, to_task
from matteflow.transforms.routing import member_models
from matteflow.transforms.storage import exists

__all__ = ["DryRun", "dry_run", "first_records"]

_CHECKED_ROWS = 20  # rows whose sources are checked (allowed, present)
_TIMED_IMAGES = 5  # images timed; the first is a warm-up, not counted when there are more


@dataclass(frozen=True)
class DryRun:
    """What a dry run found."""

    rows: int
    checked: int  # rows whose sources were checked
    problems: tuple[str, ...]  # rows of those that would fail, with the reason
    notes: tuple[str, ...]  # how the estimate was made, where it differs from the run
    seconds_per_image: float | None  # on this machine, one image at a time; None: none timed
    load_s: float
    model: str
    licence_class: str  # the registry's: permissive | copyleft | non-commercial | unclear

    def lines(self) -> list[str]:
        """A short report for the terminal."""
        out = [
            f"manifest: {self.rows} rows; sources of the first {self.checked} checked,"
            f" {len(self.problems)} would fail",
            *(f"  {p}" for p in self.problems),
            f"model: {self.model} (licence class: {self.licence_class}),"
            f" loaded in {self.load_s:.1f}s",
        ]
        if self.seconds_per_image is None:
            out.append("estimate: no image could be timed")
        else:
            total = self.seconds_per_image * self.rows
            out.append(
                f"estimate on this machine: {self.seconds_per_image:.2f}s an image,"
                f" about {_duration(total)} for {self.rows} rows"
                f" ({total / 3600:.2f} machine-hours)"
            )
        out += [f"  {note}" for note in self.notes]
        out.append("dry run: nothing was processed")
        return out


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def first_records(uri: str, limit: int) -> Iterator[dict[str, Any]]:
    """The first `limit` records of a manifest (CSV, JSONL, Parquet) or glob, as dicts."""
    if is_glob(uri):
        for meta in FileSystems.match([uri])[0].metadata_list[:limit]:
            yield {"uri": meta.path}
        return
    with FileSystems.open(uri) as f:
        if uri.lower().endswith(".parquet"):
            table = pq.ParquetFile(f)
            for batch in table.iter_batches(batch_size=limit):
                yield from batch.to_pylist()[:limit]
                return
            return
        text = io.TextIOWrapper(f, encoding="utf-8-sig")
        if uri.lower().endswith(".csv"):
            rows: Iterator[dict[str, Any]] = csv.DictReader(text)
        else:
            rows = (json.loads(line) for line in text if line.strip())
        for n, row in enumerate(rows):
            if n >= limit:
                return
            yield dict(row)


def _device_here(device: str) -> bool:
    import torch

    return device.startswith("cuda") and torch.cuda.is_available()


def dry_run(cfg: RunConfig) -> DryRun:
    """Check cfg's manifest rows and time the model here (call after preflight)."""
    from matteflow.pipelines.api import Remover  # loads torch: only a dry run needs it

    rows = count_rows(cfg.manifest)
    base = "" if is_glob(cfg.manifest) else cfg.manifest.rpartition("/")[0]
    problems: list[str] = []
    notes: list[str] = []
    sources: list[str] = []
    records = list(first_records(cfg.manifest, _CHECKED_ROWS))
    for record in records:
        uri = resolve_uri(base, str(record.get("uri") or ""))
        try:
            task = to_task(record, base, "", cfg.sources)
            if not exists(task.source_uri):
                raise MatteflowError(f"{task.source_uri}: no such object", code="not_found")
            sources.append(task.source_uri)
        except MatteflowError as err:
            problems.append(f"{uri or record}: {err.code}: {err}")
    timed = cfg
    if cfg.model.device != "cpu" and not _device_here(cfg.model.device):
        # A GPU profile checked from a laptop: time the model on this CPU, and say so.
        timed = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, device="cpu"))
        notes.append(f"no {cfg.model.device} here: the estimate is for this machine's CPU")
    start = time.perf_counter()
    remover = Remover.from_config(timed)
    load_s = time.perf_counter() - start

    def timed_matte(uri: str) -> bool:
        try:
            remover.matte(uri)
        except MatteflowError as err:
            problems.append(f"{uri}: {err.stage}/{err.code}: {err}")
            return False
        return True

    # The first image pays first-call costs; the others run as a local run runs them, on
    # LOCAL_WORKERS threads sharing the one model, so decode and refinement overlap the model.
    warm_up, rest = sources[:1], sources[1:_TIMED_IMAGES]
    start = time.perf_counter()
    done = sum(map(timed_matte, warm_up))
    if rest:
        start = time.perf_counter()
        with ThreadPoolExecutor(LOCAL_WORKERS) as pool:
            done = sum(pool.map(timed_matte, rest))
    wall = time.perf_counter() - start
    return DryRun(
        rows=rows,
        checked=len(records),
        problems=tuple(problems),
        notes=tuple(notes),
        seconds_per_image=wall / done if done else None,
        load_s=load_s,
        model=cfg.model.name,
        licence_class=strictest_licence(
            get_spec(n).licence_class for n in member_models(cfg.model.name, cfg.routing)
        ),
    )


def main(argv: list[str]) -> int:
    """CLI entry of --dry-run: 0 when the run could start, 2 when it could not (the reason on
    stderr); rows that would fail are listed but do not change the exit code."""
    try:
        cfg, _ = parse_config(argv)
        options = PipelineOptions([*cfg.beam.args, *argv])  # as `launch` makes them
        FileSystems.set_options(options)
        streaming = options.view_as(StandardOptions).streaming
        preflight(cfg, RunnerKind.of(options).model_here, streaming=streaming)
        report = dry_run(cfg)
    except (ConfigError, PreflightError, RegistryError, WeightsError) as err:
        print(f"matteflow: cannot start: {err}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0
