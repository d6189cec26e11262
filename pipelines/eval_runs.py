"""Eval run bookkeeping: names from effective settings, refusing to clobber a run, model lists.

A run's default name joins its effective model (the --model given, else the profile's), the
refinement given, the profile file's stem and each --set value, e.g.
`u2netp-guided-fast-outputs.cutout_format-webp`. An existing run (metrics under
`{output}/runs/{name}/metrics/`) is refused unless `replace`, which deletes it first.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems

from matteflow.models.registry import get_spec
from matteflow.pipelines.config import ConfigError, load_config
from matteflow.pipelines.report import Sample

__all__ = ["RunExists", "check_slices", "claim", "default_name", "model_list", "run_name"]


class RunExists(ValueError):
    """The run name is taken and --replace was not given."""


def run_name(text: str) -> str:
    """A run's folder name: letters, digits, '.', '_' and '-' only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    if not name:
        raise ValueError(f"run name {text!r} has no usable characters")
    return name


def default_name(
    model: str | None, profile: str | None, refine: str | None, settings: Sequence[str]
) -> str:
    """The name of a run with these settings (see the module docstring)."""
    if not model:
        try:
            model = load_config(profile, settings=list(settings)).model.name
        except ConfigError:
            model = "default"  # the run itself reports the bad profile
    parts = [model, refine or ""]
    if profile:
        parts.append(posixpath.splitext(posixpath.basename(profile))[0])
    parts += list(settings)
    return run_name("-".join(p for p in parts if p))


def model_list(models: str | None, model: str | None) -> list[str | None]:
    """--models a,b,c as a list (no duplicates), else [--model] (None: the profile's); every
    name must be registered (RegistryError, a ValueError, names the known ones)."""
    if models is None:
        names: list[str | None] = [model]
    else:
        names = [m.strip() for m in models.split(",") if m.strip()]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"--models {models!r}: expected distinct names separated by commas")
        if model:
            raise ValueError("give --model or --models, not both")
    for name in names:
        if name:
            get_spec(name)
    return names


def claim(output: str, name: str, replace: bool) -> None:
    """Make `{output}/runs/{name}` available: raise RunExists when it holds metrics, unless
    `replace`, which deletes the run's files."""
    prefix = f"{output.rstrip('/')}/runs/{name}"
    found = FileSystems.match([f"{prefix}/metrics/*"])[0].metadata_list
    if not found:
        return
    if not replace:
        raise RunExists(f"run {name!r} exists under {output}/runs; pass --replace or --name")
    FileSystems.delete([f"{prefix}/"])


def check_slices(samples: Sequence[Sample], columns: Sequence[str]) -> None:
    """Raise ValueError for a --slice-by column that no manifest row has (category always)."""
    present = {"category"} | {k for s in samples for k, _ in s.columns}
    missing = [c for c in columns if c not in present]
    if missing:
        known = ", ".join(sorted(present))
        raise ValueError(f"--slice-by {', '.join(missing)}: no such manifest column ({known})")
