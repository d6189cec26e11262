"""ReadManifest: a CSV, JSONL or Parquet manifest (or a bare glob) -> one ImageTask per row.

The runner reads the manifest in parallel (text and Parquet splits, or object matches); the
launcher only checks its header. Column `uri` is required; `id`, `ground_truth_uri` and
`output_key` are optional; other columns are carried to the metrics row as metadata; a CSV
cell that csvfile.neutral_cell prefixed reads as it was. Relative URIs (images, ground truth, a
row's background image) resolve against the manifest's folder. Ids default to the path relative
to the rows' common folder, without extension, of the redacted URI (no credentials or tokens).
A row that
cannot become a task (no uri, unsafe output key, a source the run may not read, an id or output
key shared with another row, unparsable) leaves as a `Failed` record.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics

from matteflow.transforms.csvfile import restore_cell
from matteflow.transforms.failures import BadRow, MatteflowError, redact
from matteflow.transforms.framing import FramingSettings
from matteflow.transforms.settings import (
    ROW_SETTINGS,
    OutputSettings,
    background_colour,
    with_overrides,
)
from matteflow.transforms.sources import DEFAULT_POLICY, SourcePolicy, check_source
from matteflow.transforms.storage import read_bytes
from matteflow.transforms.types import Failed, ImageTask

__all__ = [
    "ManifestError",
    "ManifestRows",
    "ReadManifest",
    "absolute_uri",
    "check_key",
    "check_manifest",
    "count_rows",
    "is_glob",
    "outside",
    "read_records",
    "resolve_uri",
    "to_task",
]

_KNOWN = ("uri", "id", "ground_truth_uri", "output_key")
_DRIVE = re.compile(r"^[A-Za-z]:")  # C:, d:x (a Windows drive)
# A file name is at most 255 bytes on common filesystems; room for ".png" and a temp suffix.
_MAX_SEGMENT_BYTES = 200
_rows = Metrics.counter("matteflow.manifest", "rows")


class ManifestError(ValueError):
    """The manifest as a whole is unusable (raised in preflight, before the graph runs)."""


class ManifestRows(NamedTuple):
    """ReadManifest's outputs: tasks to process, and rows that failed as manifest rows."""

    ok: beam.pvalue.PCollection[ImageTask]
    failures: beam.pvalue.PCollection[Failed]


def is_glob(uri: str) -> bool:
    """True when uri is a pattern (`dir/**/*.jpg`) rather than a manifest file."""
    return any(ch in uri for ch in "*?[")


def _kind(uri: str) -> str:
    if is_glob(uri):
        return "glob"
    for kind, suffixes in (("csv", (".csv",)), ("jsonl", (".jsonl", ".ndjson"))):
        if uri.lower().endswith(suffixes):
            return kind
    if uri.lower().endswith(".parquet"):
        return "parquet"
    raise ManifestError(f"{uri}: unknown manifest type; use .csv, .jsonl, .parquet or a glob")


def _first_line(uri: str) -> tuple[str, int]:
    """The first line that is not blank, and how many lines end with it (blank lines and a
    byte order mark before a CSV header are not rows; issue 17)."""
    with FileSystems.open(uri) as f:
        for number, raw in enumerate(f, start=1):
            line = str(raw.decode("utf-8-sig")).lstrip("\ufeff")
            if line.strip():
                return line, number
    return "", 0


def _columns(uri: str, kind: str) -> list[str]:
    if kind == "csv":
        return next(csv.reader([_first_line(uri)[0]]), [])
    if kind == "jsonl":
        line = _first_line(uri)[0]
        record = json.loads(line) if line else {}
        return list(record) if isinstance(record, dict) else []
    with FileSystems.open(uri) as f:
        return list(pq.read_schema(f).names)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict; a repeated key is an error, not "the last one wins"."""
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise ValueError(f"the record repeats key {key!r}")
        record[key] = value
    return record


def check_manifest(uri: str) -> None:
    """Preflight: the manifest exists, parses and has a `uri` column (or the glob matches).

    Reads only the header (or the first record); raises ManifestError with the reason.
    """
    kind = _kind(uri)
    try:
        if kind == "glob":
            if not FileSystems.match([uri])[0].metadata_list:
                raise ManifestError(f"{uri}: the glob matches no objects")
            return
        columns = _columns(uri, kind)
    except ManifestError:
        raise
    except Exception as err:
        raise ManifestError(f"{uri}: cannot read the manifest: {err}") from None
    if "uri" not in columns:
        shown = ", ".join(map(str, columns)) or "none"
        raise ManifestError(f"{uri}: no `uri` column (columns: {shown})")
    _check_unique(uri, columns)


def _check_unique(uri: str, columns: list[str]) -> None:
    """Raise ManifestError when a column name repeats (never "the last one wins")."""
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ManifestError(
            f"{uri}: column names repeat: {', '.join(repeated)}; give each column its own name"
        )


def outside(path: str, prefix: str) -> bool:
    """True unless `path` lies under the folder `prefix` ("" holds nothing); local paths are
    compared absolute."""
    if not prefix:
        return True
    folder = absolute_uri(prefix).rstrip("/") + "/"
    return not absolute_uri(path).startswith(folder)


def count_rows(uri: str, exclude: str = "") -> int:
    """Rows in the manifest, streamed (for progress bars; nothing is kept); a glob's matches
    under the folder `exclude` do not count."""
    kind = _kind(uri)
    if kind == "glob":
        matches = FileSystems.match([uri])[0].metadata_list
        return sum(1 for m in matches if outside(m.path, exclude))
    if kind == "parquet":
        with FileSystems.open(uri) as f:
            return int(pq.read_metadata(f).num_rows)
    with FileSystems.open(uri) as f:
        lines = sum(1 for raw in f if raw.strip(b" \t\r\n\xef\xbb\xbf"))
    return lines - 1 if kind == "csv" and lines else lines


def read_records(uri: str) -> list[dict[str, Any]]:
    """Every record of a CSV, JSONL or Parquet manifest, read here in the launcher (for small
    manifests, e.g. labelled sets; a run's manifest is read by the runner, in parallel).
    Blank lines are not records, and CSV cells read as ReadManifest reads them; raises
    ManifestError for a line that is not a JSON object or for repeated column names."""
    kind = _kind(uri)
    if kind == "glob":
        return [{"uri": m.path} for m in FileSystems.match([uri])[0].metadata_list]
    data = read_bytes(uri)  # errors classified (fetch/not_found, ...), transient ones retried
    if kind == "parquet":
        return list(pq.read_table(io.BytesIO(data)).to_pylist())
    text = data.decode("utf-8-sig")
    if kind == "csv":
        rows = csv.DictReader(io.StringIO(text.lstrip()))  # blank lines before the header
        _check_unique(uri, list(rows.fieldnames or []))
        return [
            {k: restore_cell(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows
        ]
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not all(isinstance(r, dict) for r in records):
        raise ManifestError(f"{uri}: every line must be a JSON object")
    return records


def check_key(key: str) -> None:
    """Raise BadRow (manifest/unsafe_key) unless key is a safe relative path for outputs: no
    scheme, drive or leading "/", no "", "." or ".." segment, no backslash, no control or
    line-separator character, segments of at most 200 bytes."""
    parts = key.split("/")
    problem = None
    if not key or key.startswith("/") or "://" in key or _DRIVE.match(key) or "\\" in key:
        problem = "is not a relative path"
    elif any(part in ("", ".", "..") for part in parts):
        problem = "has an empty, '.' or '..' segment"
    elif any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in key):
        problem = "contains control characters"
    elif max(len(part.encode()) for part in parts) > _MAX_SEGMENT_BYTES:
        problem = f"has a segment over {_MAX_SEGMENT_BYTES} bytes"
    if problem:
        raise BadRow(f"output key {key!r} {problem}", code="unsafe_key")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def resolve_uri(base: str, uri: str) -> str:
    """uri made absolute against the manifest's folder `base` (a path or a scheme://bucket/…)."""
    if not uri or "://" in uri or uri.startswith("/") or not base:
        return uri
    scheme, sep, path = base.rpartition("://")
    if not sep:
        return posixpath.normpath(posixpath.join(base, uri))
    bucket, _, folder = path.partition("/")
    joined = posixpath.normpath(posixpath.join("/", folder, uri)).lstrip("/")
    return f"{scheme}://{bucket}/{joined}"


def absolute_uri(uri: str) -> str:
    """uri with a local path made absolute (against the working directory), so that a
    manifest we write resolves it from its own folder; URIs with a scheme stay as they are."""
    return uri if not uri or "://" in uri else os.path.abspath(uri)


def _folder(uri: str) -> str:
    parent = posixpath.dirname(uri)
    return f"{parent}/" if parent else ""


def _row_id(record: dict[str, Any], source: str, folder: str) -> str:
    """The row's `id`, else its source path below the rows' common folder (`folder`, of
    redacted URIs), no extension. The source is redacted first: user info, query strings and
    fragments (credentials, signed-URL tokens) never become ids, output names or state names
    (issue 17, item 12)."""
    source = redact(source)
    rel = source[len(folder) :] if source.startswith(folder) else source
    return _text(record.get("id")) or posixpath.splitext(rel.lstrip("/"))[0]


def to_task(
    record: dict[str, Any], base: str, folder: str, sources: SourcePolicy = DEFAULT_POLICY
) -> ImageTask:
    """One manifest record as a task; raises BadRow (missing_uri, unsafe_key, bad_setting, and
    source_not_allowed for an image, ground truth or background the run may not read)."""
    source = resolve_uri(base, _text(record.get("uri")))
    if not source:
        raise BadRow("row has an empty uri", code="missing_uri")
    row_id = _row_id(record, source, folder)
    key = _text(record.get("output_key")) or row_id
    check_key(key)
    settings = tuple(
        (name, _text(record.get(name))) for name in ROW_SETTINGS if _text(record.get(name))
    )
    try:
        with_overrides(OutputSettings(), FramingSettings(), dict(settings))
    except ValueError as err:
        raise BadRow(str(err), code="bad_setting") from None
    ground_truth = resolve_uri(base, _text(record.get("ground_truth_uri")))
    background = dict(settings).get("background", "")
    if background and not background_colour(background):  # an image: relative like the rest
        background = resolve_uri(base, background)
        settings = tuple((n, background if n == "background" else v) for n, v in settings)
    for uri in (source, ground_truth, "" if background_colour(background) else background):
        if uri:
            check_source(uri, sources)
    return ImageTask(
        id=row_id,
        source_uri=source,
        output_key=key,
        ground_truth_uri=ground_truth or None,
        metadata=tuple(
            sorted(
                (str(k), _text(v))
                for k, v in record.items()
                if k not in _KNOWN and k not in ROW_SETTINGS
            )
        ),
        settings=settings,
    )


def _unparsable(raw: str, err: Exception) -> Failed:
    """A failure row for a manifest line that is not a record (named by its hash)."""
    name = f"line:{hashlib.sha256(raw.encode()).hexdigest()[:16]}"
    return Failed(ImageTask(name, "", name), "manifest", "bad_row", f"{raw[:200]!r}: {err}")


class _ParseFn(beam.DoFn):
    """A CSV/JSONL line, or a Parquet/glob record, -> dict; unparsable -> "failures"."""

    def __init__(self, kind: str, header: list[str]) -> None:
        self._kind, self._header = kind, header

    def process(
        self, item: Any
    ) -> Iterator[dict[str, Any] | beam.pvalue.TaggedOutput[str, Failed]]:
        if isinstance(item, str):
            item = item.lstrip("\ufeff")
            if not item.strip():  # blank lines are not rows (count_rows skips them too)
                return
        _rows.inc()
        try:
            if self._kind == "csv":
                values = next(csv.reader([item]))
                if len(values) != len(self._header):
                    raise ValueError(f"{len(values)} fields, the header has {len(self._header)}")
                yield dict(zip(self._header, map(restore_cell, values), strict=True))
            elif self._kind == "jsonl":
                record = json.loads(item, object_pairs_hook=_unique_keys)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                yield record
            elif self._kind == "glob":
                yield {"uri": item.path}
            else:
                yield item
        except (ValueError, csv.Error) as err:
            yield beam.pvalue.TaggedOutput("failures", _unparsable(str(item), err))


class _CommonFolder(beam.CombineFn):
    """The longest folder prefix ("" or ending in "/") shared by all non-empty uris."""

    def create_accumulator(self) -> str | None:
        return None

    def add_input(self, acc: str | None, uri: str) -> str | None:
        if not uri:
            return acc
        folder = _folder(uri)
        return folder if acc is None else posixpath.commonprefix([acc, folder])

    def merge_accumulators(self, accs: Iterable[str | None]) -> str | None:
        present = [a for a in accs if a is not None]
        return posixpath.commonprefix(present) if present else None

    def extract_output(self, acc: str | None) -> str:
        return "" if acc is None else acc[: acc.rfind("/") + 1]


class _TaskFn(beam.DoFn):
    def __init__(self, base: str, sources: SourcePolicy) -> None:
        self._base = base
        self._sources = sources

    def process(
        self, record: dict[str, Any], folder: str
    ) -> Iterator[ImageTask | beam.pvalue.TaggedOutput[str, Failed]]:
        try:
            yield to_task(record, self._base, folder, self._sources)
        except MatteflowError as err:
            source = resolve_uri(self._base, _text(record.get("uri")))
            row_id = _row_id(record, source, folder) if source else _text(record.get("id"))
            task = ImageTask(row_id, source, _text(record.get("output_key")))
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, err))


class _UniqueFn(beam.DoFn):
    """(value, [tasks]) -> the task when it is alone; every task of a shared value fails."""

    def __init__(self, field: str) -> None:
        self._field = field

    def process(
        self, group: tuple[str, Iterable[ImageTask]]
    ) -> Iterator[ImageTask | beam.pvalue.TaggedOutput[str, Failed]]:
        value, tasks = group
        tasks = list(tasks)
        if len(tasks) == 1:
            yield tasks[0]
            return
        for task in tasks:
            error = BadRow(
                f"{self._field} {value!r} is shared by {len(tasks)} rows; each needs its own",
                code=f"duplicate_{self._field}",
            )
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, error))


class ReadManifest(beam.PTransform[beam.pvalue.PBegin, ManifestRows]):
    """PBegin -> ManifestRows(ok: ImageTask per usable row, failures: Failed per bad row);
    rows naming sources outside `sources` fail as manifest/source_not_allowed. A glob's
    matches under `exclude` (the run's own output prefix) are not rows: a glob over a folder
    holding the outputs would read them back in, more with each run (issue 17)."""

    def __init__(
        self, uri: str, sources: SourcePolicy = DEFAULT_POLICY, *, exclude: str = ""
    ) -> None:
        super().__init__()
        self._uri = uri
        self._kind = _kind(uri)
        self._sources = sources
        self._exclude = exclude

    def _source(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.PCollection[Any]:
        if self._kind == "glob":
            matches: beam.pvalue.PCollection[Any] = pbegin | "Match" >> fileio.MatchFiles(self._uri)
            ours: beam.pvalue.PCollection[Any] = matches | "SkipOwnOutputs" >> beam.Filter(
                lambda m, prefix: outside(m.path, prefix), self._exclude
            )
            return ours
        if self._kind == "parquet":
            read: beam.PTransform[Any, Any] = beam.io.ReadFromParquet(self._uri)
        else:  # CSV: past its header and any blank lines before it (issue 17)
            skip = _first_line(self._uri)[1] if self._kind == "csv" else 0
            read = beam.io.ReadFromText(self._uri, skip_header_lines=skip)
        label = "Parquet" if self._kind == "parquet" else "Lines"
        records: beam.pvalue.PCollection[Any] = pbegin | label >> read
        return records

    def expand(self, pbegin: beam.pvalue.PBegin) -> ManifestRows:
        header = _columns(self._uri, "csv") if self._kind == "csv" else []
        parsed = self._source(pbegin) | "Parse" >> beam.ParDo(
            _ParseFn(self._kind, header)
        ).with_outputs("failures", main="ok")
        base = "" if self._kind == "glob" else posixpath.dirname(self._uri)
        folder = (
            parsed.ok
            | "Uris" >> beam.Map(lambda r: redact(resolve_uri(base, _text(r.get("uri")))))
            # CombineFn's untyped __init__ makes _CommonFolder() an untyped call
            | "CommonFolder" >> beam.CombineGlobally(_CommonFolder())  # type: ignore[no-untyped-call]
        )
        tasks = parsed.ok | "Tasks" >> beam.ParDo(
            _TaskFn(base, self._sources), folder=beam.pvalue.AsSingleton(folder)
        ).with_outputs("failures", main="ok")
        by_id = (
            tasks.ok
            | "KeyById" >> beam.Map(lambda t: (t.id, t))
            | "GroupById" >> beam.GroupByKey()
            | "UniqueIds" >> beam.ParDo(_UniqueFn("id")).with_outputs("failures", main="ok")
        )
        by_key = (
            by_id.ok
            | "KeyByOutputKey" >> beam.Map(lambda t: (t.output_key, t))
            | "GroupByOutputKey" >> beam.GroupByKey()
            | "UniqueKeys"
            >> beam.ParDo(_UniqueFn("output_key")).with_outputs("failures", main="ok")
        )
        failures = (
            parsed.failures,
            tasks.failures,
            by_id.failures,
            by_key.failures,
        ) | "ManifestFailures" >> beam.Flatten()
        return ManifestRows(by_key.ok, failures)
