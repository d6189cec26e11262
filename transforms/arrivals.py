"""ReadArrivals (streaming): new objects as they land -> ImageTask, in fixed windows.

The streaming counterpart of ReadManifest. Objects are found by matching the watched glob every
`poll_interval_s` (MatchContinuously), or named by Cloud Storage object-finalize notifications
on a Pub/Sub subscription; either way only objects the glob matches are taken, and a task's id is
its path below the glob's fixed folder, without extension, as for a glob manifest. An object
that lands again (re-uploaded, or a notification delivered twice) comes back under the same
output key, and resume (resume.py) skips it when its bytes are unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileSystem
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.window import FixedWindows
from apache_beam.utils.timestamp import Timestamp

from matteflow.transforms.failures import MatteflowError
from matteflow.transforms.manifest import ManifestRows, outside, to_task
from matteflow.transforms.types import Failed, ImageTask

__all__ = ["ReadArrivals", "StreamingSettings", "glob_root", "notification_uri"]

_NAMESPACE = "matteflow.arrivals"


@dataclass(frozen=True)
class StreamingSettings:
    """How a streaming run (--streaming) learns of new objects and windows its metrics."""

    poll_interval_s: float = 30.0  # seconds between two matches of the watched glob
    window_s: int = 60  # metrics rows go to one set of Parquet files per fixed window

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s: expected > 0, got {self.poll_interval_s}")
        if self.window_s <= 0:
            raise ValueError(f"window_s: expected > 0, got {self.window_s}")


def glob_root(pattern: str) -> str:
    """The fixed folder of a glob, ending in "/": ids are paths below it.

    "gs://b/in/**/*.jpg" -> "gs://b/in/"; "photos/*.png" -> "photos/".
    """
    fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    return fixed[: fixed.rfind("/") + 1]


def notification_uri(message: PubsubMessage) -> str | None:
    """The gs:// URI a Cloud Storage Pub/Sub notification announces (from its attributes), or
    None when the event is not a finished upload (deletes, metadata updates, archiving)."""
    attributes = message.attributes or {}
    if attributes.get("eventType") != "OBJECT_FINALIZE":
        return None
    bucket, name = attributes.get("bucketId"), attributes.get("objectId")
    return f"gs://{bucket}/{name}" if bucket and name else None


class _TaskFn(beam.DoFn):
    """URI -> ImageTask when the glob matches it; an unsafe key -> "failures"."""

    def __init__(self, pattern: str) -> None:
        self._pattern = pattern
        self._root = glob_root(pattern)

    def setup(self) -> None:
        self._match = re.compile(FileSystem.translate_pattern(self._pattern))
        self._ignored = Metrics.counter(_NAMESPACE, "ignored")
        self._arrived = Metrics.counter(_NAMESPACE, "rows")

    def process(self, uri: str) -> Iterator[ImageTask | beam.pvalue.TaggedOutput[str, Failed]]:
        if not self._match.fullmatch(uri):
            self._ignored.inc()  # another prefix or extension on the same bucket notification
            return
        self._arrived.inc()
        try:
            yield to_task({"uri": uri}, "", self._root)
        except MatteflowError as err:
            task = ImageTask(uri, uri, uri)
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, err))


class ReadArrivals(beam.PTransform[beam.pvalue.PBegin, ManifestRows]):
    """PBegin -> ManifestRows(ok: an ImageTask per new object, failures: Failed), both in fixed
    windows of `settings.window_s`.

    `subscription` ("projects/P/subscriptions/S") reads object-finalize notifications instead of
    polling the glob; `uris` (a PBegin -> URI transform, e.g. a TestStream) replaces both.
    Objects under `exclude` (the job's own output prefix) are never tasks: a watched folder
    holding the outputs would feed them back without end (issue 17).
    """

    def __init__(
        self,
        pattern: str,
        settings: StreamingSettings,
        subscription: str | None = None,
        uris: beam.PTransform[Any, Any] | None = None,
        *,
        exclude: str = "",
    ) -> None:
        super().__init__()
        self._exclude = exclude
        self._pattern = pattern
        self._settings = settings
        self._subscription = subscription
        self._uris = uris

    def _source(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.PCollection[str]:
        uris: beam.pvalue.PCollection[str]
        if self._uris is not None:
            uris = pbegin | "Uris" >> self._uris
        elif self._subscription:
            uris = (
                pbegin
                | "Notifications"
                >> beam.io.ReadFromPubSub(subscription=self._subscription, with_attributes=True)
                | "Uris" >> beam.Map(notification_uri)
                | "Finalized" >> beam.Filter(lambda uri: uri is not None)
            )
        else:
            uris = (
                pbegin
                | "Watch"
                >> fileio.MatchContinuously(
                    self._pattern,
                    interval=self._settings.poll_interval_s,
                    start_timestamp=Timestamp.now(),  # the default is the time Beam was imported
                    match_updated_files=True,  # a re-uploaded object is redone (or skipped: resume)
                )
                | "Uris" >> beam.Map(lambda meta: meta.path)
            )
        return uris

    def expand(self, pbegin: beam.pvalue.PBegin) -> ManifestRows:
        tasks = (
            self._source(pbegin)
            | "SkipOwnOutputs" >> beam.Filter(outside, self._exclude)
            | "Window" >> beam.WindowInto(FixedWindows(self._settings.window_s))
            | "Tasks" >> beam.ParDo(_TaskFn(self._pattern)).with_outputs("failures", main="ok")
        )
        return ManifestRows(tasks.ok, tasks.failures)
