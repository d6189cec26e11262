"""Where everything under a run's output prefix lives: the one owner of those paths.

    {output}/{folder}/{key}.{ext}      a row's output files (write.py's OUTPUT_KINDS)
    {output}/state/{key}.json          its resume record (resume.py)
    {output}/metrics/part-*.parquet    one metrics row per manifest row (metrics.py)
    {output}/review/manifest.csv       rows flagged for review (pipelines/summary.py)
    {output}/review/rework.csv         rows people sent back, and rejected.csv (pipelines/review.py)
    {output}/reviews/part-*.parquet    people's review decisions, kept across runs (review.py)
    {output}/run.json                  the run's summary, written last
    {output}/.matteflow-lock.json      the lease of the batch run writing here (pipelines/lock.py)

Below every stage: it imports nothing of ours.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

__all__ = ["OutputLayout"]


@dataclass(frozen=True)
class OutputLayout:
    """Paths under one output prefix (a local folder, gs:// or s3://); picklable."""

    output: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", self.output.rstrip("/"))

    def file(self, folder: str, key: str, extension: str) -> str:
        """A row's output file: `{output}/{folder}/{key}.{extension}`."""
        return f"{self.output}/{folder}/{key}.{extension}"

    def state(self, key: str) -> str:
        """The resume record of output key `key`."""
        return f"{self.output}/state/{key}.json"

    @property
    def metrics_prefix(self) -> str:
        """The prefix the metrics writer adds shard names and `.parquet` to."""
        return f"{self.output}/metrics/part"

    @property
    def metrics_glob(self) -> str:
        """Every metrics file of the run."""
        return f"{self.output}/metrics/*.parquet"

    @property
    def review_manifest(self) -> str:
        """The rows flagged needs_review, as a manifest."""
        return f"{self.output}/review/manifest.csv"

    def review_export(self, name: str) -> str:
        """A manifest exported from the review decisions (`rework`, `rejected`)."""
        return f"{self.output}/review/{name}.csv"

    def review_part(self, stem: str) -> str:
        """A new part file of review decisions."""
        return f"{self.output}/reviews/part-{stem}.parquet"

    @property
    def reviews_glob(self) -> str:
        """Every part file of review decisions (temporaries of writes in flight have hidden
        names and do not match)."""
        return f"{self.output}/reviews/part-*.parquet"

    @property
    def run_json(self) -> str:
        """The run's summary."""
        return f"{self.output}/run.json"

    @property
    def replaced_by_each_run(self) -> tuple[str, ...]:
        """Globs of what a new run replaces (state/ stays: it is resume): metrics/ at any depth
        (a dead sink's beam-temp-*/ folders too)."""
        return (f"{self.output}/metrics/**", f"{self.output}/review/*")

    @property
    def lock(self) -> str:
        """The lease a batch run holds while it writes here (pipelines/lock.py)."""
        return f"{self.output}/.matteflow-lock.json"

    def probe(self) -> str:
        """A fresh object name to test that the prefix is writable."""
        return f"{self.output}/.matteflow-probe-{uuid.uuid4().hex}"
