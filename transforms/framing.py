"""Catalog framing of a cutout before it is written: crop to the subject with a margin, or place
it on a fixed canvas with padding and alignment, then cap the output size.

Framing never cuts into the subject: every pixel with alpha > threshold lands in the output.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from matteflow.transforms.resize import resize_plane

__all__ = ["MAX_CANVAS_PIXELS", "FramingSettings", "check_framing", "frame", "subject_box"]

_MODES = ("none", "crop", "canvas")
# The largest canvas, in pixels: the default decode.max_pixels, so that framing never makes an
# image larger than the largest source the job decodes (a per-row canvas=12000x12000 on a tiny
# source would otherwise allocate 144 MP, about 1.7 GB). A larger one fails the row as
# manifest/bad_setting before anything is read, or the run's config as a ConfigError.
MAX_CANVAS_PIXELS = 100_000_000
_ALIGNS = ("center", "bottom", "top")
# Whole pixels ("40") or a percentage that may have decimals ("5%", "2.5%"); never negative.
_LENGTH = re.compile(r"(?P<px>\d+)|(?P<pct>\d+(?:\.\d+)?)%")


@dataclass(frozen=True)
class FramingSettings:
    """Where the subject sits in the output image."""

    mode: str = "none"  # none | crop | canvas
    margin: str = "0"  # crop: space kept around the subject box, "40" (px) or "5%" (longer side)
    canvas_width: int = 2000  # canvas: output size in px
    canvas_height: int = 2000
    padding: str = "5%"  # canvas: space kept free at each edge, px or % of the shorter side
    align: str = "center"  # canvas: center | bottom | top (bottom: rests on the bottom padding)
    upscale: bool = False  # canvas: enlarge a subject smaller than the free area
    max_size: int = 0  # any mode: longest output side in px; 0 = no limit (shrinks only)
    threshold: float = 0.5 / 255  # alpha above this is subject: anything visible in 8 bits


@dataclass(frozen=True)
class _Layout:
    """Output size and the half-open region the subject box is scaled into."""

    height: int
    width: int
    top: int
    left: int
    bottom: int
    right: int


def _round(x: float) -> int:
    """Round half up (sizes and offsets are non-negative; Python's round() goes to even)."""
    return math.floor(x + 0.5)


def _length(text: str, name: str) -> tuple[float, bool]:
    """'40' -> (40, False); '5%' -> (5, True); ValueError naming the field otherwise."""
    match = _LENGTH.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"framing.{name}: expected whole pixels like '40' or a percentage like '5%', "
            f"got {text!r}"
        )
    if match["px"] is not None:
        return float(match["px"]), False
    return float(match["pct"]), True


def _length_px(text: str, name: str, reference: int) -> int:
    """The length in pixels; a percentage is of `reference` pixels."""
    value, percent = _length(text, name)
    return _round(value * reference / 100.0) if percent else int(value)


def check_framing(settings: FramingSettings) -> None:
    """Raise ValueError naming the first invalid field; every field is checked in every mode."""
    if settings.mode not in _MODES:
        raise ValueError(
            f"framing.mode: expected one of {', '.join(_MODES)}, got {settings.mode!r}"
        )
    if settings.align not in _ALIGNS:
        raise ValueError(
            f"framing.align: expected one of {', '.join(_ALIGNS)}, got {settings.align!r}"
        )
    _length(settings.margin, "margin")
    for name in ("canvas_width", "canvas_height"):
        size = getattr(settings, name)
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"framing.{name}: expected a positive integer, got {size!r}")
    canvas_pixels = settings.canvas_width * settings.canvas_height
    if canvas_pixels > MAX_CANVAS_PIXELS:
        raise ValueError(
            f"framing.canvas: {settings.canvas_width}x{settings.canvas_height} is"
            f" {canvas_pixels / 1e6:.0f} MP, over the {MAX_CANVAS_PIXELS / 1e6:.0f} MP limit"
        )
    shorter = min(settings.canvas_width, settings.canvas_height)
    pad = _length_px(settings.padding, "padding", shorter)
    if shorter - 2 * pad < 1:
        raise ValueError(
            f"framing.padding: {settings.padding!r} is {pad} px at each edge and leaves no room "
            f"on a {settings.canvas_width}x{settings.canvas_height} canvas; use less padding"
        )
    size = settings.max_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(
            f"framing.max_size: expected 0 (no limit) or a positive integer, got {size!r}"
        )
    if not 0.0 <= settings.threshold < 1.0:
        raise ValueError(
            f"framing.threshold: expected a value in [0, 1), got {settings.threshold!r}"
        )


def subject_box(alpha: np.ndarray, threshold: float) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) half-open box of alpha > threshold; None without a subject."""
    mask = alpha > threshold
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _fit(height: int, width: int, max_size: int) -> tuple[int, int]:
    """The size with the longest side at most max_size (0 = no limit), aspect kept, >= 1 px."""
    longest = max(height, width)
    if max_size == 0 or longest <= max_size:
        return height, width
    k = max_size / longest
    return max(1, _round(height * k)), max(1, _round(width * k))


def _scale_span(start: int, stop: int, k: float, size: int) -> tuple[int, int]:
    """[start, stop) scaled by k, inside [0, size) and at least 1 px long."""
    first = min(_round(start * k), size - 1)
    return first, min(size, max(first + 1, _round(stop * k)))


def _resize(
    rgb: np.ndarray, alpha: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resize premultiplied colour and alpha, then un-premultiply; returns the inputs unchanged
    when the size already matches, so unscaled pixels are copied exactly."""
    if alpha.shape == (height, width):
        return rgb, alpha
    top = np.iinfo(rgb.dtype).max
    ringing = resize_plane(alpha, height, width)  # Lanczos may overshoot [0, 1] slightly
    visible = ringing > 0
    out_rgb = np.empty((height, width, 3), rgb.dtype)
    for c in range(3):
        premultiplied = resize_plane(rgb[..., c].astype(np.float32) * alpha, height, width)
        # Dividing by the unclipped alpha keeps a flat colour flat where alpha overshoots 1.
        colour = np.divide(premultiplied, ringing, out=np.zeros_like(ringing), where=visible)
        out_rgb[..., c] = np.clip(np.rint(colour), 0, top)
    return out_rgb, np.clip(ringing, 0.0, 1.0)


def _canvas_layout(box_height: int, box_width: int, settings: FramingSettings) -> _Layout:
    """Where a box_height x box_width subject goes on the canvas, max_size already applied."""
    ch, cw = settings.canvas_height, settings.canvas_width
    pad = _length_px(settings.padding, "padding", min(ch, cw))
    free_h, free_w = ch - 2 * pad, cw - 2 * pad
    scale = min(free_h / box_height, free_w / box_width)
    if not settings.upscale:
        scale = min(scale, 1.0)
    # Clamping to the free area absorbs float error, so the region never crosses the padding.
    h = min(free_h, max(1, _round(box_height * scale)))
    w = min(free_w, max(1, _round(box_width * scale)))
    left = pad + (free_w - w) // 2
    top = {"top": pad, "center": pad + (free_h - h) // 2, "bottom": ch - pad - h}[settings.align]
    out_h, out_w = _fit(ch, cw, settings.max_size)
    if (out_h, out_w) == (ch, cw):
        return _Layout(ch, cw, top, left, top + h, left + w)
    # Scale the layout rather than the composed canvas, so the subject is resampled once.
    top, bottom = _scale_span(top, top + h, out_h / ch, out_h)
    left, right = _scale_span(left, left + w, out_w / cw, out_w)
    return _Layout(out_h, out_w, top, left, bottom, right)


def _check_pixels(rgb: np.ndarray, alpha: np.ndarray) -> None:
    if rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frame: rgb must be uint8 or uint16, got {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or alpha.shape != rgb.shape[:2]:
        raise ValueError(
            f"frame: expected rgb H x W x 3 and alpha H x W, got {rgb.shape} and {alpha.shape}"
        )


def frame(
    rgb: np.ndarray, alpha: np.ndarray, settings: FramingSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the framing: returns (rgb, alpha) of the output image.

    rgb is H x W x 3 uint8 or uint16 and comes back in the same dtype; alpha is H x W in [0, 1]
    and comes back float32. Unscaled outputs may share memory with the inputs. Raises ValueError
    for invalid settings (see check_framing) or mismatched arrays.
    """
    check_framing(settings)
    _check_pixels(rgb, alpha)
    alpha = alpha.astype(np.float32, copy=False)
    box = subject_box(alpha, settings.threshold)
    if settings.mode == "canvas":
        top, left, bottom, right = box if box is not None else (0, 0, *alpha.shape)
        layout = _canvas_layout(bottom - top, right - left, settings)
        piece_rgb, piece_alpha = _resize(
            rgb[top:bottom, left:right],
            alpha[top:bottom, left:right],
            layout.bottom - layout.top,
            layout.right - layout.left,
        )
        out_rgb = np.zeros((layout.height, layout.width, 3), rgb.dtype)
        out_alpha = np.zeros((layout.height, layout.width), np.float32)
        out_rgb[layout.top : layout.bottom, layout.left : layout.right] = piece_rgb
        out_alpha[layout.top : layout.bottom, layout.left : layout.right] = piece_alpha
        return out_rgb, out_alpha
    if settings.mode == "crop" and box is not None:
        top, left, bottom, right = box
        m = _length_px(settings.margin, "margin", max(bottom - top, right - left))
        h, w = alpha.shape
        top, left, bottom, right = (
            max(0, top - m),
            max(0, left - m),
            min(h, bottom + m),
            min(w, right + m),
        )
        rgb, alpha = rgb[top:bottom, left:right], alpha[top:bottom, left:right]
    height, width = _fit(alpha.shape[0], alpha.shape[1], settings.max_size)
    return _resize(rgb, alpha, height, width)
