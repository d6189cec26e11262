"""`matteflow purge OUT`: the deletion procedure for what a run stored under its output prefix.

Only what matteflow writes is ever deleted: the folders in KINDS and `run.json`, at any depth
(hidden temporaries included); anything else under OUT is left alone, and a prefix with none
of them is refused. Without `--yes` nothing is deleted: the plan is printed (a dry run).
`--older-than 30d` limits it to objects last modified before then; `--keep metrics` (repeatable)
spares a kind. Deleting takes the output's lease (pipelines/lock.py), so no run writes there
meanwhile.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from matteflow.pipelines.lock import OutputLocked, output_lock
from matteflow.transforms.write import OUTPUT_KINDS

__all__ = ["KINDS", "Plan", "PurgeError", "main", "parse_age", "plan", "purge"]

# What a run writes under its prefix (README, Output layout): the output kinds' folders, the
# records beside them, and run.json.
KINDS = (
    *(kind.folder for kind in OUTPUT_KINDS),
    "state",
    "review",
    "reviews",
    "metrics",
    "run.json",
)
_AGE = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


class PurgeError(ValueError):
    """The purge cannot be planned: a bad argument, or OUT is not a matteflow output."""


def parse_age(text: str) -> float:
    """'30d' -> seconds; units d, h, m, s. Raises PurgeError."""
    match = _AGE.fullmatch(text.strip())
    if not match:
        raise PurgeError(f"--older-than {text!r}: expected a number and a unit, e.g. 30d or 12h")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True)
class Plan:
    """The objects a purge deletes, and what it found but keeps (by kind: count)."""

    doomed: tuple[FileMetadata, ...]
    kept: dict[str, int]

    def by_kind(self, output: str) -> dict[str, tuple[int, int]]:
        """kind -> (objects, bytes) of what is deleted."""
        counts: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for meta in self.doomed:
            kind = _kind(output, meta.path)
            counts[kind] += 1
            sizes[kind] += meta.size_in_bytes
        return {kind: (counts[kind], sizes[kind]) for kind in sorted(counts)}


def _kind(output: str, path: str) -> str:
    return path[len(output.rstrip("/")) + 1 :].split("/", 1)[0]


def _match(pattern: str) -> list[FileMetadata]:
    return list(FileSystems.match([pattern])[0].metadata_list)


def plan(
    output: str,
    *,
    older_than_s: float | None = None,
    keep: Iterable[str] = (),
    now: float | None = None,
) -> Plan:
    """What `purge` would delete under output. Objects without a modification time are kept
    when an age is given. Raises PurgeError for an unknown kind or a prefix that holds none of
    matteflow's outputs."""
    prefix = output.rstrip("/")
    keep = set(keep)
    unknown = keep - set(KINDS)
    if unknown:
        raise PurgeError(f"--keep {', '.join(sorted(unknown))}: not one of {', '.join(KINDS)}")
    found: dict[str, list[FileMetadata]] = {}
    for kind in KINDS:
        pattern = f"{prefix}/{kind}" if kind.endswith(".json") else f"{prefix}/{kind}/**"
        found[kind] = [m for m in _match(pattern) if m.path.startswith(f"{prefix}/{kind}")]
    if not any(found.values()):
        raise PurgeError(
            f"{output}: no matteflow outputs there ({', '.join(KINDS)}); nothing to do"
        )
    cutoff = None if older_than_s is None else (now or time.time()) - older_than_s
    doomed: list[FileMetadata] = []
    kept: dict[str, int] = {}
    for kind, metas in found.items():
        old = [m for m in metas if cutoff is None or (m.last_updated_in_seconds or cutoff) < cutoff]
        if kind in keep:
            kept[kind] = len(metas)
        else:
            doomed += old
            if len(metas) > len(old):
                kept[kind] = len(metas) - len(old)
    return Plan(tuple(sorted(doomed, key=lambda m: m.path)), kept)


def purge(output: str, doomed: Iterable[FileMetadata], batch: int = 500) -> int:
    """Delete the planned objects (and, locally, the folders they leave empty); returns the
    count deleted."""
    paths = [m.path for m in doomed]
    for start in range(0, len(paths), batch):
        FileSystems.delete(paths[start : start + batch])
    prefix = output.rstrip("/")
    for kind in KINDS:
        for folder, _, _ in os.walk(f"{prefix}/{kind}", topdown=False):  # local folders only
            if not os.listdir(folder):
                os.rmdir(folder)
    return len(paths)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def main(
    output: str,
    *,
    older_than: str | None = None,
    keep: Iterable[str] = (),
    yes: bool = False,
    force_unlock: bool = False,
) -> int:
    """The purge command: print the plan, delete it with `yes`. Exit codes: 0 done (or
    planned), 2 refused (bad arguments, not an output, a run holds the lease)."""
    try:
        age = None if older_than is None else parse_age(older_than)
        the_plan = plan(output, older_than_s=age, keep=keep)
    except PurgeError as err:
        print(f"matteflow purge: {err}")
        return 2
    total = sum(m.size_in_bytes for m in the_plan.doomed)
    for kind, (count, size) in the_plan.by_kind(output).items():
        print(f"  delete {kind}: {count} objects, {_size(size)}")
    for kind, count in sorted(the_plan.kept.items()):
        if count:
            print(f"  keep   {kind}: {count} objects")
    if not yes:
        print(
            f"matteflow purge: would delete {len(the_plan.doomed)} objects ({_size(total)})"
            f" under {output}; nothing deleted (dry run): add --yes to delete"
        )
        return 0
    try:
        with output_lock(output, force=force_unlock, argv=["purge", output]):
            deleted = purge(output, the_plan.doomed)
    except OutputLocked as err:
        print(f"matteflow purge: {err}")
        return 2
    print(f"matteflow purge: deleted {deleted} objects ({_size(total)}) under {output}")
    return 0
