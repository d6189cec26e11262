"""Local runs: a runner that skips the Prism download, and a progress bar fed by metrics rows."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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

__all__ = ["local_runner", "progress_bar"]


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

        def advance(status: str) -> None:
            nonlocal failed
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
