"""Catalog shadows for write.py: a soft shadow drawn from the (framed) matte, for composites and
as its own layer in the PSD and XCF. Plain numpy/scipy functions on arrays, no Beam.

Lengths are fractions of the subject's height (rows with alpha > 0.5), so one setting suits
every image size. Two kinds:

- `drop`: the subject's silhouette moved by the offset and blurred, as cast by a light in
  front of and above the subject onto a wall behind it;
- `contact`: the subject's foot (its silhouette's lowest CONTACT_BAND of its height, as wide
  as that is in each column) laid as a band of that height centred on the base line, moved
  by the offset and blurred: the soft shadow a product standing on a surface casts where it
  touches it (only the foot's width, never the wider parts above it).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["CONTACT_BAND", "SHADOW_KINDS", "cast_shadow", "check_shadow", "shade"]

SHADOW_KINDS = ("none", "contact", "drop")
CONTACT_BAND = 0.05  # a contact shadow's height (and its foot's), as a share of the subject's


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
        band = max(1, round(CONTACT_BAND * height))
        foot = matte[base - band + 1 : base + 1].max(axis=0)  # coverage of each column
        shadow = np.zeros_like(matte)
        first = base - band // 2  # the band straddles the base line
        shadow[max(first, 0) : max(first + band, 0)] = foot
        shadow = ndimage.shift(shadow, (dy, dx), order=1, cval=0.0)
    else:
        shadow = ndimage.shift(matte, (dy, dx), order=1, cval=0.0)
    if blur > 0:
        shadow = ndimage.gaussian_filter(shadow, blur * height, mode="constant", cval=0.0)
    out: np.ndarray = np.clip(shadow * opacity, 0.0, opacity).astype(np.float32)
    return out


def shade(background: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """`background` (H x W x 3, or one colour for every pixel) darkened by `shadow` (H x W
    opacity of black over it): H x W x 3 float32, in the background's values."""
    base = np.broadcast_to(np.asarray(background, np.float32), (*shadow.shape, 3))
    return base * (1.0 - shadow[..., None])
