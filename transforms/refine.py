"""Refine: the model's upsampled alpha -> a full-resolution matte, its foreground colour and an
uncertainty score.

- `guided`: the fast guided filter (He & Sun 2015) with the image as the guide: linear
  coefficients fitted on a grid of about the model's resolution, applied at full resolution, so
  the alpha's edges follow the image's.
- `matting`: closed-form matting (Levin et al. 2008, pymatting) solved only on the unknown band
  of a trimap drawn from the model's confidence, tile by tile so memory stays bounded.
- `decontaminate`: foreground colours on the edge band (foreground.py), so a cutout over any
  background shows no halo of the old one; a model that predicts foreground colour itself
  (RVM) gives them instead.
- clean-up, off by default, after guided/matting: `remove_islands` (small detached specks of
  subject), `fill_holes` (small enclosed specks of background), `feather` (a Gaussian
  softening of the edge); their effect on eval-dev is in the README.
- `uncertainty` (matte.py; measured in Segment) in [0, 1]: the share of the subject's area
  (alpha > 0.5 plus the ambiguous band 0.1 < alpha < 0.9) that is ambiguous, on the
  model's own output; 1.0 when nothing is found. `needs_review`: uncertainty >= the
  `review_threshold`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from PIL import Image
from scipy import ndimage

from matteflow.transforms.coders import with_record_outputs
from matteflow.transforms.failures import RefineError, classify
from matteflow.transforms.foreground import decontaminate, predicted_foreground
from matteflow.transforms.resize import resize_plane
from matteflow.transforms.types import Clock, Failed, Matte, elapsed_ms

__all__ = [
    "REFINE_MODES",
    "Refine",
    "RefineSettings",
    "clean_up",
    "feather",
    "fill_holes",
    "guided_filter",
    "matting",
    "refine_matte",
    "remove_islands",
    "trimap",
]

REFINE_MODES = ("none", "guided", "matting")
_TILE = 512  # matting tiles: side in pixels, plus _OVERLAP on each side as context
_OVERLAP = 32


@dataclass(frozen=True)
class RefineSettings:
    """How the model's alpha is refined at full resolution, and when a row needs review."""

    refine: str = "none"  # none | guided | matting (none: see bench/refine.py and README)
    decontaminate: bool = True  # estimate foreground colour on the edge band
    decontaminate_side: int = 1024  # its working size's long side, px (0: the full image)
    guided_radius: int = 2  # guided filter window radius, in pixels of the ~1024 px grid
    guided_eps: float = 1e-4  # guided filter regularisation (smaller follows edges harder)
    review_threshold: float = 0.5  # uncertainty at or above this sets needs_review
    # Clean-up, after `refine` (see remove_islands, fill_holes, feather); all off by default.
    remove_islands: bool = False  # drop specks smaller than island_min_area
    island_min_area: float = 0.01  # share of the largest piece of subject's area
    fill_holes: bool = False  # fill enclosed background specks up to hole_max_area
    hole_max_area: float = 0.01  # share of the subject's area
    feather_px: float = 0.0  # edge softening: the Gaussian sigma is feather_px / 2

    def __post_init__(self) -> None:
        if self.refine not in REFINE_MODES:
            raise ValueError(
                f"refine: expected one of {', '.join(REFINE_MODES)}, got {self.refine!r}"
            )
        if not 0.0 <= self.review_threshold <= 1.0:
            raise ValueError(f"review_threshold: expected 0..1, got {self.review_threshold}")
        if not self.guided_eps > 0:  # also refuses NaN
            raise ValueError(f"guided_eps: expected a positive number, got {self.guided_eps}")
        for name in ("island_min_area", "hole_max_area"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected 0..1, got {getattr(self, name)}")
        if self.decontaminate_side < 0:
            raise ValueError(
                f"decontaminate_side: expected 0 or more, got {self.decontaminate_side}"
            )
        if not self.feather_px >= 0.0:
            raise ValueError(f"feather_px: expected 0 or more, got {self.feather_px}")


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    boxed: np.ndarray = ndimage.uniform_filter(x, size=2 * radius + 1, mode="reflect")
    return boxed


def _resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    resized: np.ndarray = resize_plane(x, height, width, Image.Resampling.BILINEAR)
    return resized


def guided_filter(
    rgb: np.ndarray, alpha: np.ndarray, radius: int, eps: float, grid: int = 1024
) -> np.ndarray:
    """Fast colour guided filter of `alpha` (H x W float32) guided by `rgb` (H x W x 3, uint8
    or uint16): coefficients fitted on a grid whose long side is at most `grid`, applied at
    full resolution."""
    height, width = alpha.shape
    scale = min(1.0, grid / max(height, width))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    top = float(np.iinfo(rgb.dtype).max)
    guide = rgb.astype(np.float32) / top
    small = np.stack([_resize(guide[..., c], h, w) for c in range(3)], axis=-1)
    p = _resize(alpha.astype(np.float32), h, w)
    mean_i = [_box(small[..., c], radius) for c in range(3)]
    mean_p = _box(p, radius)
    cov = np.stack([_box(small[..., c] * p, radius) - mean_i[c] * mean_p for c in range(3)], -1)
    var = np.empty((h, w, 3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            v = _box(small[..., i] * small[..., j], radius) - mean_i[i] * mean_i[j]
            var[..., i, j] = var[..., j, i] = v
    var += eps * np.eye(3, dtype=np.float32)
    a = np.linalg.solve(var, cov[..., None])[..., 0]
    b = mean_p - sum(a[..., c] * mean_i[c] for c in range(3))
    out = _resize(_box(b, radius), height, width).copy()
    for c in range(3):
        out += _resize(_box(a[..., c], radius), height, width) * guide[..., c]
    clipped: np.ndarray = np.clip(out, 0.0, 1.0)
    return clipped


def trimap(alpha: np.ndarray, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """0 (background), 1 (foreground) or 0.5 (unknown): the model's confident regions, eroded
    by a band sized to the image (0.3% of its diagonal, at least 1 px)."""
    width = max(1, round(0.003 * float(np.hypot(*alpha.shape))))
    fg = ndimage.binary_erosion(alpha >= high, iterations=width)
    bg = ndimage.binary_erosion(alpha <= low, iterations=width, border_value=1)
    out = np.full(alpha.shape, 0.5, np.float64)
    out[fg], out[bg] = 1.0, 0.0
    return out


def _tiles(
    shape: tuple[int, int], context: int = _OVERLAP
) -> Iterator[tuple[slice, slice, slice, slice]]:
    """(rows, cols) of each tile with `context` pixels around it, and the tile's place inside
    that window."""
    height, width = shape
    for top in range(0, height, _TILE):
        for left in range(0, width, _TILE):
            r0, c0 = max(0, top - context), max(0, left - context)
            r1 = min(height, top + _TILE + context)
            c1 = min(width, left + _TILE + context)
            inner_r = slice(top - r0, min(top + _TILE, height) - r0)
            inner_c = slice(left - c0, min(left + _TILE, width) - c0)
            yield slice(r0, r1), slice(c0, c1), inner_r, inner_c


def matting(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Closed-form matting on the unknown band of `trimap(alpha)`, tile by tile; tiles with
    no unknown pixels, or without both foreground and background, keep the model's alpha."""
    import pymatting  # numba-compiled on first import (cached); only this mode needs it

    tri = trimap(alpha)
    guide = rgb.astype(np.float64) / float(np.iinfo(rgb.dtype).max)
    out = alpha.astype(np.float32).copy()
    for rows, cols, inner_r, inner_c in _tiles(alpha.shape):
        t = tri[rows, cols]
        if not ((t == 0.5).any() and (t == 0.0).any() and (t == 1.0).any()):
            continue
        solved = pymatting.estimate_alpha_cf(guide[rows, cols], t)
        target = out[rows, cols]
        target[inner_r, inner_c] = np.clip(solved[inner_r, inner_c], 0.0, 1.0)
    return out


# Clean-up works on pieces: the connected regions (8-neighbours) of a loose mask, so each piece
# takes its soft fringe with it, sized by the confident pixels (alpha past 0.5) inside it.
_LOOSE = 0.05
_EIGHT = np.ones((3, 3), bool)


def _pieces(region: np.ndarray, core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels of `region`'s pieces, 0 outside; the count of `core` pixels in each, [0] = 0)."""
    labels, count = ndimage.label(region, structure=_EIGHT)
    return labels, np.bincount(labels[core], minlength=count + 1)


def remove_islands(alpha: np.ndarray, min_area: float) -> np.ndarray:
    """`alpha` with every piece of subject (a connected region of alpha > 0.05) whose
    confident area (pixels over 0.5) is under `min_area` times the largest piece's set to 0;
    the largest piece is always kept. Same shape and dtype."""
    labels, areas = _pieces(alpha > _LOOSE, alpha > 0.5)
    if areas.size <= 2:  # no piece, or one
        return alpha
    small = areas < min_area * areas[1:].max()
    small[0] = False
    out = alpha.copy()
    out[small[labels]] = 0
    return out


def fill_holes(alpha: np.ndarray, max_area: float) -> np.ndarray:
    """`alpha` with every hole (a connected region of alpha < 0.95 that does not touch the
    image border) whose clear area (pixels under 0.5) is at most `max_area` times the
    subject's (pixels over 0.5) set to 1. Same shape and dtype."""
    solid = alpha >= 1.0 - _LOOSE
    enclosed = ndimage.binary_fill_holes(solid) & ~solid
    labels, areas = _pieces(enclosed, alpha < 0.5)
    fill = areas <= max_area * np.count_nonzero(alpha > 0.5)
    fill[0] = False
    out = alpha.copy()
    out[fill[labels]] = 1
    return out


def feather(alpha: np.ndarray, px: float) -> np.ndarray:
    """`alpha` blurred by a Gaussian of sigma `px` / 2 (edges extended outward): a hard edge
    becomes Phi(d / sigma) at signed distance d, rising from 16% to 84% over `px` pixels.
    float32 in [0, 1]; unchanged when `px` is 0."""
    if px <= 0:
        return alpha
    soft = ndimage.gaussian_filter(alpha.astype(np.float32), px / 2, mode="nearest")
    clipped: np.ndarray = np.clip(soft, 0.0, 1.0)
    return clipped


def clean_up(alpha: np.ndarray, settings: RefineSettings) -> np.ndarray:
    """The clean-up `settings` ask for, in order: remove_islands, fill_holes, feather."""
    if settings.remove_islands:
        alpha = remove_islands(alpha, settings.island_min_area)
    if settings.fill_holes:
        alpha = fill_holes(alpha, settings.hole_max_area)
    return feather(alpha, settings.feather_px)


def refine_matte(matte: Matte, settings: RefineSettings, clock: Clock = time.perf_counter) -> Matte:
    """The matte with its alpha refined per `settings`, its foreground colour and needs_review
    set; raises RefineError (shape_mismatch) when the alpha does not fit the image."""
    s = settings
    start = clock()
    image = matte.image
    colour = image.rgb16 if image.rgb16 is not None else image.rgb
    alpha = matte.alpha
    if alpha.shape != colour.shape[:2]:
        raise RefineError(
            f"{image.task.source_uri}: alpha {alpha.shape[1]}x{alpha.shape[0]} does not"
            f" match the {image.width}x{image.height} image",
            code="shape_mismatch",
        )
    if s.refine == "guided":
        alpha = guided_filter(colour, alpha, s.guided_radius, s.guided_eps)
    elif s.refine == "matting":
        alpha = matting(colour, alpha)
    alpha = clean_up(alpha, s)
    foreground = None
    if s.decontaminate and matte.model_foreground is not None:
        foreground = predicted_foreground(colour, alpha, matte.model_foreground)
    elif s.decontaminate:
        foreground = decontaminate(colour, alpha, s.decontaminate_side)
    return dataclasses.replace(
        matte,
        alpha=alpha,
        foreground=foreground,
        needs_review=matte.uncertainty >= s.review_threshold,
        timings=matte.timings.add(refine_ms=elapsed_ms(start, clock())),
    )


class _RefineFn(beam.DoFn):
    def __init__(self, settings: RefineSettings, clock: Clock = time.perf_counter) -> None:
        self._settings = settings
        self._clock = clock

    def process(self, matte: Matte) -> Iterator[Matte | beam.pvalue.TaggedOutput[str, Failed]]:
        try:
            refined = refine_matte(matte, self._settings, self._clock)
        except Exception as err:  # classified errors pass through; the unforeseen get classified
            failure = classify(err, "refine", matte.image.task.source_uri)
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(matte.image.task, failure))
            return
        yield refined


class Refine(beam.PTransform[beam.pvalue.PCollection[Matte], beam.pvalue.DoOutputsTuple]):
    """Matte -> Matte with the refined alpha, foreground colour and needs_review; failures ->
    tag "failures"."""

    def __init__(self, settings: RefineSettings, clock: Clock = time.perf_counter) -> None:
        super().__init__()
        self._settings = settings
        self._clock = clock

    def expand(self, mattes: beam.pvalue.PCollection[Matte]) -> beam.pvalue.DoOutputsTuple:
        fn = _RefineFn(self._settings, self._clock)
        typed = with_record_outputs(beam.ParDo(fn), Matte, failures=Failed)
        outputs: beam.pvalue.DoOutputsTuple = mattes | "Refine" >> typed
        return outputs
