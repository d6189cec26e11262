"""The strict command line of `matteflow run`: every flag is checked (ours and Beam's), both
`--flag-name` and `--flag_name` are accepted, the runner must be one Beam knows, and
--manifest may also be one image, a folder of images or a glob the shell expanded.

A mistake raises UsageError (the CLI exits 2) naming the flag and the nearest known one.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions

from matteflow.pipelines.options import beam_flags
from matteflow.transforms.manifest import is_glob
from matteflow.transforms.storage import write_atomic

__all__ = [
    "IMAGE_SUFFIXES",
    "Checked",
    "UsageError",
    "check_args",
    "check_runner",
    "image_manifest",
]

# Files a folder or an expanded glob contributes as images (the formats decode.py reads).
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif",
    ".heic", ".heif", ".avif", ".psd",
)  # fmt: skip
_MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")


class UsageError(ValueError):
    """The command line is wrong (exit 2); the message names the fix."""


def check_runner(name: str) -> str:
    """`name` when Beam knows the runner (any case, "Runner" optional, or a dotted class path);
    UsageError listing the known runners otherwise."""
    known = StandardOptions.KNOWN_RUNNER_NAMES
    lowered = {n.lower() for n in known}
    if "." in name or name.lower() in lowered or f"{name.lower()}runner" in lowered:
        return name
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UsageError(f"--runner {name}: unknown runner{hint}; known: {', '.join(known)}")


def _suggest(flag: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(flag, list(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else "; see `matteflow run --help`"


@dataclass(frozen=True)
class Checked:
    """Beam flags to pass on (normalised spelling, values attached) and the positional words
    that followed --manifest (a glob the shell expanded)."""

    beam_args: tuple[str, ...]
    extra_inputs: tuple[str, ...]


def check_args(args: Sequence[str], ours: Iterable[str] = ()) -> Checked:
    """Check the flags the CLI did not declare against Beam's options.

    `--flag-name` becomes `--flag_name` where only that spelling is known; a flag that takes a
    value takes the next word unless written `--flag=value`. Raises UsageError for an unknown
    flag (with the nearest of `ours` and Beam's), a missing value, or a stray word that is not
    an input file.
    """
    known = beam_flags()
    names = [*ours, *known]
    out: list[str] = []
    inputs: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            inputs.append(arg)
            continue
        flag, eq, value = arg.partition("=")
        underscored = "--" + flag[2:].replace("-", "_")
        if flag not in known and flag.startswith("--") and underscored in known:
            flag = underscored
        action = known.get(flag)
        if action is None:
            raise UsageError(f"unknown flag {flag}{_suggest(flag, names)}")
        if flag == "--runner" and (eq or i < len(args)):
            check_runner(value if eq else args[i])
        if eq or action.nargs == 0:
            out.append(f"{flag}={value}" if eq else flag)
        elif action.nargs == "?":  # an optional value (--force true)
            takes = i < len(args) and args[i].lower() in ("true", "false")
            out.append(f"{flag}={args[i]}" if takes else flag)
            i += takes
        elif i < len(args):
            out += [flag, args[i]]
            i += 1
        else:
            raise UsageError(f"{flag} needs a value")
    return Checked(tuple(out), tuple(inputs))


def _images_under(folder: str) -> list[str]:
    """Image files below a folder (local, gs://, s3://), sorted."""
    pattern = f"{folder.rstrip('/')}/**"
    found = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    return sorted(p for p in found if p.lower().endswith(IMAGE_SUFFIXES))


def _is_folder(uri: str) -> bool:
    """A local folder, or a bucket prefix with objects below it."""
    if "://" not in uri:
        return os.path.isdir(uri)
    return bool(FileSystems.match([f"{uri.rstrip('/')}/*"])[0].metadata_list)


def image_manifest(inputs: Sequence[str], output: str) -> str:
    """The --manifest to run: a manifest or quoted glob as given; otherwise (one image, a folder
    of images, or the files of a glob the shell expanded) a CSV manifest listing them, written
    to `{output}/inputs.csv` (kept with the run's outputs). Raises UsageError when nothing is
    left to run or a word is neither an image nor a folder."""
    if len(inputs) == 1 and (is_glob(inputs[0]) or inputs[0].lower().endswith(_MANIFEST_SUFFIXES)):
        return inputs[0]
    if not output:
        raise UsageError("--output is required")
    uris: list[str] = []
    for item in inputs:
        if item.lower().endswith(IMAGE_SUFFIXES) and FileSystems.exists(item):
            uris.append(item if "://" in item else posixpath.abspath(item))
        elif _is_folder(item):
            uris += [u if "://" in u else posixpath.abspath(u) for u in _images_under(item)]
        else:
            raise UsageError(
                f"--manifest {item}: not a manifest (.csv, .jsonl, .parquet), a glob, an image"
                f" ({', '.join(IMAGE_SUFFIXES)}) or a folder"
            )
    if not uris:
        raise UsageError(f"--manifest {' '.join(inputs)}: no images found")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows([["uri"], *([u] for u in uris)])
    uri = f"{output.rstrip('/')}/inputs.csv"
    write_atomic(uri, buf.getvalue().encode())
    return uri
