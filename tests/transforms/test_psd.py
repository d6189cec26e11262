"""encode_psd: layers, mask, merged composite, ICC resource and determinism, read back with
psd-tools."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import ImageCms
from psd_tools import PSDImage
from psd_tools.api.layers import Layer
from psd_tools.constants import ColorMode, Resource
from psd_tools.psd import PSD

from matteflow.transforms.psd import encode_psd

# (height, width): non-square, one pixel wide, one pixel tall.
SIZES = [(48, 64), (37, 1), (1, 29)]
Case = tuple[np.ndarray, np.ndarray, PSDImage]  # rgb, alpha, the re-opened PSD
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _image(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """rgb: red rises left to right, green top to bottom, blue with x - y, so no flip or
    transpose leaves it unchanged; alpha: an off-centre ellipse, 255 inside, 0 well outside,
    with a soft edge of partial values between."""
    y, x = np.mgrid[:height, :width].astype(np.float64)
    rgb = np.dstack(
        [
            255 * x / max(width - 1, 1),
            255 * y / max(height - 1, 1),
            128 + 100 * (x / max(width, 1) - y / max(height, 1)),
        ]
    )
    cx, cy = 0.4 * width, 0.45 * height
    r = np.hypot((x - cx) / max(0.35 * width, 1), (y - cy) / max(0.35 * height, 1))
    alpha = np.clip((1.6 - r) * 255, 0, 255)
    return np.rint(rgb).astype(np.uint8), np.rint(alpha).astype(np.uint8)


@pytest.fixture(scope="module", params=SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def case(request: pytest.FixtureRequest) -> Case:
    """(rgb, alpha, the PSD encoded from them with the sRGB profile, re-opened)."""
    rgb, alpha = _image(*request.param)
    return rgb, alpha, PSDImage.open(io.BytesIO(encode_psd(rgb, alpha, SRGB)))


def _layer(psd: PSDImage, name: str) -> Layer:
    (layer,) = [layer for layer in psd if layer.name == name]
    return layer


def test_test_image_has_transparent_partial_and_opaque_pixels() -> None:
    _, alpha = _image(*SIZES[0])
    assert {0, 255} <= set(np.unique(alpha))
    assert ((alpha > 0) & (alpha < 255)).sum() > 50


def test_document_is_8_bit_rgb_with_merged_transparency(case: Case) -> None:
    rgb, _, psd = case
    assert psd.size == (rgb.shape[1], rgb.shape[0])
    assert psd.color_mode == ColorMode.RGB
    assert psd.depth == 8
    assert psd.channels == 4


def test_two_layers_original_hidden_below_cutout_visible(case: Case) -> None:
    _, _, psd = case
    assert [layer.name for layer in psd] == ["Original", "Cutout"]  # bottom to top
    assert [layer.kind for layer in psd] == ["pixel", "pixel"]
    assert [layer.visible for layer in psd] == [False, True]
    assert [layer.opacity for layer in psd] == [255, 255]


@pytest.mark.parametrize("name", ["Original", "Cutout"])
def test_layer_pixels_are_the_opaque_image_over_the_canvas(case: Case, name: str) -> None:
    rgb, _, psd = case
    layer = _layer(psd, name)
    assert layer.bbox == (0, 0, rgb.shape[1], rgb.shape[0])
    pixels = np.asarray(layer.topil(apply_icc=False))
    assert pixels.shape == (*rgb.shape[:2], 4)
    np.testing.assert_array_equal(pixels[..., :3], rgb)
    assert (pixels[..., 3] == 255).all()


def test_only_the_cutout_has_a_mask(case: Case) -> None:
    _, _, psd = case
    assert [layer.has_mask() for layer in psd] == [False, True]


def test_cutout_mask_is_alpha_over_the_whole_canvas(case: Case) -> None:
    rgb, alpha, psd = case
    mask = _layer(psd, "Cutout").mask
    assert mask is not None
    assert mask.bbox == (0, 0, rgb.shape[1], rgb.shape[0])
    assert not mask.disabled
    assert mask.background_color == 0  # outside the mask (nowhere here) is hidden
    np.testing.assert_array_equal(np.asarray(mask.topil(real=False, apply_icc=False)), alpha)


def test_stored_composite_is_the_cutout(case: Case) -> None:
    rgb, alpha, psd = case
    assert psd.has_preview()
    merged = np.asarray(psd.topil(apply_icc=False))
    assert merged.shape == (*rgb.shape[:2], 4)
    np.testing.assert_array_equal(merged[..., 3], alpha)
    opaque = alpha == 255
    np.testing.assert_array_equal(merged[opaque, :3], rgb[opaque])
    # The file stores colour matted on white, rounded to 8 bits, and the reader divides by
    # alpha again: the error is at most 0.5 * 255 / alpha + 0.5, so <= 3 from alpha 64 up.
    soft = (alpha >= 64) & ~opaque
    diff = np.abs(merged[soft, :3].astype(int) - rgb[soft])
    assert diff.max(initial=0) <= 3


def test_stored_planes_are_matted_on_white_as_photoshop_stores_them() -> None:
    """The raw merged planes (read with psd-tools' low-level reader): colour composited over
    white, then the matte; white where fully transparent, the image where opaque."""
    rgb, alpha = _image(*SIZES[0])
    record = PSD.read(io.BytesIO(encode_psd(rgb, alpha)))
    raw = record.image_data.get_data(record.header, split=False)  # channel after channel
    assert isinstance(raw, bytes)
    stored = np.frombuffer(raw, np.uint8).reshape(4, *alpha.shape).transpose(1, 2, 0)
    np.testing.assert_array_equal(stored[..., 3], alpha)
    a = alpha[..., None] / 255
    matted = rgb * a + 255 * (1 - a)
    np.testing.assert_array_equal(stored[alpha == 0, :3], 255)
    np.testing.assert_array_equal(stored[alpha == 255, :3], rgb[alpha == 255])
    # psd-tools composites in float32, so a value near .5 may round either way.
    assert np.abs(stored[..., :3] - matted).max() <= 0.5 + 1e-3


def test_layers_render_to_the_cutout(case: Case) -> None:
    """Re-rendered from the layers rather than read from the stored composite: the hidden
    Original contributes nothing and the mask is the only transparency."""
    rgb, alpha, psd = case
    rendered = np.asarray(psd.composite(ignore_preview=True, apply_icc=False))
    np.testing.assert_array_equal(rendered[..., 3], alpha)
    opaque = alpha == 255
    np.testing.assert_array_equal(rendered[opaque, :3], rgb[opaque])


def test_icc_profile_is_embedded_verbatim(case: Case) -> None:
    _, _, psd = case
    assert psd.image_resources.get_data(Resource.ICC_PROFILE) == SRGB


def test_no_icc_resource_without_a_profile() -> None:
    rgb, alpha = _image(*SIZES[0])
    psd = PSDImage.open(io.BytesIO(encode_psd(rgb, alpha)))
    assert Resource.ICC_PROFILE not in psd.image_resources
    assert np.array_equal(np.asarray(psd.topil())[..., 3], alpha)


@pytest.mark.parametrize("icc", [None, SRGB], ids=["no-icc", "srgb"])
def test_same_input_same_bytes(icc: bytes | None) -> None:
    rgb, alpha = _image(*SIZES[0])
    first = encode_psd(rgb, alpha, icc)
    assert encode_psd(rgb.copy(), alpha.copy(), icc) == first


def test_accepts_non_contiguous_views() -> None:
    rgb, alpha = _image(64, 48)
    view_rgb, view_alpha = rgb.transpose(1, 0, 2), alpha.T  # 48 x 64, Fortran-ordered
    psd = PSDImage.open(io.BytesIO(encode_psd(view_rgb, view_alpha)))
    pixels = np.asarray(_layer(psd, "Original").topil())
    np.testing.assert_array_equal(pixels[..., :3], view_rgb)


@pytest.mark.parametrize(
    ("rgb_shape", "rgb_dtype", "alpha_shape", "alpha_dtype"),
    [
        ((4, 5, 3), np.uint8, (5, 4), np.uint8),  # alpha transposed
        ((4, 5, 4), np.uint8, (4, 5), np.uint8),  # RGBA in
        ((4, 5), np.uint8, (4, 5), np.uint8),  # grey in
        ((4, 5, 3), np.float32, (4, 5), np.uint8),  # float rgb
        ((4, 5, 3), np.uint8, (4, 5), np.float32),  # float alpha (use write.alpha_to_uint8)
        ((0, 5, 3), np.uint8, (0, 5), np.uint8),  # empty
    ],
)
def test_rejects_other_shapes_and_dtypes(rgb_shape, rgb_dtype, alpha_shape, alpha_dtype) -> None:
    with pytest.raises(ValueError, match="expected"):
        encode_psd(np.zeros(rgb_shape, rgb_dtype), np.zeros(alpha_shape, alpha_dtype))


def test_cutout_layer_can_carry_other_colours_than_the_original() -> None:
    rgb = np.zeros((6, 5, 3), np.uint8)
    clean = np.full((6, 5, 3), 200, np.uint8)  # e.g. a decontaminated foreground
    alpha = np.full((6, 5), 255, np.uint8)
    psd = PSDImage.open(io.BytesIO(encode_psd(rgb, alpha, cutout=clean)))
    original, cut = list(psd)
    assert np.array_equal(np.asarray(original.topil().convert("RGB")), rgb)
    assert np.array_equal(np.asarray(cut.topil().convert("RGB")), clean)


def test_shadow_layer_lies_between_original_and_cutout() -> None:
    rgb, alpha = _image(*SIZES[0])
    shadow = (alpha // 2).astype(np.uint8)
    psd = PSDImage.open(io.BytesIO(encode_psd(rgb, alpha, shadow=shadow)))
    assert [layer.name for layer in psd] == ["Original", "Shadow", "Cutout"]
    layer = _layer(psd, "Shadow")
    pixels = layer.topil()
    assert pixels is not None
    left, top, right, bottom = layer.bbox  # psd-tools keeps the non-transparent box
    rgba = np.asarray(pixels.convert("RGBA"))
    np.testing.assert_array_equal(rgba[..., 3], shadow[top:bottom, left:right])
    assert (rgba[..., :3][rgba[..., 3] > 0] == 0).all()


def test_rejects_a_shadow_of_another_size() -> None:
    rgb, alpha = _image(8, 6)
    with pytest.raises(ValueError, match="shadow"):
        encode_psd(rgb, alpha, shadow=alpha[:-1])
