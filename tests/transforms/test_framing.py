"""Catalog framing on hand-built cutouts whose subject boxes, and so whose framings, are known."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from matteflow.transforms import framing
from matteflow.transforms.framing import (
    MAX_CANVAS_PIXELS,
    FramingSettings,
    check_framing,
    frame,
    subject_box,
)


def _cutout(
    h: int, w: int, box: tuple[int, int, int, int], dtype: type = np.uint8
) -> tuple[np.ndarray, np.ndarray]:
    """An h x w image with an opaque rectangle at box (top, left, bottom, right) and an
    asymmetric colour ramp everywhere, so a wrong crop or flip changes the pixels."""
    yy, xx = np.mgrid[:h, :w]
    rgb = np.stack([yy * 3 % 256, xx * 5 % 256, (yy + 2 * xx) % 256], axis=-1).astype(dtype)
    alpha = np.zeros((h, w), np.float32)
    top, left, bottom, right = box
    alpha[top:bottom, left:right] = 1.0
    return rgb, alpha


def _coded(alpha: np.ndarray) -> np.ndarray:
    """uint16 rgb whose pixels name their own position: (row, column, 1234)."""
    h, w = alpha.shape
    yy, xx = np.mgrid[:h, :w]
    return np.stack([yy, xx, np.full_like(yy, 1234)], axis=-1).astype(np.uint16)


def _blob(seed: int, h: int = 60, w: int = 90) -> np.ndarray:
    """A random soft blob (a few Gaussians), with faint pixels near the threshold at its rim."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    field = np.zeros((h, w))
    for _ in range(3):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        sy, sx = rng.uniform(3, h / 4), rng.uniform(3, w / 4)
        field += np.exp(-(((yy - cy) / sy) ** 2) - ((xx - cx) / sx) ** 2)
    return np.clip((field - 0.3) * 2.0, 0.0, 1.0).astype(np.float32)


def test_all_names_exist() -> None:
    assert all(hasattr(framing, name) for name in framing.__all__)


# --- subject_box ------------------------------------------------------------------------


def test_subject_box_of_a_rectangle() -> None:
    _, alpha = _cutout(40, 50, (5, 7, 20, 33))
    assert subject_box(alpha, 0.5 / 255) == (5, 7, 20, 33)


def test_subject_box_of_an_l_shape_and_a_single_pixel() -> None:
    alpha = np.zeros((30, 20), np.float32)
    alpha[10:25, 3:5] = 1.0
    alpha[23:25, 3:16] = 0.7
    assert subject_box(alpha, 0.5) == (10, 3, 25, 16)
    dot = np.zeros((30, 20), np.float32)
    dot[29, 0] = 0.01
    assert subject_box(dot, 0.5 / 255) == (29, 0, 30, 1)


def test_subject_box_counts_only_alpha_above_the_threshold() -> None:
    alpha = np.zeros((10, 10), np.float32)
    alpha[2, 2] = 0.25  # equal to the threshold: not subject
    alpha[6:8, 4:9] = 0.26
    assert subject_box(alpha, 0.25) == (6, 4, 8, 9)


def test_subject_box_is_none_without_a_subject() -> None:
    alpha = np.full((8, 9), 0.4 / 255, np.float32)  # rounds to 0 in 8 bits
    assert subject_box(alpha, 0.5 / 255) is None
    assert subject_box(np.zeros((3, 4), np.float32), 0.0) is None


# --- none and crop ----------------------------------------------------------------------


def test_none_returns_the_input_pixels() -> None:
    rgb, alpha = _cutout(17, 11, (2, 3, 9, 8))
    out_rgb, out_alpha = frame(rgb, alpha, FramingSettings())
    np.testing.assert_array_equal(out_rgb, rgb)
    np.testing.assert_array_equal(out_alpha, alpha)
    assert out_alpha.dtype == np.float32


def test_crop_with_a_pixel_margin() -> None:
    rgb, alpha = _cutout(100, 80, (20, 30, 50, 45))
    out_rgb, out_alpha = frame(rgb, alpha, FramingSettings(mode="crop", margin="5"))
    assert out_alpha.shape == (40, 25)
    np.testing.assert_array_equal(out_rgb, rgb[15:55, 25:50])
    np.testing.assert_array_equal(out_alpha, alpha[15:55, 25:50])


def test_crop_with_a_percentage_margin_of_the_longer_side() -> None:
    rgb, alpha = _cutout(100, 80, (20, 30, 60, 45))  # 40 x 15: 10% of 40 is 4 px
    out_rgb, _ = frame(rgb, alpha, FramingSettings(mode="crop", margin="10%"))
    np.testing.assert_array_equal(out_rgb, rgb[16:64, 26:49])


def test_crop_without_margin_is_the_subject_box() -> None:
    rgb, alpha = _cutout(30, 40, (3, 4, 10, 12))
    out_rgb, out_alpha = frame(rgb, alpha, FramingSettings(mode="crop"))
    assert out_alpha.shape == (7, 8)
    assert out_alpha.min() == 1.0
    np.testing.assert_array_equal(out_rgb, rgb[3:10, 4:12])


def test_crop_margin_is_clipped_at_the_image_edges() -> None:
    rgb, alpha = _cutout(50, 60, (2, 0, 20, 55))
    out_rgb, _ = frame(rgb, alpha, FramingSettings(mode="crop", margin="10"))
    np.testing.assert_array_equal(out_rgb, rgb[0:30, 0:60])


def test_crop_ignores_a_halo_below_the_threshold() -> None:
    rgb, alpha = _cutout(50, 60, (20, 20, 30, 40))
    alpha[0:5, 0:5] = 0.3 / 255
    out_rgb, _ = frame(rgb, alpha, FramingSettings(mode="crop", margin="2"))
    np.testing.assert_array_equal(out_rgb, rgb[18:32, 18:42])


def test_crop_without_a_subject_keeps_the_whole_image() -> None:
    rgb, alpha = _cutout(23, 31, (0, 0, 0, 0))
    out_rgb, out_alpha = frame(rgb, alpha, FramingSettings(mode="crop", margin="5"))
    np.testing.assert_array_equal(out_rgb, rgb)
    np.testing.assert_array_equal(out_alpha, alpha)


# --- canvas -----------------------------------------------------------------------------

# 300 wide, 200 high, 10 px padding: the free area is 280 x 180 at (10, 10).
_CANVAS = FramingSettings(mode="canvas", canvas_width=300, canvas_height=200, padding="10")


@pytest.mark.parametrize(
    ("align", "top"),
    [("center", 10 + (180 - 40) // 2), ("top", 10), ("bottom", 200 - 10 - 40)],
)
def test_canvas_places_the_subject_by_alignment(align: str, top: int) -> None:
    rgb, alpha = _cutout(90, 120, (30, 20, 70, 80))  # 40 x 60, fits without scaling
    out_rgb, out_alpha = frame(rgb, alpha, dataclasses.replace(_CANVAS, align=align))
    left = 10 + (280 - 60) // 2
    assert out_alpha.shape == (200, 300)
    assert out_rgb.shape == (200, 300, 3)
    assert subject_box(out_alpha, 0.5 / 255) == (top, left, top + 40, left + 60)
    # No scaling: the pixels are copied exactly; everything else is transparent black.
    np.testing.assert_array_equal(out_rgb[top : top + 40, left : left + 60], rgb[30:70, 20:80])
    assert out_alpha.sum() == 40 * 60
    assert out_rgb.sum() == rgb[30:70, 20:80].sum()


def test_canvas_padding_as_a_percentage_of_the_shorter_side() -> None:
    rgb, alpha = _cutout(90, 120, (30, 20, 70, 80))
    px = frame(rgb, alpha, _CANVAS)
    pct = frame(rgb, alpha, dataclasses.replace(_CANVAS, padding="5%"))  # 5% of 200 = 10 px
    np.testing.assert_array_equal(pct[0], px[0])
    np.testing.assert_array_equal(pct[1], px[1])


def test_canvas_shrinks_a_subject_into_the_free_area() -> None:
    rgb, alpha = _cutout(450, 130, (20, 10, 420, 110))  # 400 x 100
    settings = FramingSettings(mode="canvas", canvas_width=200, canvas_height=200, padding="10")
    _, out_alpha = frame(rgb, alpha, settings)
    # Scale 180 / 400 = 0.45: 180 x 45, on the top and bottom padding, centred across.
    assert out_alpha.shape == (200, 200)
    assert subject_box(out_alpha, 0.5 / 255) == (10, 77, 190, 122)
    np.testing.assert_allclose(out_alpha[10:190, 77:122], 1.0, atol=1e-5)


def test_canvas_does_not_upscale_by_default() -> None:
    rgb, alpha = _cutout(40, 50, (5, 10, 25, 40))  # 20 x 30
    _, out_alpha = frame(rgb, alpha, _CANVAS)
    top, left = 10 + (180 - 20) // 2, 10 + (280 - 30) // 2
    assert subject_box(out_alpha, 0.5 / 255) == (top, left, top + 20, left + 30)


def test_canvas_upscales_when_asked() -> None:
    rgb, alpha = _cutout(40, 50, (5, 10, 25, 40))  # 20 x 30, scale min(180/20, 280/30) = 9
    _, out_alpha = frame(rgb, alpha, dataclasses.replace(_CANVAS, upscale=True))
    assert subject_box(out_alpha, 0.5 / 255) == (10, 15, 190, 285)


def test_canvas_with_a_wide_subject() -> None:
    rgb, alpha = _cutout(30, 220, (10, 10, 20, 210))  # 10 x 200, 1:20
    settings = FramingSettings(mode="canvas")  # 2000 x 2000, 5% = 100 px padding
    _, out_alpha = frame(rgb, alpha, settings)
    assert out_alpha.shape == (2000, 2000)
    assert subject_box(out_alpha, 0.5 / 255) == (995, 900, 1005, 1100)
    _, out_alpha = frame(rgb, alpha, dataclasses.replace(settings, upscale=True))
    assert subject_box(out_alpha, 0.5 / 255) == (955, 100, 1045, 1900)  # x9: 90 x 1800


def test_canvas_with_a_tall_subject_resting_on_the_bottom() -> None:
    rgb, alpha = _cutout(650, 40, (20, 5, 620, 35))  # 600 x 30
    settings = FramingSettings(
        mode="canvas", canvas_width=400, canvas_height=300, padding="0", align="bottom"
    )
    _, out_alpha = frame(rgb, alpha, settings)
    # Scale 300 / 600 = 0.5: 300 x 15, centred across 400.
    assert out_alpha.shape == (300, 400)
    assert subject_box(out_alpha, 0.5 / 255) == (0, 192, 300, 207)


def test_canvas_without_a_subject_places_the_whole_image() -> None:
    rgb, alpha = _cutout(20, 40, (0, 0, 0, 0))
    alpha[:] = 0.1 / 255
    out_rgb, out_alpha = frame(rgb, alpha, _CANVAS)
    top, left = 10 + (180 - 20) // 2, 10 + (280 - 40) // 2
    np.testing.assert_array_equal(out_rgb[top : top + 20, left : left + 40], rgb)
    np.testing.assert_array_equal(out_alpha[top : top + 20, left : left + 40], alpha)
    assert out_alpha.sum() == pytest.approx(alpha.sum())


# --- max_size ---------------------------------------------------------------------------


def test_max_size_shrinks_the_output_keeping_aspect() -> None:
    rgb, alpha = _cutout(400, 300, (100, 100, 300, 200))
    out_rgb, out_alpha = frame(rgb, alpha, FramingSettings(max_size=100))
    assert out_rgb.shape == (100, 75, 3)
    assert out_alpha.shape == (100, 75)
    assert out_rgb.dtype == np.uint8
    assert out_alpha.dtype == np.float32
    assert subject_box(out_alpha, 0.5) == (25, 25, 75, 50)


def test_max_size_after_a_crop() -> None:
    rgb, alpha = _cutout(400, 300, (100, 100, 300, 200))
    _, out_alpha = frame(rgb, alpha, FramingSettings(mode="crop", margin="50", max_size=150))
    assert out_alpha.shape == (150, 100)  # 300 x 200 crop, halved


def test_max_size_on_a_canvas_scales_the_layout() -> None:
    rgb, alpha = _cutout(90, 120, (30, 20, 70, 80))  # 40 x 60
    settings = FramingSettings(mode="canvas", padding="100", max_size=500)
    _, out_alpha = frame(rgb, alpha, settings)
    # Placed at (980, 970, 1020, 1030) on 2000 x 2000, then a quarter of that.
    assert out_alpha.shape == (500, 500)
    assert subject_box(out_alpha, 0.5) == (245, 243, 255, 258)


def test_max_size_larger_than_the_output_changes_nothing() -> None:
    rgb, alpha = _cutout(40, 30, (5, 5, 20, 20))
    out_rgb, out_alpha = frame(rgb, alpha, FramingSettings(max_size=40))
    np.testing.assert_array_equal(out_rgb, rgb)
    np.testing.assert_array_equal(out_alpha, alpha)


def test_max_size_keeps_at_least_one_pixel() -> None:
    rgb, alpha = _cutout(2, 500, (0, 0, 2, 500))
    out_rgb, _ = frame(rgb, alpha, FramingSettings(max_size=100))
    assert out_rgb.shape == (1, 100, 3)


# --- precision and premultiplied resampling ---------------------------------------------


def test_uint16_crop_keeps_values_eight_bits_cannot_hold() -> None:
    rgb, alpha = _cutout(20, 20, (5, 5, 15, 15), np.uint16)
    rgb[5:15, 5:10] = 1000
    rgb[5:15, 10:15] = 1001
    out_rgb, _ = frame(rgb, alpha, FramingSettings(mode="crop"))
    assert out_rgb.dtype == np.uint16
    assert set(np.unique(out_rgb).tolist()) == {1000, 1001}
    np.testing.assert_array_equal(out_rgb[:, :5], 1000)


def test_uint16_resize_stays_sixteen_bit() -> None:
    _, alpha = _cutout(64, 64, (0, 0, 64, 64))
    rgb = np.full((64, 64, 3), 1001, np.uint16)
    rgb[:, 32:] = 40000
    out_rgb, _ = frame(rgb, alpha, FramingSettings(max_size=16))
    assert out_rgb.dtype == np.uint16
    # Lanczos reaches 3 output px (12 input px) either side of the step at column 8; beyond
    # that, flat colour stays exact.
    np.testing.assert_array_equal(out_rgb[:, :5], 1001)
    np.testing.assert_array_equal(out_rgb[:, 11:], 40000)


def test_downscale_leaves_no_dark_fringe() -> None:
    # A white subject with a soft edge, over black (the old background) where alpha is 0.
    yy, xx = np.mgrid[:64, :64]
    alpha = np.clip((20.0 - np.hypot(yy - 32, xx - 32)) / 6.0, 0.0, 1.0).astype(np.float32)
    rgb = np.where(alpha[..., None] > 0, 255, 0).astype(np.uint8).repeat(3, axis=2)
    out_rgb, out_alpha = frame(rgb, alpha, FramingSettings(max_size=16))
    edge = (out_alpha > 0) & (out_alpha < 1)
    assert edge.sum() > 20  # the test looks at a real soft edge
    np.testing.assert_array_equal(out_rgb[out_alpha > 0], 255)
    np.testing.assert_array_equal(out_rgb[out_alpha == 0], 0)
    assert out_alpha.min() >= 0.0
    assert out_alpha.max() <= 1.0


# --- never cuts into the subject --------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "settings",
    [
        FramingSettings(),
        FramingSettings(mode="crop"),
        FramingSettings(mode="crop", margin="7%"),
        FramingSettings(mode="canvas", canvas_width=130, canvas_height=110, padding="10"),
    ],
    ids=["none", "crop", "crop-margin", "canvas"],
)
def test_every_subject_pixel_is_kept_unscaled(seed: int, settings: FramingSettings) -> None:
    alpha = _blob(seed)
    rgb = _coded(alpha)
    out_rgb, out_alpha = frame(rgb, alpha, settings)
    subject = alpha > settings.threshold
    assert subject.any()
    # Each output pixel names where it came from: every subject pixel must be there, intact.
    kept = out_rgb[..., 2] == 1234
    rows, cols = out_rgb[kept][:, 0], out_rgb[kept][:, 1]
    np.testing.assert_array_equal(out_alpha[kept], alpha[rows, cols])
    seen = np.zeros_like(subject)
    seen[rows, cols] = True
    assert not (subject & ~seen).any()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("align", ["center", "top", "bottom"])
def test_a_scaled_subject_stays_inside_the_free_area(seed: int, align: str) -> None:
    alpha = _blob(seed)
    rgb = _coded(alpha)
    box = subject_box(alpha, 0.5 / 255)
    assert box is not None
    top, left, bottom, right = box
    settings = FramingSettings(
        mode="canvas", canvas_width=50, canvas_height=40, padding="4", align=align
    )
    _, out_alpha = frame(rgb, alpha, settings)
    scale = min(32 / (bottom - top), 42 / (right - left))
    placed = subject_box(out_alpha, 0.0)
    assert placed is not None
    p_top, p_left, p_bottom, p_right = placed
    assert p_top >= 4
    assert p_left >= 4
    assert p_bottom <= 36
    assert p_right <= 46
    # The scaled subject box fills the placed region to within a pixel each way.
    assert abs((p_bottom - p_top) - (bottom - top) * scale) <= 1
    assert abs((p_right - p_left) - (right - left) * scale) <= 1
    expected_top = {"top": 4, "bottom": 36 - (p_bottom - p_top)}.get(
        align, (40 - (p_bottom - p_top)) / 2
    )
    assert abs(p_top - expected_top) <= 1
    assert abs((p_left + p_right) / 2 - 25) <= 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_then_max_size_keeps_the_subject(seed: int) -> None:
    alpha = _blob(seed)
    rgb = _coded(alpha)
    box = subject_box(alpha, 0.5 / 255)
    assert box is not None
    h, w = box[2] - box[0], box[3] - box[1]
    _, out_alpha = frame(rgb, alpha, FramingSettings(mode="crop", max_size=20))
    k = 20 / max(h, w)
    # Sizes round half up (Python's round() would go to even).
    assert out_alpha.shape == (max(1, math.floor(h * k + 0.5)), max(1, math.floor(w * k + 0.5)))
    # The resampled subject reaches every edge of the shrunk crop: nothing was cut off.
    placed = subject_box(out_alpha, 0.0)
    assert placed == (0, 0, *out_alpha.shape)


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "fill"),
        ("align", "left"),
        ("margin", "-5"),
        ("margin", "5px"),
        ("margin", "%"),
        ("margin", "4.5"),
        ("padding", "-1%"),
        ("padding", "50%"),
        ("padding", "1000"),
        ("canvas_width", 0),
        ("canvas_height", -3),
        ("max_size", -1),
        ("threshold", 1.0),
        ("threshold", -0.1),
    ],
)
def test_check_framing_names_the_bad_field(field: str, value: object) -> None:
    settings = dataclasses.replace(FramingSettings(), **{field: value})
    with pytest.raises(ValueError, match=rf"framing\.{field}:"):
        check_framing(settings)
    rgb, alpha = _cutout(5, 5, (1, 1, 3, 3))
    with pytest.raises(ValueError, match=rf"framing\.{field}:"):
        frame(rgb, alpha, settings)


@pytest.mark.parametrize("margin", ["0", "40", "5%", "2.5%", " 7 "])
def test_check_framing_accepts_valid_lengths(margin: str) -> None:
    check_framing(FramingSettings(mode="crop", margin=margin, padding=margin))


def test_check_framing_accepts_a_nearly_full_padding() -> None:
    check_framing(FramingSettings(canvas_width=100, canvas_height=21, padding="10"))
    with pytest.raises(ValueError, match=r"framing\.padding:.*leaves no room"):
        check_framing(FramingSettings(canvas_width=100, canvas_height=20, padding="10"))


def test_frame_rejects_mismatched_arrays() -> None:
    rgb, alpha = _cutout(5, 6, (1, 1, 3, 3))
    with pytest.raises(ValueError, match="alpha H x W"):
        frame(rgb, alpha[:, :5], FramingSettings())
    with pytest.raises(ValueError, match="uint8 or uint16"):
        frame(rgb.astype(np.float32), alpha, FramingSettings())


def test_a_canvas_over_the_pixel_limit_is_refused() -> None:
    assert MAX_CANVAS_PIXELS == 100_000_000
    check_framing(FramingSettings(mode="canvas", canvas_width=10_000, canvas_height=10_000))
    with pytest.raises(ValueError, match="12000x12000 is 144 MP, over the 100 MP limit"):
        check_framing(FramingSettings(mode="canvas", canvas_width=12_000, canvas_height=12_000))
