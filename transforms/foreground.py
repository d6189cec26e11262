"""Foreground colour on the edge band, where alpha mixes the subject's colour with the old
background's: estimated (`decontaminate`) or taken from a model that predicts it
(`predicted_foreground`, RVM's fgr). A cutout over any background then shows no halo of the
old one. Pixels outside the band keep their colour.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from matteflow.transforms.resize import resize_plane

__all__ = ["decontaminate", "predicted_foreground"]

# The band: 0 < alpha < 1 by more than half an 8-bit step (both bounds exact in float32).
_LOW, _HIGH = 1.0 / 512, 1.0 - 1.0 / 512


def _band(alpha: np.ndarray) -> np.ndarray:
    """Where 0 < alpha < 1 (by more than half an 8-bit step): the pixels that mix colours."""
    band: np.ndarray = (alpha > _LOW) & (alpha < _HIGH)
    return band


def predicted_foreground(rgb: np.ndarray, alpha: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Foreground colours (same dtype as `rgb`) taken from the model's own prediction (S x S x 3
    float in [0, 1] at any size, e.g. RVM's fgr; bilinear to the image's size) where
    0 < alpha < 1; other pixels keep `rgb`."""
    band = _band(alpha)
    height, width = alpha.shape
    top = float(np.iinfo(rgb.dtype).max)
    out = rgb.copy()
    for c in range(3):
        plane = resize_plane(predicted[..., c], height, width, Image.Resampling.BILINEAR)
        out[..., c][band] = np.rint(np.clip(plane[band], 0.0, 1.0) * top).astype(rgb.dtype)
    return out


def decontaminate(rgb: np.ndarray, alpha: np.ndarray, side: int = 1024) -> np.ndarray:
    """Foreground colours (same dtype as `rgb`) where 0 < alpha < 1; other pixels keep `rgb`.

    pymatting's multi-level estimator solves foreground F0 and background B0 on a working copy
    whose long side is at most `side` px (area-averaged; 0: the full image). Each edge-band
    pixel then takes F0 and B0 sampled bilinearly, corrected by its own colour I as blur fusion
    does (Forte & Pitie 2021): F = F0 + alpha (I - alpha F0 - (1 - alpha) B0), in one compiled
    pass over the image. The cost is that of the working copy plus one read of the image;
    bench/foreground.py measures the error by size."""
    import pymatting  # numba-compiled on first import; only decontamination and matting need it

    if alpha.size < 2 or not _band(alpha).any():  # one pixel: nothing to estimate it from
        return rgb
    height, width = alpha.shape
    scale = min(1.0, side / max(height, width)) if side else 1.0
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    small_alpha = resize_plane(alpha, h, w, Image.Resampling.BOX).astype(np.float32)
    # float32 throughout: pymatting's estimator computes in float32
    fg, bg = pymatting.estimate_foreground_ml(
        _working_copy(rgb, h, w), small_alpha, return_background=True
    )
    grid = np.concatenate([fg, bg], axis=-1).astype(np.float32)
    out = rgb.copy()
    _compiled_correction()(
        rgb,
        alpha.astype(np.float32, copy=False),
        grid,
        *_neighbours(height, h),
        *_neighbours(width, w),
        float(np.iinfo(rgb.dtype).max),
        out,
    )
    return out


def _working_copy(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """`rgb` area-averaged (each working pixel the mean of what it covers) to height x width:
    H x W x 3 float32 in [0, 1]."""
    box = Image.Resampling.BOX
    if rgb.dtype == np.uint8:  # Pillow averages 8-bit RGB in one pass
        small = np.asarray(Image.fromarray(rgb).resize((width, height), box), np.float32)
    else:
        planes = [
            resize_plane(rgb[..., c].astype(np.float32), height, width, box) for c in range(3)
        ]
        small = np.stack(planes, axis=-1)
    scaled: np.ndarray = small / np.float32(np.iinfo(rgb.dtype).max)
    return scaled


def _neighbours(full: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `full` pixels along an axis: the nearest of `size` grid cells at or before
    its centre, the step (0 or 1) to the next one (clamped at the ends), and that one's weight:
    bilinear sampling with pixel centres aligned, as Pillow's upsampling does."""
    at = np.clip((np.arange(full) + 0.5) * (size / full) - 0.5, 0.0, size - 1.0)
    low = at.astype(np.int32)  # floor: `at` is not negative
    return low, (low < size - 1).astype(np.int32), (at - low).astype(np.float32)


def _correct_band(
    rgb: np.ndarray,
    alpha: np.ndarray,
    grid: np.ndarray,
    row: np.ndarray,
    row_step: np.ndarray,
    row_weight: np.ndarray,
    col: np.ndarray,
    col_step: np.ndarray,
    col_weight: np.ndarray,
    top: float,
    out: np.ndarray,
) -> None:
    """Blur fusion's correction, per edge-band pixel, written into `out`: F0 (grid channels
    0-2) and B0 (3-5) sampled bilinearly at the pixel (its grid cell, step and weight per axis
    from `_neighbours`), then F = F0 + a (I - a F0 - (1 - a) B0), clipped, on `top`'s scale.
    Compiled by numba (`_compiled_correction`): no temporaries, one pass over the image."""
    scale = np.float32(1.0 / top)
    for y in range(alpha.shape[0]):
        r0, wr = row[y], row_weight[y]
        r1 = r0 + row_step[y]
        for x in range(alpha.shape[1]):
            a = alpha[y, x]
            if a <= _LOW or a >= _HIGH:
                continue
            c0, wc = col[x], col_weight[x]
            c1 = c0 + col_step[x]
            for ch in range(3):
                f_top = grid[r0, c0, ch] + wc * (grid[r0, c1, ch] - grid[r0, c0, ch])
                f_bot = grid[r1, c0, ch] + wc * (grid[r1, c1, ch] - grid[r1, c0, ch])
                f0 = f_top + wr * (f_bot - f_top)
                b_top = grid[r0, c0, ch + 3] + wc * (grid[r0, c1, ch + 3] - grid[r0, c0, ch + 3])
                b_bot = grid[r1, c0, ch + 3] + wc * (grid[r1, c1, ch + 3] - grid[r1, c0, ch + 3])
                b0 = b_top + wr * (b_bot - b_top)
                f = f0 + a * (rgb[y, x, ch] * scale - a * f0 - (1 - a) * b0)
                out[y, x, ch] = np.rint(min(max(f, 0.0), 1.0) * top)


@functools.cache
def _compiled_correction() -> Callable[..., Any]:
    """`_correct_band` compiled by numba on first use (machine code cached on disk beside this
    module, as pymatting's is), releasing the GIL so the run's worker threads overlap."""
    import numba  # pymatting's compiler: loaded with it, and only when decontamination runs

    compiled: Callable[..., Any] = numba.njit(cache=True, nogil=True)(_correct_band)
    return compiled
