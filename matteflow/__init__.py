"""matteflow: background removal at catalog scale.

From Python: `matteflow.remove(src)` gives an RGBA cutout, `matteflow.Remover` keeps one model
loaded for many images, and `matteflow.RemoveBackground` is the job as a Beam PTransform for
your own pipelines (see pipelines/api.py). Names load on first use, so `matteflow --version`
does not import Beam or torch.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

__version__ = version("matteflow")

if TYPE_CHECKING:
    from matteflow.pipelines.api import RemoveBackground, Remover, remove

__all__ = ["RemoveBackground", "Remover", "__version__", "remove"]

_LAZY = {"RemoveBackground", "Remover", "remove"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module("matteflow.pipelines.api"), name)
    raise AttributeError(f"module 'matteflow' has no attribute {name!r}")
