"""iou, mae and edge_mae on hand-built arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from matteflow.transforms import quality
from matteflow.transforms.quality import edge_band, edge_mae, iou, mae, scores


def _square(h: int, w: int, top: int, left: int, size: int, value: float = 1.0) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    out[top : top + size, left : left + size] = value
    return out


def _diamond(h: int, w: int, y: int, x: int, r: int) -> np.ndarray:
    """Pixels within city-block distance r of (y, x): what r crosses grow from one pixel."""
    yy, xx = np.mgrid[:h, :w]
    return np.asarray(np.abs(yy - y) + np.abs(xx - x) <= r)


def _reference_band(gt: np.ndarray, r: int) -> np.ndarray:
    """The band by scipy rather than by quality's own loop (outside the image counts as 0)."""
    cross = ndimage.generate_binary_structure(2, 1)
    fg = gt > 0.5
    grown = ndimage.binary_dilation(fg, cross, iterations=r, border_value=0)
    shrunk = ndimage.binary_erosion(fg, cross, iterations=r, border_value=0)
    return np.asarray((grown & ~shrunk) | ((gt > 0.02) & (gt < 0.98)))


def test_all_names_exist() -> None:
    assert all(hasattr(quality, name) for name in quality.__all__)


# --- iou --------------------------------------------------------------------------------


def test_iou_of_two_empty_masks_is_one() -> None:
    assert iou(np.zeros((5, 7)), np.zeros((5, 7))) == 1.0


def test_iou_of_offset_squares() -> None:
    # Two 4x4 squares offset by one pixel diagonally overlap in 3x3: 9 / (16 + 16 - 9).
    pred, gt = _square(10, 12, 2, 2, 4), _square(10, 12, 3, 3, 4)
    assert iou(pred, gt) == pytest.approx(9 / 23, rel=1e-12)


def test_iou_of_disjoint_masks_is_zero() -> None:
    assert iou(_square(10, 12, 0, 0, 3), _square(10, 12, 6, 6, 3)) == 0.0


def test_iou_thresholds_strictly_above_half() -> None:
    # 0.5 is background; 0.51 is foreground.
    gt = np.ones((4, 4))
    assert iou(np.full((4, 4), 0.5), gt) == 0.0
    assert iou(np.full((4, 4), 0.51), gt) == 1.0


# --- mae --------------------------------------------------------------------------------


def test_mae_by_hand() -> None:
    pred = np.array([[0.2, 0.6], [1.0, 0.0]], np.float32)
    gt = np.array([[0.5, 0.5], [1.0, 1.0]])
    # (0.3 + 0.1 + 0 + 1) / 4; float32 inputs limit the match to about 1e-8.
    assert mae(pred, gt) == pytest.approx(0.35, abs=1e-7)


def test_mae_of_a_square_against_nothing_is_its_area_fraction() -> None:
    assert mae(_square(10, 12, 0, 0, 6), np.zeros((10, 12))) == pytest.approx(36 / 120, rel=1e-12)


# --- edge band --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("h", "w", "r"),
    [
        (41, 41, 3),  # diagonal 58: 0.58 rounds to 1, the floor of 3 applies
        (300, 400, 5),  # diagonal 500: r = 5
        (600, 800, 10),  # diagonal 1000: r = 10
    ],
)
def test_band_of_a_single_pixel_is_a_diamond_of_radius_r(h: int, w: int, r: int) -> None:
    y, x = h // 2, w // 3
    gt = np.zeros((h, w), np.float32)
    gt[y, x] = 1.0
    band = edge_band(gt)
    assert np.array_equal(band, _diamond(h, w, y, x, r))
    assert np.count_nonzero(band) == 2 * r * (r + 1) + 1  # 25 for r = 3


@pytest.mark.parametrize(
    "gt",
    [
        _square(40, 50, 10, 12, 15),  # well inside the image
        _square(40, 50, 0, 0, 20),  # touching two borders: erosion counts outside as 0
        np.ones((23, 31), np.float32),  # all foreground: only the frame is band
        _square(40, 50, 10, 12, 15, value=0.6),  # foreground by threshold, and soft everywhere
    ],
    ids=["inside", "corner", "full", "soft-square"],
)
def test_band_matches_scipy(gt: np.ndarray) -> None:
    r = max(3, round(0.01 * np.hypot(*gt.shape)))
    assert r == 3
    expected = _reference_band(gt, r)
    assert expected.any() and not expected.all()  # the cases are not degenerate
    assert np.array_equal(edge_band(gt), expected)


def test_band_of_a_square_by_hand() -> None:
    # A 15 x 15 square at (10, 12), r = 3: the band is the square grown by a 3-diamond minus
    # the square shrunk by 3 (a 9 x 9 square).
    gt = _square(40, 50, 10, 12, 15)
    grown = np.zeros((40, 50), bool)
    for y, x in zip(*np.nonzero(gt), strict=True):
        grown |= _diamond(40, 50, y, x, 3)
    inner = _square(40, 50, 13, 15, 9) > 0
    assert np.array_equal(edge_band(gt), grown & ~inner)


def test_band_includes_soft_pixels_outside_the_boundary() -> None:
    gt = np.zeros((30, 30), np.float32)
    # All below 0.5, so no foreground grows a band; 0.02 is not strictly inside (0.02, 0.98).
    gt[5, 5], gt[20, 20], gt[25, 3] = 0.03, 0.45, 0.02
    assert set(zip(*np.nonzero(edge_band(gt)), strict=True)) == {(5, 5), (20, 20)}


def test_band_of_an_empty_ground_truth_is_empty() -> None:
    assert not edge_band(np.zeros((20, 30), np.float32)).any()


# --- edge_mae and scores ----------------------------------------------------------------


def test_edge_mae_of_a_missed_pixel() -> None:
    # Band of a single pixel in 41 x 41 is 25 pixels; only the centre is wrong, by 1.
    gt = np.zeros((41, 41), np.float32)
    gt[20, 20] = 1.0
    assert edge_mae(np.zeros_like(gt), gt) == pytest.approx(1 / 25, rel=1e-12)


def test_edge_mae_ignores_errors_outside_the_band() -> None:
    gt = _square(40, 50, 10, 12, 15)
    pred = gt.copy()
    pred[0, 0] = 1.0  # far from the square
    pred[17, 19] = 0.0  # deep inside: the eroded core is not band
    assert edge_mae(pred, gt) == 0.0
    assert mae(pred, gt) == pytest.approx(2 / 2000, rel=1e-12)


def test_edge_mae_with_empty_band_is_zero() -> None:
    assert edge_mae(np.ones((20, 30), np.float32), np.zeros((20, 30), np.float32)) == 0.0


def test_scores_of_a_shifted_square() -> None:
    gt = _square(40, 50, 10, 12, 15)
    pred = _square(40, 50, 10, 13, 15)  # one column to the right: 30 pixels wrong by 1
    band = _reference_band(gt, 3)
    assert band[10:25, 12].all() and band[10:25, 27].all()  # both wrong columns lie in the band
    result = scores(pred, gt)
    assert set(result) == {"iou", "mae", "edge_mae"}
    assert result["iou"] == pytest.approx(14 * 15 / (16 * 15), rel=1e-12)
    assert result["mae"] == pytest.approx(30 / 2000, rel=1e-12)
    assert result["edge_mae"] == pytest.approx(30 / np.count_nonzero(band), rel=1e-12)
