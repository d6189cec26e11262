"""Catalog shadows for write.py: a soft shadow drawn from the (framed) matte, for composites and
as its own layer in the PSD and XCF. Plain numpy/scipy functions on arrays, no Beam.

Lengths are fractions of the subject's height (rows with alpha > 0.5), so one setting suits
every image size. Two kinds:

- `drop`: the subject's silhouette moved by the offset and blurred, as cast by a light in
  front of and above the subject onto a wall behind it;
- `contact`: the silhouette squashed to CONTACT_SQUASH of its height and centred on the
  subject's base line, moved by the offset and blurred: the soft shadow a product standing
  on a surface casts where it touches it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["CONTACT_SQUASH", "SHADOW_KINDS", "cast_shadow", "check_shadow", "shade"]

SHADOW_KINDS = ("none", "contact", "drop")
CONTACT_SQUASH = 0.1  # a contact shadow's height, as a share of the subject's


def check_shadow(kind: str, opacity: float, blur: float) -> None:
    """Raise ValueError naming the setting unless kind, opacity (0..1) and blur (>= 0) are
    valid."""
    if kind not in SHADOW_KINDS:
        raise ValueError(f"shadow: expected one of {', '.join(SHADOW_KINDS)}, got {kind!r}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"shadow_opacity: expected 0..1, got {opacity}")
    if not blur >= 0.0:  # also refuses NaN
        raise ValueError(f"shadow_blur: expected 0 or more, got {blur}")


def cast_shadow(
    alpha: np.ndarray,
    kind: str,
    *,
    opacity: float,
    blur: float,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The shadow's opacity, H x W float32 in [0, opacity], for a subject with `alpha` (H x W
    float in [0, 1]) on the same canvas. `blur` is the Gaussian sigma and `offset` (right,
    down) the shift, both in subject heights. What falls outside the canvas is cut off. All
    zeros for kind "none" or a matte with no subject (nothing above 0.5).
    """
    matte = np.clip(alpha.astype(np.float32), 0.0, 1.0)
    rows = np.flatnonzero((matte > 0.5).any(axis=1))
    if kind == "none" or rows.size == 0:
        return np.zeros(matte.shape, np.float32)
    top, base = int(rows[0]), int(rows[-1])
    height = base - top + 1
    dx, dy = offset[0] * height, offset[1] * height
    if kind == "contact":
        squashed = CONTACT_SQUASH * height
        # Output row y samples source row base + (y - base - squashed / 2) / squash: the base
        # line stays in place, the silhouette above it shrinks towards it, then all of it
        # moves down by half its new height so that it straddles the base.
        scale = np.array([1.0 / CONTACT_SQUASH, 1.0])
        shift = np.array([base - (base + squashed / 2 + dy) / CONTACT_SQUASH, -dx])
        shadow = ndimage.affine_transform(matte, scale, shift, order=1, cval=0.0)
    else:
        shadow = ndimage.shift(matte, (dy, dx), order=1, cval=0.0)
    if blur > 0:
        shadow = ndimage.gaussian_filter(shadow, blur * height, mode="constant", cval=0.0)
    return np.clip(shadow * opacity, 0.0, opacity).astype(np.float32)


def shade(background: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """`background` (H x W x 3, or one colour for every pixel) darkened by `shadow` (H x W
    opacity of black over it): H x W x 3 float32, in the background's values."""
    base = np.broadcast_to(np.asarray(background, np.float32), (*shadow.shape, 3))
    return base * (1.0 - shadow[..., None])
