"""Ctrl-C and SIGTERM during a command: stop at once, with a line that says what was kept.

A local Beam run cannot be stopped from inside (its worker threads do not end on
KeyboardInterrupt: tracebacks, hangs, aborts), so the process exits at the signal, 130 for
SIGINT and 143 for SIGTERM, after sending SIGTERM to its own worker processes (and asking
the runner to cancel a job it runs elsewhere: `cancel_on_interrupt`). Nothing
partial is left at a final name: every output is written under a temporary name and renamed
into place (transforms/storage.py), and run.json is written last, so a rerun finds the
finished rows current and completes the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from apache_beam.runners.runner import PipelineResult

__all__ = ["cancel_on_interrupt", "exit_on_interrupt"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_CANCEL_WAIT_S = 20  # for a runner to accept a job's cancellation
_jobs: list[PipelineResult] = []


def cancel_on_interrupt(result: PipelineResult) -> None:
    """Cancel this job (one on a runner elsewhere) if the command is interrupted."""
    _jobs.append(result)


def _cancel_jobs() -> None:
    for result in _jobs:
        sys.stderr.write("matteflow: cancelling the job on its runner...\n")
        sys.stderr.flush()
        worker = threading.Thread(target=result.cancel, daemon=True)
        worker.start()
        worker.join(_CANCEL_WAIT_S)
        state = "cancel requested" if not worker.is_alive() else "cancel did not answer"
        sys.stderr.write(f"matteflow: {state}; check the job in the runner's own tools\n")


def _stop(signum: int, frame: FrameType | None) -> None:
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C while stopping changes nothing
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    if sys.stderr.isatty():
        sys.stderr.write("\x1b[?25h")  # the progress bar hides the cursor; show it again
    sys.stderr.write(
        f"\nmatteflow: {what}; stopped. Outputs already written are complete (none is partial);"
        " run the same command again to finish the rest.\n"
    )
    sys.stderr.flush()
    _cancel_jobs()
    for child in _children():  # worker processes (--direct_running_mode=multi_processing)
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGTERM)
    os._exit(128 + signum)


def _children() -> list[int]:
    """Ids of this process's child processes (Linux /proc; none found elsewhere)."""
    me, found = os.getpid(), []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:  # ended meanwhile
            continue
        if int(stat.rpartition(")")[2].split()[1]) == me:  # after "pid (comm) state": ppid
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def exit_on_interrupt() -> Iterator[None]:
    """While the block runs, SIGINT exits the process with 130 and SIGTERM with 143."""
    previous = {sig: signal.signal(sig, _stop) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
