"""cast_shadow and shade on synthetic mattes: where the shadow falls (under the subject, inside
the canvas), its size, softness and strength."""

from __future__ import annotations

import numpy as np
import pytest

from matteflow.transforms.shadow import CONTACT_BAND, cast_shadow, check_shadow, shade

H, W = 120, 100
TOP, BASE, LEFT, RIGHT = 20, 79, 30, 69  # the subject: a 60 x 40 box (rows 20..79)


def _box() -> np.ndarray:
    alpha = np.zeros((H, W), np.float32)
    alpha[TOP : BASE + 1, LEFT : RIGHT + 1] = 1.0
    return alpha


def _centroid(weights: np.ndarray) -> tuple[float, float]:
    y, x = np.mgrid[: weights.shape[0], : weights.shape[1]]
    total = float(weights.sum())
    return float((weights * y).sum()) / total, float((weights * x).sum()) / total


def _rows(shadow: np.ndarray, floor: float = 1e-3) -> tuple[int, int]:
    rows = np.flatnonzero((shadow > floor).any(axis=1))
    return int(rows[0]), int(rows[-1])


def test_drop_shadow_is_the_silhouette_moved_by_the_offset() -> None:
    # Offsets in subject heights: 0.1 x 60 = 6 px right, 0.05 x 60 = 3 px down; no blur.
    shadow = cast_shadow(_box(), "drop", opacity=0.5, blur=0.0, offset=(0.1, 0.05))
    expected = np.zeros((H, W), np.float32)
    expected[TOP + 3 : BASE + 4, LEFT + 6 : RIGHT + 7] = 0.5
    np.testing.assert_allclose(shadow, expected, atol=1e-6)


def test_blurred_drop_shadow_keeps_its_mass_and_centre_inside_the_canvas() -> None:
    alpha = _box()
    shadow = cast_shadow(alpha, "drop", opacity=0.4, blur=0.05, offset=(0.0, 0.1))
    assert shadow.shape == (H, W) and shadow.dtype == np.float32
    assert shadow.max() <= 0.4 and shadow.min() >= 0.0
    # Nothing lost over the canvas edge: the subject has margin enough for a 3-px blur.
    assert shadow.sum() == pytest.approx(0.4 * alpha.sum(), rel=1e-3)
    cy, cx = _centroid(shadow)
    sy, sx = _centroid(alpha)
    assert cy == pytest.approx(sy + 6, abs=0.01)  # 0.1 subject heights lower
    assert cx == pytest.approx(sx, abs=0.01)
    assert 0 < shadow[TOP - 1, LEFT] < 0.4 * 0.5  # soft: some reaches past the silhouette


def test_contact_shadow_is_a_thin_band_straddling_the_base_under_the_subject() -> None:
    shadow = cast_shadow(_box(), "contact", opacity=0.6, blur=0.0)
    band = CONTACT_BAND * (BASE - TOP + 1)  # 3 px
    expected = np.zeros((H, W), np.float32)
    expected[BASE - 1 : BASE + 2, LEFT : RIGHT + 1] = 0.6  # rows 78..80: half behind the foot
    assert expected[:, LEFT].sum() == pytest.approx(0.6 * band)
    np.testing.assert_allclose(shadow, expected, atol=1e-6)


def test_contact_shadow_is_as_wide_as_the_foot_not_the_wider_top() -> None:
    # A lamp: a wide shade (columns 20..79) on a narrow stem and foot (columns 45..54).
    alpha = np.zeros((H, W), np.float32)
    alpha[TOP:50, 20:80] = 1.0
    alpha[50 : BASE + 1, 45:55] = 1.0
    shadow = cast_shadow(alpha, "contact", opacity=1.0, blur=0.0, offset=(0.0, 0.05))
    columns = np.flatnonzero(shadow.any(axis=0))
    assert (columns[0], columns[-1]) == (45, 54)
    assert _rows(shadow) == (BASE + 2, BASE + 4)  # moved 0.05 subject heights (3 px) down


def test_blurred_contact_shadow_is_softer_but_stays_under_the_subject() -> None:
    sharp = cast_shadow(_box(), "contact", opacity=0.5, blur=0.0)
    soft = cast_shadow(_box(), "contact", opacity=0.5, blur=0.03)
    assert soft.max() < sharp.max()
    assert soft.sum() == pytest.approx(sharp.sum(), rel=1e-3)  # spread, not lost
    cy, cx = _centroid(soft)
    assert cy > _centroid(_box())[0] + 25 and LEFT < cx < RIGHT


def test_shadow_at_the_canvas_edge_is_cut_off_not_wrapped() -> None:
    alpha = np.zeros((H, W), np.float32)
    alpha[60:H, 10:30] = 1.0  # the subject stands on the canvas's bottom edge
    shadow = cast_shadow(alpha, "drop", opacity=1.0, blur=0.0, offset=(0.0, 0.5))
    assert shadow[:80].sum() == 0  # nothing wrapped round to the top
    assert shadow.shape == (H, W)


@pytest.mark.parametrize("kind", ["none", "contact", "drop"])
def test_no_subject_or_no_shadow_gives_zeros(kind: str) -> None:
    empty = cast_shadow(np.full((H, W), 0.3, np.float32), kind, opacity=1.0, blur=0.1)
    assert not empty.any()
    none = cast_shadow(_box(), "none", opacity=1.0, blur=0.1)
    assert not none.any()


def test_shade_darkens_a_colour_or_an_image_by_the_shadow() -> None:
    shadow = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    out = shade(np.array([200.0, 100.0, 50.0]), shadow)
    np.testing.assert_allclose(out[0, 1], [100.0, 50.0, 25.0])
    np.testing.assert_allclose(out[1, 0], [0.0, 0.0, 0.0])
    image = np.full((2, 2, 3), 80.0, np.float32)
    np.testing.assert_allclose(shade(image, shadow)[1, 1], [60.0, 60.0, 60.0])


@pytest.mark.parametrize(
    ("kind", "opacity", "blur", "message"),
    [
        ("soft", 0.5, 0.0, "shadow"),
        ("drop", 1.5, 0.0, "shadow_opacity"),
        ("drop", 0.5, -1.0, "shadow_blur"),
        ("drop", 0.5, float("nan"), "shadow_blur"),
    ],
)
def test_bad_shadow_settings_are_named(
    kind: str, opacity: float, blur: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_shadow(kind, opacity, blur)
