"""What becomes of the model's alpha when the source already has transparency, and how
uncertain the model's alpha is (both applied in Segment, read by later stages).

`existing_alpha`: "keep" writes the source's own alpha (the image was cut out already),
"replace" ignores it and writes the model's, "combine" (the default) multiplies the two, so
what the source made transparent stays transparent and the model removes the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EXISTING_ALPHA", "MatteSettings", "apply_existing_alpha", "uncertainty"]

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


def uncertainty(alpha: np.ndarray) -> float:
    """Share of the subject's area in the ambiguous band 0.1 < alpha < 0.9 (1.0 if empty)."""
    ambiguous = np.count_nonzero((alpha > 0.1) & (alpha < 0.9))
    subject = np.count_nonzero(alpha >= 0.9) + ambiguous
    return 1.0 if subject == 0 else ambiguous / subject
