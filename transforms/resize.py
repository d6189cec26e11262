"""Resizing float planes without quantisation: Pillow's resamplers on mode "F" images."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["resize_plane"]


def resize_plane(
    plane: np.ndarray,
    height: int,
    width: int,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> np.ndarray:
    """One H x W plane resized to height x width as float32; returned as is when the size
    already matches."""
    if plane.shape == (height, width):
        return plane
    img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), resample), dtype=np.float32)
