"""What becomes of the model's alpha when the source already has transparency.

`existing_alpha`: "keep" writes the source's own alpha (the image was cut out already),
"replace" ignores it and writes the model's, "combine" (the default) multiplies the two, so
what the source made transparent stays transparent and the model removes the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EXISTING_ALPHA", "MatteSettings", "apply_existing_alpha"]

EXISTING_ALPHA = ("keep", "replace", "combine")


@dataclass(frozen=True)
class MatteSettings:
    """How the final alpha is made from the model's."""

    existing_alpha: str = "combine"  # keep | replace | combine (see the module docstring)

    def __post_init__(self) -> None:
        if self.existing_alpha not in EXISTING_ALPHA:
            raise ValueError(
                f"existing_alpha: expected one of {', '.join(EXISTING_ALPHA)},"
                f" got {self.existing_alpha!r}"
            )


def apply_existing_alpha(
    alpha: np.ndarray, source_alpha: np.ndarray | None, mode: str
) -> np.ndarray:
    """H x W float32 model alpha and the source's uint8/uint16 alpha (or None) -> final alpha."""
    if source_alpha is None or mode == "replace":
        return alpha
    source = source_alpha.astype(np.float32) / float(np.iinfo(source_alpha.dtype).max)
    return source if mode == "keep" else alpha * source
