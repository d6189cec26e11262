"""One batch run at a time per output prefix: a lease object `{output}/.matteflow-lock.json`.

The lease is created only if none is there, atomically where the storage allows it: an
O_EXCL file locally, `if_generation_match=0` in GCS, `If-None-Match: *` in S3. It records who
holds it (user, host, pid, start time, run id, the command with secrets removed) and is
removed when the run ends, whether it succeeded or failed. A second run on the same output
stops with `OutputLocked`, naming the holder.

Stale leases: a lease whose holder ran on this host, in this pid namespace (containers that
share a host name do not see each other's pids), and whose pid is no longer alive is taken over
(with a warning), after re-reading it to make sure it did not change meanwhile. Any other
lease (another host, a killed container) stays until its run ends or an operator who has made
sure that run is gone passes `--force_unlock`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from matteflow.pipelines.audit import identity, redact_command
from matteflow.transforms.failures import NotFound
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.storage import create_exclusive, delete, read_bytes

__all__ = [
    "LOCK_NAME",
    "Holder",
    "OutputLocked",
    "acquire",
    "lock_uri",
    "output_lock",
    "pid_namespace",
    "release",
]

LOCK_NAME = OutputLayout("out").lock.rsplit("/", 1)[-1]  # .matteflow-lock.json
_LOG = logging.getLogger(__name__)


class OutputLocked(RuntimeError):
    """Another run holds the output prefix's lease."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease."""

    run_id: str
    user: str
    host: str
    pid: int
    started_at: str
    command: tuple[str, ...] = ()
    pid_namespace: str = ""  # where `pid` means something: Linux's /proc/self/ns/pid

    def describe(self) -> str:
        """'user@host pid N, since T (run R)'."""
        return (
            f"{self.user}@{self.host} pid {self.pid}, since {self.started_at} (run {self.run_id})"
        )

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        """The holder a lease names; None when it is not a lease we wrote."""
        try:
            record = json.loads(data)
            return cls(
                run_id=str(record["run_id"]),
                user=str(record["user"]),
                host=str(record["host"]),
                pid=int(record["pid"]),
                started_at=str(record["started_at"]),
                command=tuple(str(a) for a in record.get("command", ())),
                pid_namespace=str(record.get("pid_namespace", "")),
            )
        except (ValueError, TypeError, KeyError):
            return None


def lock_uri(output: str) -> str:
    """Where the lease of an output prefix lives."""
    uri: str = OutputLayout(output).lock
    return uri


def _read(uri: str) -> bytes | None:
    try:
        data: bytes = read_bytes(uri)
    except NotFound:
        return None
    return data


def _alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def pid_namespace() -> str:
    """This process's pid namespace ("pid:[4026531836]"), "" where there is no /proc."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _stale(holder: Holder | None) -> bool:
    """A lease nobody can be holding: unreadable, or its holder ran here (same host and pid
    namespace) and is gone."""
    if holder is None:
        return True
    here = holder.host == socket.gethostname() and holder.pid_namespace == pid_namespace()
    return here and bool(holder.pid_namespace) and not _alive(holder.pid)


def _remove_if_unchanged(uri: str, data: bytes) -> None:
    """Remove the lease at uri if it still holds `data` (another run may have replaced it)."""
    if _read(uri) == data:
        delete(uri)


def acquire(
    output: str, *, force: bool = False, argv: list[str] | None = None, kms_key: str = ""
) -> Holder:
    """Take the lease of `output` for this process; returns the holder record written.

    A stale lease (see the module docstring) is taken over; with `force` any lease is. Raises
    OutputLocked naming the holder when another run holds it.
    """
    uri = lock_uri(output)
    me = Holder(
        run_id=uuid.uuid4().hex,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        command=tuple(redact_command(argv or [])),
        pid_namespace=pid_namespace(),
        **identity(),
    )
    data = json.dumps(asdict(me), indent=2).encode()
    for _ in range(2):  # once more after removing a stale or forced lease
        # Read first: the holder's name for the message, and a second line of defence where a
        # store ignores the precondition (the GCS emulator does).
        existing = _read(uri)
        if existing is None:
            if create_exclusive(uri, data, kms_key=kms_key):
                return me
            existing = _read(uri)
            if existing is None:  # released meanwhile
                continue
        holder = Holder.parse(existing)
        if holder is not None and holder.run_id == me.run_id:  # ours: a retried create
            return me
        who = holder.describe() if holder else "an unreadable lease"
        if not (force or _stale(holder)):
            raise OutputLocked(
                f"output {output} is in use by another run: {who}. Wait for it to end; if it"
                f" is gone (its process or machine died), rerun with --force_unlock ({uri})"
            )
        reason = "--force_unlock" if force else "its process is gone"
        _LOG.warning("%s: taking over the lease of %s (%s)", output, who, reason)
        _remove_if_unchanged(uri, existing)
    raise OutputLocked(f"output {output}: another run took the lease meanwhile ({uri})")


def release(output: str, holder: Holder) -> None:
    """Remove the lease of `output` if `holder` still holds it (a forced takeover may have
    replaced it: then it is left to its new holder)."""
    uri = lock_uri(output)
    data = _read(uri)
    current = Holder.parse(data) if data is not None else None
    if current is not None and current.run_id == holder.run_id:
        delete(uri)
    else:
        _LOG.warning("%s: the lease is no longer ours; left as it is", output)


@contextmanager
def output_lock(
    output: str, *, force: bool = False, argv: list[str] | None = None, kms_key: str = ""
) -> Iterator[Holder]:
    """Hold the lease of `output` for the block, released on the way out (also on errors)."""
    holder = acquire(output, force=force, argv=argv, kms_key=kms_key)
    try:
        yield holder
    finally:
        release(output, holder)
