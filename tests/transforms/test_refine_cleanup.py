"""Refine's clean-up (remove_islands, fill_holes, feather, clean_up) on synthetic mattes with
known answers, and through the DoFn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import ndtr

from matteflow.transforms.refine import (
    RefineSettings,
    _RefineFn,
    clean_up,
    feather,
    fill_holes,
    remove_islands,
)
from matteflow.transforms.types import DecodedImage, ImageTask, Matte

H, W = 60, 80


def _subject() -> np.ndarray:
    """A 30 x 40 opaque block (1200 px) at rows 10..39, columns 20..59, with a one-pixel
    soft rim (alpha 0.5 just outside it)."""
    alpha = np.zeros((H, W), np.float32)
    alpha[9:41, 19:61] = 0.5
    alpha[10:40, 20:60] = 1.0
    return alpha


def test_small_island_and_its_fringe_are_removed_the_subject_stays() -> None:
    alpha = _subject()
    alpha[50:53, 5:8] = 0.9  # a 9-px speck: 0.75% of the subject
    alpha[49, 4:9] = 0.2  # its soft fringe, touching it
    cleaned = remove_islands(alpha, 0.01)
    np.testing.assert_array_equal(cleaned, _subject())


def test_island_over_the_minimum_area_stays() -> None:
    alpha = _subject()
    alpha[50:54, 2:6] = 1.0  # 16 px: 1.3% of the subject
    np.testing.assert_array_equal(remove_islands(alpha, 0.01), alpha)


def test_faint_haze_detached_from_the_subject_is_removed() -> None:
    alpha = _subject()
    alpha[45:58, 65:78] = 0.3  # never confident: no area over 0.5
    np.testing.assert_array_equal(remove_islands(alpha, 0.01), _subject())


def test_pieces_touching_diagonally_are_one_piece() -> None:
    alpha = _subject()
    alpha[41, 61] = 1.0  # off the rim's corner (40, 60) by one diagonal step
    alpha[42, 62] = 1.0
    np.testing.assert_array_equal(remove_islands(alpha, 0.5), alpha)


def test_a_lone_subject_is_left_alone() -> None:
    alpha = _subject()
    assert remove_islands(alpha, 1.0) is alpha
    empty = np.zeros((H, W), np.float32)
    assert remove_islands(empty, 0.5) is empty


def test_small_hole_is_filled_with_its_soft_rim() -> None:
    alpha = _subject()
    alpha[20:23, 30:33] = 0.0  # a 9-px hole: 0.75% of the subject
    alpha[19, 29:34] = 0.6  # soft rim inside the subject
    filled = fill_holes(alpha, 0.01)
    np.testing.assert_array_equal(filled, _subject())


def test_hole_over_the_maximum_area_stays() -> None:
    alpha = _subject()
    alpha[15:35, 25:40] = 0.0  # 300 px: a mug handle's opening, 25% of the subject
    np.testing.assert_array_equal(fill_holes(alpha, 0.01), alpha)
    assert (fill_holes(alpha, 0.5)[15:35, 25:40] == 1.0).all()


def test_background_reaching_the_border_is_not_a_hole() -> None:
    alpha = np.ones((H, W), np.float32)
    alpha[:, :10] = 0.0  # a bay open to the image's left edge
    alpha[25:28, 0:30] = 0.0
    np.testing.assert_array_equal(fill_holes(alpha, 1.0), alpha)


def test_feather_turns_a_hard_edge_into_a_gaussian_ramp() -> None:
    alpha = np.zeros((H, W), np.float32)
    alpha[:, W // 2 :] = 1.0  # the edge lies between columns 39 and 40
    soft = feather(alpha, 4.0)  # sigma 2
    distance = np.arange(W) - (W // 2 - 0.5)
    expected = ndtr(distance / 2.0)
    # The kernel is sampled at pixel centres, not integrated over pixels: at sigma 2 that is
    # up to 0.0025 off the continuous answer (measured 0.0024).
    np.testing.assert_allclose(soft[H // 2], expected, atol=3e-3)
    row = soft[H // 2]
    rise = np.flatnonzero((row > ndtr(-1)) & (row < ndtr(1)))
    assert rise.size == 4  # 16% -> 84% over feather_px pixels
    assert soft.dtype == np.float32


def test_feather_keeps_a_subject_at_the_border_opaque_there() -> None:
    alpha = np.zeros((H, W), np.float32)
    alpha[:, :20] = 1.0
    assert (feather(alpha, 6.0)[:, 0] > 0.999).all()


def test_feather_zero_is_a_no_op() -> None:
    alpha = _subject()
    assert feather(alpha, 0.0) is alpha


def test_clean_up_applies_what_is_asked_in_order() -> None:
    alpha = _subject()
    alpha[50:52, 5:7] = 1.0  # an island
    alpha[20:22, 30:32] = 0.0  # a hole
    assert clean_up(alpha, RefineSettings()) is alpha  # all off by default
    settings = RefineSettings(remove_islands=True, fill_holes=True, feather_px=2.0)
    np.testing.assert_allclose(clean_up(alpha, settings), feather(_subject(), 2.0))


@pytest.mark.parametrize(
    ("field", "value"),
    [("island_min_area", 1.5), ("hole_max_area", -0.1), ("feather_px", -1.0)],
)
def test_bad_clean_up_settings_are_named(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        RefineSettings(**{field: value})  # type: ignore[arg-type]


def test_refine_dofn_cleans_up_the_matte() -> None:
    alpha = _subject()
    alpha[50:52, 5:7] = 1.0
    rgb = np.zeros((H, W, 3), np.uint8)
    image = DecodedImage(ImageTask("x", "mem://x", "x"), rgb, "PNG")
    matte = Matte(image, alpha, "tiny-isnet", "", "cpu", "float32", 1)
    settings = dataclasses.replace(RefineSettings(decontaminate=False), remove_islands=True)
    fn = _RefineFn(settings)
    [out] = list(fn.process(matte))
    assert isinstance(out, Matte)
    np.testing.assert_array_equal(out.alpha, _subject())
