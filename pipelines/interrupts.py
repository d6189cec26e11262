"""Ctrl-C and SIGTERM during a command: stop at once, with a line that says what was kept.

A local Beam run cannot be stopped from inside (its worker threads do not end on
KeyboardInterrupt: tracebacks, hangs, aborts), so the process exits at the signal, 130 for
SIGINT and 143 for SIGTERM, after sending SIGTERM to its own worker processes. Nothing
partial is left at a final name: every output is written under a temporary name and renamed
into place (transforms/storage.py), and run.json is written last, so a rerun finds the
finished rows current and completes the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

__all__ = ["exit_on_interrupt"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
