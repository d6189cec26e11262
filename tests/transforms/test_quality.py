"""The quality metrics on hand-built arrays whose answers are known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from matteflow.transforms import quality
from matteflow.transforms.quality import (
    boundary,
    boundary_f,
    edge_band,
    edge_mae,
    gradient_error,
    iou,
    mae,
    mse,
    sad,
    scores,
)

SCORE_KEYS = {"iou", "mae", "edge_mae", "sad", "mse", "gradient_error", "boundary_f"}


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
    result = dataclasses.asdict(scores(pred, gt))
    assert set(result) == SCORE_KEYS
    assert result["iou"] == pytest.approx(14 * 15 / (16 * 15), rel=1e-12)
    assert result["mae"] == pytest.approx(30 / 2000, rel=1e-12)
    assert result["edge_mae"] == pytest.approx(30 / np.count_nonzero(band), rel=1e-12)
    assert result["sad"] == pytest.approx(30 / 1000, rel=1e-12)
    assert result["mse"] == pytest.approx(30 / 2000, rel=1e-12)
    assert result["gradient_error"] > 0
    assert result["boundary_f"] == 1.0  # a 1-pixel shift is within the 1-pixel tolerance


def test_scores_are_the_single_metrics() -> None:
    gt = _blobs(60, 80, seed=1)
    pred = np.clip(gt + 0.3 * _blobs(60, 80, seed=2) - 0.1, 0, 1).astype(np.float32)
    result = dataclasses.asdict(scores(pred, gt))
    assert list(result) == ["iou", "mae", "edge_mae", "sad", "mse", "gradient_error", "boundary_f"]
    single = {name: getattr(quality, name)(pred, gt) for name in SCORE_KEYS}
    assert result == single
    assert all(isinstance(v, float) for v in result.values())
    assert 0 < result["boundary_f"] < 1 and result["gradient_error"] > 0


# --- sad and mse ------------------------------------------------------------------------


def _blobs(h: int, w: int, seed: int) -> np.ndarray:
    """A soft random matte with several foreground blobs (crosses 0.5 in many places)."""
    noise = np.random.default_rng(seed).random((h, w))
    smooth = ndimage.gaussian_filter(noise, 3)
    return np.clip((smooth - smooth.mean()) * 12 + 0.5, 0, 1).astype(np.float32)


def test_sad_and_mse_by_hand() -> None:
    gt = _square(4, 4, 1, 1, 2)
    pred = gt.copy()
    pred[1, 1], pred[0, 0] = 0.5, 0.25  # errors 0.5 and 0.25, the other 14 pixels exact
    assert sad(pred, gt) == pytest.approx(0.75 / 1000, rel=1e-12)
    assert mse(pred, gt) == pytest.approx((0.25 + 0.0625) / 16, rel=1e-12)


def test_sad_is_the_whole_image_sum_over_a_thousand() -> None:
    # 100 x 100 pixels all wrong by 1: SAD 10000 -> 10.0, MSE 1.0, whatever the layout.
    ones, zeros = np.ones((100, 100), np.float32), np.zeros((100, 100), np.float32)
    assert sad(ones, zeros) == 10.0 and sad(zeros, ones) == 10.0
    assert mse(ones, zeros) == 1.0
    assert sad(ones, ones) == 0.0 and mse(ones, ones) == 0.0


def test_mse_squares_the_errors() -> None:
    # Same SAD, different MSE: one error of 1 against four errors of 0.25.
    gt = np.zeros((4, 4))
    one, spread = gt.copy(), gt.copy()
    one[0, 0] = 1.0
    spread[0, :] = 0.25
    assert sad(one, gt) == sad(spread, gt) == pytest.approx(1 / 1000, rel=1e-12)
    assert mse(one, gt) == pytest.approx(1 / 16, rel=1e-12)
    assert mse(spread, gt) == pytest.approx(4 * 0.0625 / 16, rel=1e-12)


# --- gradient error ---------------------------------------------------------------------


def _step(h: int, w: int, column: int) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    out[:, column:] = 1.0
    return out


def _gaussian_kernels(sigma: float = 1.4) -> tuple[np.ndarray, np.ndarray]:
    """The sampled Gaussian (radius int(4 sigma + 0.5), normalised to sum 1) and its derivative
    -x / sigma^2 times it, as convolution kernels over x = -radius..radius."""
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-(x**2) / (2 * sigma**2))
    phi /= phi.sum()
    return phi, -x / sigma**2 * phi


def _row_gradient(row: np.ndarray) -> np.ndarray:
    """The Gaussian derivative of one row written out, edge pixels repeated."""
    _, kernel = _gaussian_kernels()
    r = len(kernel) // 2
    padded = np.pad(row.astype(np.float64), r, mode="edge")
    out = np.zeros(len(row))
    for i in range(len(row)):
        for j, k in enumerate(kernel):  # kernel[j] is x = j - r; it weighs row[i - x]
            out[i] += k * padded[i + 2 * r - j]
    return out


def test_gradient_error_of_identical_inputs_is_zero() -> None:
    gt = _blobs(30, 40, seed=3)
    assert gradient_error(gt, gt.copy()) == 0.0


def test_gradient_error_of_a_step_by_direct_computation() -> None:
    step = _step(20, 30, 15)
    row = _row_gradient(step[0])
    assert row.sum() == pytest.approx(1.0, abs=1e-4)  # a unit rise: the kernel is unit-scaled
    # Every row is the same and nothing varies down the columns, so |grad| is |row| per row.
    expected = 20 * np.sum(row**2) / 1000
    assert gradient_error(step, np.zeros_like(step)) == pytest.approx(expected, rel=1e-9)


def test_gradient_error_uses_both_directions() -> None:
    # A step down the rows scores like its transpose, so the row derivative is not dropped.
    step = _step(24, 24, 9)
    flat = np.zeros_like(step)
    assert gradient_error(step.T, flat) == pytest.approx(gradient_error(step, flat), rel=1e-12)


def test_gradient_error_matches_2d_convolution() -> None:
    # gx and gy as full 2-D kernels (smoothing x derivative) through ndimage.convolve, then
    # hypot, the squared difference summed and / 1000.
    smooth, deriv = _gaussian_kernels()
    pred, gt = _blobs(30, 40, seed=5), _blobs(30, 40, seed=6)

    def magnitude(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        gx = ndimage.convolve(a, np.outer(smooth, deriv), mode="nearest")
        gy = ndimage.convolve(a, np.outer(deriv, smooth), mode="nearest")
        return np.asarray(np.sqrt(gx**2 + gy**2))

    expected = np.sum((magnitude(pred) - magnitude(gt)) ** 2) / 1000
    assert expected > 1e-3  # not a degenerate case
    assert gradient_error(pred, gt) == pytest.approx(expected, rel=1e-9)


def test_gradient_error_of_a_shifted_edge_is_positive_and_symmetric() -> None:
    a, b = _step(20, 30, 12), _step(20, 30, 16)
    assert gradient_error(a, b) > 0
    assert gradient_error(a, b) == gradient_error(b, a)
    # The further the shift, the larger the error until the edges stop overlapping.
    assert gradient_error(a, _step(20, 30, 13)) < gradient_error(a, b)


def test_gradient_error_ignores_a_constant_offset() -> None:
    # Unlike sad and mse, a uniform bias has no gradient.
    gt = _blobs(30, 40, seed=4) * 0.8
    assert gradient_error(gt + 0.1, gt) == pytest.approx(0.0, abs=1e-12)
    assert sad(gt + 0.1, gt) > 0


# --- boundary F -------------------------------------------------------------------------


def _pixel(h: int, w: int, y: int, x: int) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    out[y, x] = 1.0
    return out


def _reference_boundary_f(pred: np.ndarray, gt: np.ndarray, t: int) -> float:
    """Boundary F by scipy erosion and exact distance transforms, for non-empty boundaries."""
    cross = ndimage.generate_binary_structure(2, 1)

    def edge(a: np.ndarray) -> np.ndarray:
        fg = a > 0.5
        return np.asarray(fg & ~ndimage.binary_erosion(fg, cross, border_value=0))

    pb, gb = edge(pred), edge(gt)
    precision = np.mean(ndimage.distance_transform_edt(~gb)[pb] <= t)
    recall = np.mean(ndimage.distance_transform_edt(~pb)[gb] <= t)
    return float(2 * precision * recall / (precision + recall))


def test_boundary_of_a_square_is_its_ring() -> None:
    b = boundary(_square(40, 50, 10, 10, 10))
    ring = (_square(40, 50, 10, 10, 10) > 0) & ~(_square(40, 50, 11, 11, 8) > 0)
    assert np.array_equal(b, ring) and np.count_nonzero(b) == 36


def test_boundary_uses_4_neighbours() -> None:
    # Soft blobs have corners where the background touches only diagonally; those pixels are
    # not boundary.
    gt = _blobs(60, 80, seed=10)
    fg = gt > 0.5
    cross, square = ndimage.generate_binary_structure(2, 1), np.ones((3, 3), bool)
    by_cross = fg & ~ndimage.binary_erosion(fg, cross, border_value=0)
    by_square = fg & ~ndimage.binary_erosion(fg, square, border_value=0)
    assert not np.array_equal(by_cross, by_square)  # the case tells them apart
    assert np.array_equal(boundary(gt), by_cross)


def test_boundary_counts_the_image_frame_and_thresholds_strictly() -> None:
    full = boundary(np.ones((5, 7), np.float32))
    assert np.count_nonzero(full) == 2 * 5 + 2 * 7 - 4 and not full[1:-1, 1:-1].any()
    assert not boundary(np.full((5, 7), 0.5, np.float32)).any()


def test_boundary_f_of_identical_masks_is_one() -> None:
    gt = _blobs(60, 80, seed=7)
    assert boundary(gt).any()
    assert boundary_f(gt.copy(), gt) == 1.0


def test_boundary_f_of_two_empty_masks_is_one() -> None:
    assert boundary_f(np.zeros((20, 30)), np.full((20, 30), 0.4)) == 1.0


@pytest.mark.parametrize("empty", ["pred", "gt"])
def test_boundary_f_with_one_empty_mask_is_zero(empty: str) -> None:
    mask, nothing = _square(20, 30, 5, 5, 6), np.zeros((20, 30), np.float32)
    pred, gt = (nothing, mask) if empty == "pred" else (mask, nothing)
    assert boundary_f(pred, gt) == 0.0


@pytest.mark.parametrize(
    ("h", "w", "shift"),
    [
        (40, 50, 1),  # diagonal 64: tolerance 1
        (300, 400, 4),  # diagonal 500: tolerance round(4.0) = 4
    ],
)
def test_boundary_f_of_a_shift_within_the_tolerance_is_one(h: int, w: int, shift: int) -> None:
    gt = _square(h, w, 10, 10, 20)
    assert boundary_f(_square(h, w, 10, 10 + shift, 20), gt) == 1.0
    assert boundary_f(_square(h, w, 10 + shift, 10, 20), gt) == 1.0


def test_boundary_f_of_a_square_shifted_past_the_tolerance() -> None:
    # 10 x 10 squares (36-pixel rings) in 40 x 50 (tolerance 1), pred 3 columns right of gt.
    # Pred's top and bottom rows match at columns 13..20 (8 each: 20 is next to gt's corner),
    # its left column only next to gt's top and bottom rows (2), its right column nowhere:
    # 18 / 36. Mirrored, gt matches 18 / 36 too, so P = R = F = 1/2.
    gt, pred = _square(40, 50, 10, 10, 10), _square(40, 50, 10, 13, 10)
    assert boundary_f(pred, gt) == pytest.approx(0.5, rel=1e-12)


def test_boundary_f_of_an_extra_blob() -> None:
    # Pred is gt plus a far-away 3 x 3 blob (8 boundary pixels): P = 36 / 44, R = 1,
    # F = 2 (36/44) / (36/44 + 1) = 72 / 80.
    gt = _square(40, 50, 10, 10, 10)
    pred = gt + _square(40, 50, 30, 40, 3)
    assert boundary_f(pred, gt) == pytest.approx(0.9, rel=1e-12)
    assert boundary_f(gt, pred) == pytest.approx(0.9, rel=1e-12)  # P and R swap


@pytest.mark.parametrize(
    ("h", "w", "dy", "dx", "expected"),
    [
        (10, 10, 0, 1, 1.0),  # diagonal 14: round(0.11) = 0, the floor of 1 applies
        (10, 10, 1, 1, 0.0),  # sqrt(2) > 1
        (300, 400, 0, 4, 1.0),  # tolerance 4
        (300, 400, 0, 5, 0.0),
        (300, 400, 2, 3, 1.0),  # sqrt(13) <= 4
        (300, 400, 3, 3, 0.0),  # sqrt(18) > 4: a disk, not a square
        (300, 300, 0, 3, 1.0),  # diagonal 424: round(3.39) = 3, not 4
        (300, 300, 0, 4, 0.0),
        (600, 800, 8, 0, 1.0),  # diagonal 1000: tolerance 8
        (600, 800, 9, 0, 0.0),
    ],
)
def test_boundary_f_tolerance_is_a_disk_of_the_diagonal(
    h: int, w: int, dy: int, dx: int, expected: float
) -> None:
    y, x = h // 2, w // 2
    assert boundary_f(_pixel(h, w, y + dy, x + dx), _pixel(h, w, y, x)) == expected


@pytest.mark.parametrize("path", ["kd-tree", "distance-transform"])
@pytest.mark.parametrize(("h", "w"), [(60, 80), (300, 400)])
def test_boundary_f_matches_scipy(
    monkeypatch: pytest.MonkeyPatch, path: str, h: int, w: int
) -> None:
    if path == "distance-transform":
        monkeypatch.setattr(quality, "_KD_TREE_MAX_POINTS", 0)
    t = max(1, round(0.008 * np.hypot(h, w)))
    gt = _blobs(h, w, seed=8)
    # gt moved by about the tolerance (some boundary matches, some not), plus other blobs.
    pred = 0.7 * np.roll(gt, (t, t + 1), axis=(0, 1)) + 0.3 * _blobs(h, w, seed=9)
    expected = _reference_boundary_f(pred, gt, t)
    assert 0.05 < expected < 0.95  # partly matched
    assert boundary_f(pred, gt) == pytest.approx(expected, rel=1e-12)
