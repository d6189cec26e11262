"""ReadManifest: a CSV, JSONL or Parquet manifest (or a bare glob) -> ImageTask per row.

Column `uri` is required; `id`, `ground_truth_uri` and `output_key` are optional; any other
column is carried to the metrics row as metadata. Relative URIs resolve against the manifest's
folder. Ids default to the path relative to the rows' common folder, without extension.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections import Counter
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from matteflow.transforms.types import ImageTask

__all__ = ["ManifestError", "ReadManifest", "is_glob", "read_manifest", "validate"]

_KNOWN = ("uri", "id", "ground_truth_uri", "output_key")


class ManifestError(ValueError):
    """The manifest as a whole is unusable (raised in preflight, before the graph runs)."""


def is_glob(uri: str) -> bool:
    """True when uri is a pattern (`dir/**/*.jpg`) rather than a manifest file."""
    return any(ch in uri for ch in "*?[")


def _records(uri: str) -> list[dict[str, Any]]:
    lower = uri.lower()
    try:
        with FileSystems.open(uri) as f:
            data = f.read()
    except Exception as err:
        raise ManifestError(f"{uri}: cannot read the manifest: {err}") from err
    try:
        if lower.endswith(".csv"):
            text = data.decode("utf-8-sig")
            return list(csv.DictReader(io.StringIO(text)))
        if lower.endswith((".jsonl", ".ndjson")):
            lines = data.decode("utf-8").splitlines()
            return [json.loads(line) for line in lines if line.strip()]
        if lower.endswith(".parquet"):
            return pq.read_table(io.BytesIO(data)).to_pylist()
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, OSError, ValueError) as err:
        raise ManifestError(f"{uri}: malformed manifest: {err}") from None
    raise ManifestError(f"{uri}: unknown manifest type; use .csv, .jsonl, .parquet or a glob")


def _resolve(base: str, uri: str) -> str:
    if not uri or "://" in uri or uri.startswith("/"):
        return uri
    return posixpath.normpath(posixpath.join(base, uri)) if base else uri


def _common_folder(uris: list[str]) -> str:
    """The longest folder prefix ("" or ending in "/") shared by all uris, as plain strings."""
    folders = [f"{d}/" if (d := posixpath.dirname(u)) else "" for u in uris if u]
    prefix = posixpath.commonprefix(folders) if folders else ""
    return prefix[: prefix.rfind("/") + 1]


def _default_id(uri: str, folder: str) -> str:
    rel = uri[len(folder) :] if uri.startswith(folder) else uri
    return posixpath.splitext(rel.lstrip("/"))[0]


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def read_manifest(uri: str) -> list[ImageTask]:
    """All rows of the manifest (or matches of the glob) as tasks, in manifest order.

    Raises ManifestError for an unreadable manifest or a missing `uri` column.
    """
    if is_glob(uri):
        matches = FileSystems.match([uri])[0].metadata_list
        records: list[dict[str, Any]] = [{"uri": m.path} for m in sorted(matches, key=str)]
        base = ""
    else:
        records = _records(uri)
        if records and "uri" not in records[0]:
            raise ManifestError(
                f"{uri}: no `uri` column (columns: {', '.join(map(str, records[0]))})"
            )
        base = posixpath.dirname(uri)
    uris = [_resolve(base, _text(r.get("uri"))) for r in records]
    folder = _common_folder(uris)
    tasks = []
    for n, (record, source) in enumerate(zip(records, uris, strict=True)):
        row_id = _text(record.get("id")) or (_default_id(source, folder) if source else f"row-{n}")
        gt = _text(record.get("ground_truth_uri"))
        extra = tuple(sorted((str(k), _text(v)) for k, v in record.items() if k not in _KNOWN))
        tasks.append(
            ImageTask(
                id=row_id,
                source_uri=source,
                output_key=_text(record.get("output_key")) or row_id,
                ground_truth_uri=_resolve(base, gt) or None,
                metadata=extra,
            )
        )
    return tasks


def validate(uri: str, tasks: Iterable[ImageTask]) -> int:
    """Check ids and output keys are unique and there is at least one row; returns row count."""
    tasks = list(tasks)
    if not tasks:
        raise ManifestError(f"{uri}: no rows (an empty manifest or a glob that matches nothing)")
    for field, values in (
        ("id", [t.id for t in tasks]),
        ("output_key", [t.output_key for t in tasks]),
    ):
        dupes = [v for v, c in Counter(values).items() if c > 1]
        if dupes:
            shown = ", ".join(repr(d) for d in dupes[:5])
            raise ManifestError(
                f"{uri}: {len(dupes)} duplicate {field} value(s), e.g. {shown};"
                f" every row needs its own {field}"
            )
    return len(tasks)


class ReadManifest(beam.PTransform):
    """PBegin -> ImageTask, one per manifest row, spread over workers."""

    def __init__(self, uri: str) -> None:
        super().__init__()
        self._uri = uri

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Uri" >> beam.Create([self._uri])
            | "Rows" >> beam.FlatMap(read_manifest)
            | "Spread" >> beam.Reshuffle()
        )
