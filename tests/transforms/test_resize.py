"""resize_plane: float planes resized by Pillow without quantisation."""

from __future__ import annotations

import numpy as np
from PIL import Image

from matteflow.transforms.resize import resize_plane


def test_same_size_returns_the_plane_itself() -> None:
    plane = np.zeros((3, 4), np.float32)
    assert resize_plane(plane, 3, 4) is plane


def test_values_off_the_8_bit_grid_survive() -> None:
    plane = np.full((4, 6), 0.123456, np.float64)
    out = resize_plane(plane, 2, 3, Image.Resampling.BILINEAR)
    assert (out.dtype, out.shape) == (np.float32, (2, 3))
    assert np.allclose(out, 0.123456, atol=1e-6)


def test_the_resampler_is_the_one_asked_for() -> None:
    step = np.zeros((1, 8), np.float32)
    step[:, 4:] = 1.0
    lanczos = resize_plane(step, 1, 16)
    bilinear = resize_plane(step, 1, 16, Image.Resampling.BILINEAR)
    assert lanczos.min() < 0.0 <= bilinear.min()  # Lanczos rings below 0, bilinear does not
