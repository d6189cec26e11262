"""Local runs: worker threads by default, a runner that skips the Prism download, and a
progress bar fed by metrics rows."""

from __future__ import annotations

import contextlib
import os
import threading
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

from matteflow.transforms.metrics import set_progress_listener

__all__ = ["LOCAL_WORKERS", "local_runner", "local_worker_flags", "progress_bar"]

# Worker threads of a local run: one per core, at most 4 (each holds a batch's activations).
LOCAL_WORKERS = min(4, os.cpu_count() or 1)


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


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator[None]:
    """Show images done / total, images per second and ETA while the block runs in-process."""
    if not enabled:
        yield
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
        failed = 0
        lock = threading.Lock()  # rows arrive from several worker threads

        def advance(status: str) -> None:
            nonlocal failed
            with lock:
                failed += status == "failed"
                bar.advance(task)
                state = bar.tasks[task]
                rate = state.completed / state.elapsed if state.elapsed else 0.0
                bar.update(task, rate=f"{rate:.2f}", failed=failed)

        set_progress_listener(advance)
        try:
            yield
        finally:
            set_progress_listener(None)
