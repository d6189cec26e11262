"""Refine: uncertainty, the guided filter, trimap, tiled matting, decontamination, the DoFn and
the transform, on synthetic composites whose true alpha and foreground are known."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pymatting
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image
from scipy import ndimage

from matteflow.transforms import refine
from matteflow.transforms.foreground import (
    _compiled_correction,
    _neighbours,
    decontaminate,
    predicted_foreground,
)
from matteflow.transforms.matte import uncertainty
from matteflow.transforms.refine import (
    _TILE,
    Refine,
    RefineSettings,
    _RefineFn,
    guided_filter,
    matting,
    trimap,
)
from matteflow.transforms.resize import resize_plane
from matteflow.transforms.types import DecodedImage, Failed, ImageTask, Matte, Timings

RED, BLUE = (200, 30, 30), (30, 30, 200)


def _composite(
    height: int, width: int, cy: float, cx: float, radius: float, soft: float = 6.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha, foreground, image): a disc of alpha 1 with a linear soft edge `soft` px wide,
    over smooth, distinct foreground (reddish) and background (bluish) colours; the image is
    a*F + (1-a)*B in float64 [0, 1]."""
    y, x = np.mgrid[:height, :width].astype(np.float64)
    alpha = np.clip((radius + soft / 2 - np.hypot(y - cy, x - cx)) / soft, 0.0, 1.0)
    fg = np.stack([0.8 + 0.1 * np.sin(x / 37), 0.2 + 0.1 * np.cos(y / 41), 0.3 + 0 * x], -1)
    bg = np.stack([0.1 + 0 * x, 0.5 + 0.1 * np.sin((x + y) / 53), 0.9 - 0.1 * np.cos(x / 29)], -1)
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return alpha, fg, image


def _u8(image: np.ndarray) -> np.ndarray:
    return np.rint(image * 255).astype(np.uint8)


def _degraded(alpha: np.ndarray) -> np.ndarray:
    """The true alpha blurred (Gaussian, sigma 3): a model's soft, too-wide edge."""
    return ndimage.gaussian_filter(alpha, 3).astype(np.float32)


def _matte(
    alpha: np.ndarray,
    rgb: np.ndarray,
    *,
    key: str = "a",
    uncertainty: float = 0.0,
    rgb16: np.ndarray | None = None,
) -> Matte:
    image = DecodedImage(
        ImageTask(key, f"mem://{key}.png", key), rgb, "PNG", rgb16=rgb16, bit_depth=8
    )
    return Matte(
        image,
        alpha,
        "tiny-isnet",
        "0" * 64,
        "cpu",
        "float32",
        1,
        timings=Timings(decode_ms=2.0, infer_ms=3.0),
        uncertainty=uncertainty,
    )


def _scene_matte(**kwargs: object) -> tuple[Matte, np.ndarray]:
    """A 60 x 70 disc composite with its degraded alpha as the model's; and the true alpha."""
    alpha, _, image = _composite(60, 70, 30, 36, 18)
    return _matte(_degraded(alpha), _u8(image), **kwargs), alpha  # type: ignore[arg-type]


def test_all_names_exist() -> None:
    assert all(hasattr(refine, name) for name in refine.__all__)


# --- uncertainty -----------------------------------------------------------------------


def test_uncertainty_of_a_hard_mask_is_zero() -> None:
    alpha = np.zeros((11, 17), np.float32)
    alpha[2:8, 3:12] = 1.0
    assert uncertainty(alpha) == 0.0


def test_uncertainty_of_an_empty_alpha_is_one() -> None:
    assert uncertainty(np.zeros((11, 17), np.float32)) == 1.0


def test_uncertainty_of_a_known_mix() -> None:
    alpha = np.zeros(100, np.float32)
    alpha[:30] = 0.95
    alpha[30:40] = 0.5
    assert uncertainty(alpha.reshape(10, 10)) == pytest.approx(10 / 40)


def test_uncertainty_band_is_open_at_point_one_and_point_nine() -> None:
    # 0.9 counts as confident subject, 0.1 as background: neither is ambiguous.
    alpha = np.array([[0.9, 0.9, 0.1, 0.1, 0.0]], np.float32)
    assert uncertainty(alpha) == 0.0
    alpha = np.array([[0.9, 0.1, 0.11, 0.89]], np.float32)
    assert uncertainty(alpha) == pytest.approx(2 / 3)
    assert uncertainty(np.full((3, 3), 0.1, np.float32)) == 1.0  # no subject at all


# --- guided filter ---------------------------------------------------------------------


def _edge_scene(height: int, width: int, ramp: float) -> tuple[np.ndarray, ...]:
    """(rgb, blurred alpha, ideal step, ramp columns): left half red, right half blue, and an
    alpha ramp `ramp` px wide centred on the colour edge."""
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:, : width // 2], rgb[:, width // 2 :] = RED, BLUE
    x = np.arange(width) + 0.5
    ramp_row = np.clip((x - (width / 2 - ramp / 2)) / ramp, 0.0, 1.0)
    alpha = np.tile(ramp_row, (height, 1)).astype(np.float32)
    ideal = np.tile(x > width / 2, (height, 1)).astype(np.float32)
    return rgb, alpha, ideal, np.abs(x - width / 2) < ramp / 2


def _reference_guided(guide: np.ndarray, p: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s colour guided filter, written out window by window in float64, with the
    windows reflected at the border (numpy "symmetric" is scipy's "reflect")."""
    height, width = p.shape
    n = 2 * radius + 1
    gp = np.pad(guide, ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
    pp = np.pad(p, radius, mode="symmetric")
    a = np.empty((height, width, 3))
    b = np.empty((height, width))
    for i in range(height):
        for j in range(width):
            win_i = gp[i : i + n, j : j + n].reshape(-1, 3)
            win_p = pp[i : i + n, j : j + n].reshape(-1)
            mu, mp = win_i.mean(0), win_p.mean()
            sigma = (win_i - mu).T @ (win_i - mu) / win_i.shape[0]
            cov = (win_i - mu).T @ (win_p - mp) / win_i.shape[0]
            a[i, j] = np.linalg.solve(sigma + eps * np.eye(3), cov)
            b[i, j] = mp - a[i, j] @ mu
    box = np.ones((n, n)) / n**2
    a_mean = np.stack([ndimage.convolve(a[..., c], box, mode="reflect") for c in range(3)], -1)
    b_mean = ndimage.convolve(b, box, mode="reflect")
    return np.clip((a_mean * guide).sum(-1) + b_mean, 0.0, 1.0)


def test_guided_filter_matches_a_window_by_window_reference() -> None:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (11, 17, 3), dtype=np.uint8)
    alpha = rng.random((11, 17)).astype(np.float32)
    out = guided_filter(rgb, alpha, radius=2, eps=1e-3)
    expected = _reference_guided(rgb / 255.0, alpha.astype(np.float64), 2, 1e-3)
    assert (out.shape, out.dtype) == ((11, 17), np.float32)
    assert np.abs(out - expected).max() < 1e-4


def test_guided_filter_keeps_shape_dtype_and_range() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (11, 17, 3), dtype=np.uint8)
    alpha = rng.random((11, 17)).astype(np.float32)
    out = guided_filter(rgb, alpha, radius=2, eps=1e-4)
    assert (out.shape, out.dtype) == ((11, 17), np.float32)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_guided_filter_keeps_a_constant_alpha() -> None:
    rgb, _, _, _ = _edge_scene(11, 17, 4)
    out = guided_filter(rgb, np.full((11, 17), 0.3, np.float32), radius=2, eps=1e-4)
    np.testing.assert_allclose(out, 0.3, atol=1e-5)


def test_guided_filter_snaps_a_blurred_step_to_the_colour_edge() -> None:
    # The radius is in pixels of the grid (docstring), so the case the filter exists for is a
    # full-resolution image well above the grid: here 400 px wide on an 80 px grid, as a
    # 5120 px photo on the 1024 px grid, where the 20 px ramp spans 4 grid pixels. (At full
    # resolution with radius 2 a 20 px ramp can only move within 2r of the edge: pixels
    # further away see a constant guide, so the reference filter leaves the ramp there.)
    rgb, alpha, ideal, ramp = _edge_scene(40, 400, 20)
    out = guided_filter(rgb, alpha, radius=2, eps=1e-4, grid=80)
    before = np.abs(alpha - ideal)[:, ramp].mean()
    after = np.abs(out - ideal)[:, ramp].mean()
    assert before == pytest.approx(0.25, abs=1e-3)
    assert after < before / 2, (before, after)  # measured 0.25 -> 0.10
    # Away from the ramp the result stays near the step it already was.
    assert np.abs(out - ideal)[:, ~ramp].mean() < 0.01


def test_guided_filter_sixteen_bit_guide_matches_eight_bit() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    alpha = rng.random((23, 31)).astype(np.float32)
    eight = guided_filter(rgb, alpha, radius=2, eps=1e-4)
    sixteen = guided_filter(rgb.astype(np.uint16) * 257, alpha, radius=2, eps=1e-4)
    assert np.abs(eight - sixteen).max() < 1e-3


def test_guided_filter_on_an_image_larger_than_the_grid() -> None:
    rgb, alpha, ideal, ramp = _edge_scene(1500, 100, 20)
    out = guided_filter(rgb, alpha, radius=2, eps=1e-4)  # grid 1024 < 1500 rows
    assert (out.shape, out.dtype) == ((1500, 100), np.float32)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - ideal)[:, ramp].mean() < np.abs(alpha - ideal)[:, ramp].mean()
    flat = guided_filter(rgb, np.full((1500, 100), 0.7, np.float32), radius=2, eps=1e-4)
    np.testing.assert_allclose(flat, 0.7, atol=1e-5)


# --- trimap ----------------------------------------------------------------------------


def test_trimap_values_are_zero_half_or_one() -> None:
    alpha = np.random.default_rng(0).random((37, 53)).astype(np.float32)
    alpha[5:30, 10:40] = 1.0
    alpha[:, :4] = 0.0
    out = trimap(alpha)
    assert set(np.unique(out)) == {0.0, 0.5, 1.0}


def _square_trimap(
    shape: tuple[int, int], top: int, left: int, side: int, width: int
) -> np.ndarray:
    """The expected trimap of a hard square: foreground eroded by `width` px, background by
    `width` px of 4-connected steps (scipy's default cross), so background pixels within a
    city-block distance of `width` from the square are unknown."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    dy = np.maximum(0, np.maximum(top - y, y - (top + side - 1)))
    dx = np.maximum(0, np.maximum(left - x, x - (left + side - 1)))
    inside = (dx == 0) & (dy == 0)
    depth = np.minimum(
        np.minimum(y - top, top + side - 1 - y), np.minimum(x - left, left + side - 1 - x)
    )
    out = np.full(shape, 0.5)
    out[inside & (depth >= width)] = 1.0
    out[~inside & (dx + dy > width)] = 0.0
    return out


def test_trimap_erodes_by_at_least_one_pixel() -> None:
    # 100 x 100: 0.3% of the 141 px diagonal rounds to 0, so the floor of 1 px applies.
    alpha = np.zeros((100, 100), np.float32)
    alpha[30:70, 30:70] = 1.0
    out = trimap(alpha)
    assert np.array_equal(out == 1.0, np.pad(np.ones((38, 38), bool), 31))
    assert np.count_nonzero(out == 0.5) == 4 * 39 + 4 * 40  # inner ring + outer 4-neighbours
    assert out[29, 29] == 0.0 and out[29, 30] == 0.5 and out[30, 30] == 0.5
    assert np.array_equal(out, _square_trimap((100, 100), 30, 30, 40, 1))


def test_trimap_band_scales_with_the_diagonal() -> None:
    # 600 x 800: the diagonal is 1000 px, so the band is 3 px each side.
    alpha = np.zeros((600, 800), np.float32)
    alpha[200:400, 300:500] = 1.0
    assert np.array_equal(trimap(alpha), _square_trimap((600, 800), 200, 300, 200, 3))


def test_trimap_thresholds() -> None:
    alpha = np.zeros((60, 60), np.float32)
    alpha[10:50, 10:50] = 0.96  # >= 0.95: foreground
    alpha[:, 55:] = 0.04  # <= 0.05: still background
    out = trimap(alpha)
    assert out[30, 30] == 1.0 and out[30, 57] == 0.0
    alpha[10:50, 10:50] = 0.94  # neither: all unknown
    assert np.all(trimap(alpha)[10:50, 10:50] == 0.5)


# --- matting ---------------------------------------------------------------------------


def test_matting_recovers_the_true_soft_edge() -> None:
    alpha, _, image = _composite(120, 140, 60, 70, 35)
    degraded = _degraded(alpha)
    out = matting(_u8(image), degraded)
    band = (alpha > 0) & (alpha < 1)
    before = np.abs(degraded - alpha)[band].mean()
    after = np.abs(out - alpha)[band].mean()
    assert out.dtype == np.float32 and out.shape == alpha.shape
    assert after < before / 4, (before, after)  # measured 0.088 -> 0.004


def test_matting_tiled_matches_a_single_solve() -> None:
    # 700 x 600 spans 2 x 2 tiles; the disc crosses both seams (row and column 512).
    assert _TILE < 600
    alpha, _, image = _composite(700, 600, 500, 480, 150)
    rgb, degraded = _u8(image), _degraded(alpha)
    tiled = matting(rgb, degraded)
    single = np.clip(pymatting.estimate_alpha_cf(rgb / 255.0, trimap(degraded)), 0.0, 1.0)
    diff = np.abs(tiled - single)
    # The tiles differ from one solve only by their cut context and the solver's tolerance.
    assert diff.max() < 0.01 and diff.mean() < 1e-4, (diff.max(), diff.mean())
    band = (alpha > 0) & (alpha < 1)
    assert np.abs(tiled - alpha)[band].mean() < np.abs(degraded - alpha)[band].mean() / 4


def test_matting_keeps_tiles_without_unknown_pixels_exactly() -> None:
    # A small disc only in the bottom-right tile; elsewhere a noisy background (<= 0.05).
    alpha, _, image = _composite(700, 600, 630, 575, 12)
    noise = np.random.default_rng(5).uniform(0.0, 0.04, alpha.shape).astype(np.float32)
    model = np.maximum(_degraded(alpha), noise)
    out = matting(_u8(image), model)
    top, left = _TILE, _TILE
    assert np.array_equal(out[:top], model[:top])  # the two top tiles
    assert np.array_equal(out[:, :left], model[:, :left])  # the two left tiles
    # The bottom-right tile was solved: its noisy background became (near) zero.
    corner = np.s_[top:, left : left + 20]
    assert np.abs(out[corner]).max() < 0.005 < np.abs(model[corner]).max()


def test_matting_leaves_an_all_background_alpha_unchanged() -> None:
    alpha = np.random.default_rng(2).uniform(0.0, 0.05, (40, 30)).astype(np.float32)
    rgb = np.random.default_rng(3).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    out = matting(rgb, alpha)
    assert out.dtype == np.float32 and np.array_equal(out, alpha)


# --- decontaminate ---------------------------------------------------------------------


def test_decontaminate_recovers_the_foreground_colour_on_the_soft_band() -> None:
    alpha, fg, image = _composite(120, 140, 60, 70, 35)
    rgb = _u8(image)
    out = decontaminate(rgb, alpha.astype(np.float32))
    soft = (alpha > 0.1) & (alpha < 0.9)
    raw = np.abs(rgb / 255.0 - fg)[soft].mean()
    estimated = np.abs(out / 255.0 - fg)[soft].mean()
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert estimated < raw / 10, (raw, estimated)  # measured 0.30 -> 0.0034
    band = (alpha > 1 / 512) & (alpha < 1 - 1 / 512)
    assert np.array_equal(out[~band], rgb[~band])


@pytest.mark.parametrize("side", [0, 1024, 256], ids=["full-size", "1024", "256"])
def test_decontaminate_on_a_working_copy_recovers_the_full_size_foreground(side: int) -> None:
    # 2100 x 1800 with a 12 px soft edge: the 1024 and 256 px working copies are 2x and 8x
    # smaller; the per-pixel correction at full size keeps the error near the full-size one.
    alpha, fg, image = _composite(2100, 1800, 1000, 900, 700, soft=12)
    rgb = _u8(image)
    out = decontaminate(rgb, alpha.astype(np.float32), side)
    soft = (alpha > 0.1) & (alpha < 0.9)
    raw = np.abs(rgb / 255.0 - fg)[soft].mean()
    # measured 0.266 raw -> 0.0124 (full size), 0.0109 (1024), 0.0127 (256)
    assert np.abs(out / 255.0 - fg)[soft].mean() < raw / 15, side


def test_the_correction_samples_the_working_copy_as_pillow_upsamples_it() -> None:
    # With I = 0, B0 = 0 and alpha = 0.5 everywhere, F = F0 + 0.5 (0 - 0.5 F0) = 0.75 F0: the
    # corrected pixels are F0 as sampled at full size, scaled.
    grid = np.zeros((7, 9, 6), np.float32)
    grid[..., :3] = np.random.default_rng(5).random((7, 9, 3))
    height, width = 30, 41
    out = np.zeros((height, width, 3), np.uint16)
    _compiled_correction()(
        np.zeros_like(out),
        np.full((height, width), 0.5, np.float32),
        grid,
        *_neighbours(height, 7),
        *_neighbours(width, 9),
        65535.0,
        out,
    )
    for c in range(3):
        pillow = resize_plane(grid[..., c], height, width, Image.Resampling.BILINEAR)
        np.testing.assert_allclose(out[..., c] / 65535.0, 0.75 * pillow, atol=2e-5)


def test_decontaminate_sixteen_bit_in_sixteen_bit_out() -> None:
    alpha, fg, image = _composite(60, 70, 30, 36, 18)
    rgb16 = np.rint(image * 65535).astype(np.uint16)
    out = decontaminate(rgb16, alpha.astype(np.float32))
    soft = (alpha > 0.1) & (alpha < 0.9)
    assert out.dtype == np.uint16 and out.shape == rgb16.shape
    assert np.abs(out / 65535.0 - fg)[soft].mean() < np.abs(image - fg)[soft].mean() / 10
    band = (alpha > 1 / 512) & (alpha < 1 - 1 / 512)
    assert np.array_equal(out[~band], rgb16[~band])


def test_decontaminate_without_soft_pixels_returns_the_input() -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (11, 17, 3), dtype=np.uint8)
    alpha = np.zeros((11, 17), np.float32)
    alpha[3:8, 4:12] = 1.0
    out = decontaminate(rgb, alpha)
    assert out.dtype == np.uint8 and np.array_equal(out, rgb)


# --- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"refine": "sharpen"}, "refine"),
        ({"review_threshold": -0.01}, "review_threshold"),
        ({"review_threshold": 1.5}, "review_threshold"),
        ({"review_threshold": float("nan")}, "review_threshold"),
        ({"guided_eps": 0.0}, "guided_eps"),
        ({"guided_eps": -1e-4}, "guided_eps"),
        # NaN is not positive either: it would turn every guided alpha into NaN.
        ({"guided_eps": float("nan")}, "guided_eps"),
        ({"decontaminate_side": -1}, "decontaminate_side"),
    ],
    ids=[
        "mode",
        "threshold-low",
        "threshold-high",
        "threshold-nan",
        "eps-zero",
        "eps-negative",
        "eps-nan",
        "side-negative",
    ],
)
def test_settings_reject_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        RefineSettings(**kwargs)


def test_settings_accept_the_threshold_bounds() -> None:
    assert RefineSettings(review_threshold=0.0).review_threshold == 0.0
    assert RefineSettings(review_threshold=1.0, refine="matting").refine == "matting"


# --- the DoFn --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "guided", "matting"])
@pytest.mark.parametrize("decon", [True, False], ids=["decontaminate", "plain"])
def test_dofn_refines_and_times(mode: str, decon: bool) -> None:
    matte, truth = _scene_matte()
    model_alpha, rgb = matte.alpha.copy(), matte.image.rgb
    expected = {
        "none": model_alpha,
        "guided": guided_filter(rgb, model_alpha, radius=3, eps=1e-3),  # the settings' values
        "matting": matting(rgb, model_alpha),
    }[mode]
    settings = RefineSettings(refine=mode, decontaminate=decon, guided_radius=3, guided_eps=1e-3)
    [out] = list(_RefineFn(settings).process(matte))
    assert isinstance(out, Matte)
    assert out.timings.refine_ms >= 0 and out.timings.infer_ms == 3.0
    assert (out.alpha.shape, out.alpha.dtype) == (truth.shape, np.float32)
    assert np.array_equal(out.alpha, expected)
    if mode == "matting":  # the blurred edge is pulled towards the true one
        assert np.abs(out.alpha - truth).mean() < np.abs(model_alpha - truth).mean() / 4
    if decon:
        assert out.foreground is not None
        assert (out.foreground.shape, out.foreground.dtype) == (rgb.shape, np.uint8)
        assert np.array_equal(out.foreground, decontaminate(rgb, expected))
        assert not np.array_equal(out.foreground, rgb)
    else:
        assert out.foreground is None


def test_dofn_uses_the_sixteen_bit_pixels_when_present() -> None:
    alpha, _, image = _composite(60, 70, 30, 36, 18)
    rgb16 = np.rint(image * 65535).astype(np.uint16)
    matte = _matte(alpha.astype(np.float32), _u8(image), rgb16=rgb16)
    [out] = list(_RefineFn(RefineSettings(refine="guided")).process(matte))
    assert out.foreground is not None and out.foreground.dtype == np.uint16


@pytest.mark.parametrize(
    ("threshold", "doubt", "review"),
    [(0.5, 0.5, True), (0.5, 0.49, False), (0.5, 0.9, True), (0.0, 0.0, True), (1.0, 0.99, False)],
)
def test_dofn_needs_review_at_or_above_the_threshold(
    threshold: float, doubt: float, review: bool
) -> None:
    matte, _ = _scene_matte(uncertainty=doubt)
    settings = RefineSettings(refine="none", decontaminate=False, review_threshold=threshold)
    [out] = list(_RefineFn(settings).process(matte))
    assert out.needs_review is review
    assert out.uncertainty == doubt  # the model's score; refining does not recompute it


@pytest.mark.parametrize("shape", [(6, 7), (80, 90)], ids=["smaller", "larger"])
@pytest.mark.parametrize("mode", ["none", "guided", "matting"])
def test_dofn_routes_a_mismatched_alpha_to_failures(mode: str, shape: tuple[int, int]) -> None:
    # An alpha that is not H x W of the image is broken input; passing it on would write a
    # cutout from misaligned pixels (or fail later, in the wrong stage).
    matte, _ = _scene_matte(key="broken")
    matte.alpha = np.tile(np.linspace(0, 1, shape[1], dtype=np.float32), (shape[0], 1))
    [out] = list(_RefineFn(RefineSettings(refine=mode)).process(matte))
    kind = type(out).__name__
    assert kind == "TaggedOutput", f"yielded a {kind} with a {out.alpha.shape} alpha"
    assert out.tag == "failures"
    assert isinstance(out.value, Failed)
    assert (out.value.task.id, out.value.stage) == ("broken", "refine")
    assert "mem://broken.png" in out.value.message


def test_dofn_does_not_modify_its_input_element() -> None:
    # Beam forbids mutating an input element: a runner may hand the same object to another
    # consumer of the PCollection, or reuse it on a retry (Score uses dataclasses.replace).
    matte, _ = _scene_matte(uncertainty=0.8)
    alpha = matte.alpha
    before = alpha.copy()
    [out] = list(_RefineFn(RefineSettings(refine="guided")).process(matte))
    assert out.needs_review and out.foreground is not None and out.timings.refine_ms is not None
    same = out is matte
    assert not same, "process() yielded its input element, modified in place"
    assert matte.alpha is alpha and np.array_equal(matte.alpha, before)
    assert matte.foreground is None and matte.needs_review is False
    assert matte.timings.refine_ms is None


# --- the transform ---------------------------------------------------------------------


def test_refine_in_a_pipeline() -> None:
    a, _ = _scene_matte(key="a", uncertainty=0.7)
    b, _ = _scene_matte(key="b", uncertainty=0.1)
    broken, _ = _scene_matte(key="bad")
    broken.alpha = np.zeros((80, 90), np.float32)  # larger than the 60 x 70 image
    with BeamPipeline(runner="FnApiRunner") as p:
        outputs = (
            p
            | "Mattes" >> beam.Create([a, b, broken])
            | "Refine" >> Refine(RefineSettings(refine="guided", review_threshold=0.5))
        )
        mattes = outputs.ok | "Summarise" >> beam.Map(
            lambda m: (
                m.image.task.id,
                m.needs_review,
                m.alpha.shape,
                None if m.foreground is None else str(m.foreground.dtype),
                m.timings.refine_ms is not None,
            )
        )
        failures = outputs.failures | "Codes" >> beam.Map(lambda f: (f.task.id, f.stage))
        assert_that(
            mattes,
            equal_to(
                [
                    ("a", True, (60, 70), "uint8", True),
                    ("b", False, (60, 70), "uint8", True),
                ]
            ),
            label="CheckMattes",
        )
        assert_that(failures, equal_to([("bad", "refine")]), label="CheckFailures")


# --- foreground colour the model predicts (RVM's fgr) ---------------------------------------


def test_predicted_foreground_replaces_colour_on_the_soft_band_only() -> None:
    alpha, fg, image = _composite(40, 50, 20, 25, 12)
    rgb = _u8(image)
    out = predicted_foreground(rgb, alpha, fg.astype(np.float32))
    band = (alpha > 1 / 512) & (alpha < 1 - 1 / 512)
    assert band.any() and (~band).any()
    assert np.array_equal(out[band], _u8(fg)[band])  # the model's colour, where colours mix
    assert np.array_equal(out[~band], rgb[~band])  # the source's elsewhere
    sixteen = predicted_foreground(np.rint(image * 65535).astype(np.uint16), alpha, fg)
    assert sixteen.dtype == np.uint16
    assert np.array_equal(sixteen[band], np.rint(fg[band] * 65535).astype(np.uint16))


def test_predicted_foreground_at_the_models_resolution_is_upsampled() -> None:
    alpha, _, image = _composite(40, 50, 20, 25, 12)
    flat = np.empty((16, 16, 3), np.float32)
    flat[...] = (0.2, 0.6, 1.0)  # a flat colour upsamples to itself
    out = predicted_foreground(_u8(image), alpha, flat)
    band = (alpha > 1 / 512) & (alpha < 1 - 1 / 512)
    assert np.array_equal(out[band], np.broadcast_to(np.uint8([51, 153, 255]), out[band].shape))


@pytest.mark.parametrize("decon", [True, False])
def test_dofn_takes_the_models_foreground_over_the_estimate(decon: bool) -> None:
    matte, _ = _scene_matte()
    predicted = np.zeros((*matte.alpha.shape, 3), np.float32)
    predicted[..., 1] = 1.0  # pure green: nothing an estimate would give
    matte.model_foreground = predicted
    [out] = list(_RefineFn(RefineSettings(refine="none", decontaminate=decon)).process(matte))
    assert isinstance(out, Matte)
    if not decon:
        assert out.foreground is None  # decontamination off: the source colours stay
        return
    expected = predicted_foreground(matte.image.rgb, matte.alpha, predicted)
    assert out.foreground is not None and np.array_equal(out.foreground, expected)
