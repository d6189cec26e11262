"""Local runs: worker threads by default, a runner that skips the Prism download, and progress
(a bar, or plain lines when stdout is not a terminal) fed by metrics rows as they are made."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from matteflow.transforms.metrics import MetricsRow, set_progress_listener

__all__ = [
    "LOCAL_WORKERS",
    "local_runner",
    "local_worker_flags",
    "local_workers",
    "progress_bar",
    "set_progress_interval",
]

# Peak memory of a local run on 12 MP photos (bench/throughput.py --whole, IS-Net bf16): 2.4 GB
# with one worker thread, and up to about 1.1 GB more for each further one (its batch's
# activations and the full-resolution images in flight).
_FIRST_WORKER_GB = 2.5
_WORKER_GB = 1.0


def local_workers(cores: int, memory_bytes: int) -> int:
    """Worker threads of a local run: one per core the process may use, as many as fit in half
    of `memory_bytes` at the measured peak per worker; at least one."""
    fits = 1 + int((memory_bytes / 2**30 / 2 - _FIRST_WORKER_GB) // _WORKER_GB)
    return max(1, min(cores, fits))


# The cores this process may use (a container's or taskset's limit); macOS has no affinity.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
LOCAL_WORKERS = local_workers(_CORES or 1, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def local_worker_flags(argv: Sequence[str]) -> list[str]:
    """The flags that run a local job on LOCAL_WORKERS threads of this process, unless argv
    chooses workers or running mode itself. The threads share one model and split torch's
    threads among them (see remove_background), so one batch's decode, refinement and encoding
    overlap the model's work on another, and no core waits on another's."""
    if any(a.startswith(("--direct_num_workers", "--direct_running_mode")) for a in argv):
        return []
    return [f"--direct_num_workers={LOCAL_WORKERS}", "--direct_running_mode=multi_threading"]


def local_runner(options: PipelineOptions) -> fn_runner.FnApiRunner:
    """The FnApiRunner the DirectRunner falls back to, without its Prism download attempt.

    Pipeline options are forwarded to worker processes, so --direct_running_mode=
    multi_processing keeps --s3_endpoint_url and our own flags (../shared/ENVIRONMENT.md).
    """
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(info))


_interval_s = 10.0  # between plain progress lines (stdout not a terminal)


def set_progress_interval(seconds: float) -> None:
    """Seconds between the plain progress lines printed when stdout is not a terminal."""
    global _interval_s
    _interval_s = max(0.1, seconds)


def _eta(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class _Tally:
    """Rows finished so far (from several worker threads)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def add(self, row: MetricsRow) -> None:
        with self.lock:
            self.done += 1
            self.failed += row.status == "failed"

    def line(self) -> str:
        """`done/total rows (pct), rate, ETA, failed` as one plain line."""
        with self.lock:
            done, failed = self.done, self.failed
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed else 0.0
        eta = _eta((self.total - done) / rate) if rate and self.total >= done else "-"
        share = f" ({done / self.total:.0%})" if self.total else ""
        return (
            f"matteflow: {done}/{self.total} rows{share}, {rate:.2f} img/s, ETA {eta},"
            f" {failed} failed"
        )


@contextlib.contextmanager
def _plain_lines(tally: _Tally) -> Iterator[None]:
    """Print tally.line() every _interval_s seconds while the block runs."""
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(_interval_s):
            print(tally.line(), flush=True)

    thread = threading.Thread(target=report, name="matteflow-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator[None]:
    """While the block runs in-process, show rows done / total as each row finishes, images
    per second, ETA and failures: a bar on a terminal, else a plain line every few seconds
    (set_progress_interval)."""
    if not enabled:
        yield
        return
    tally = _Tally(total)
    if not sys.stdout.isatty():
        set_progress_listener(tally.add)
        try:
            with _plain_lines(tally):
                yield
        finally:
            set_progress_listener(None)
        return
    columns = (
        TextColumn("[bold]matteflow"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} img/s  failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("images", total=total, rate="-", failed=0)

        def advance(row: MetricsRow) -> None:
            tally.add(row)
            with tally.lock:
                bar.update(task, completed=tally.done, failed=tally.failed)
                state = bar.tasks[task]
                rate = state.completed / state.elapsed if state.elapsed else 0.0
                bar.update(task, rate=f"{rate:.2f}")

        set_progress_listener(advance)
        try:
            yield
        finally:
            set_progress_listener(None)
