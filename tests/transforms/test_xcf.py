"""encode_xcf: layers, mask, pixels, profile and determinism, read back with gimpformats (an
independent, pure-Python XCF reader that shares no code with the writer)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from gimpformats.GimpLayer import GimpLayer
from gimpformats.gimpXcfDocument import GimpDocument

from matteflow.transforms.colour import SRGB_ICC
from matteflow.transforms.xcf import encode_xcf
from tests.transforms.test_psd import _image

# (height, width): several 64-px tiles with partial edge tiles, one pixel wide, one pixel tall.
SIZES = [(70, 130), (37, 1), (1, 29)]
Case = tuple[np.ndarray, np.ndarray, np.ndarray, GimpDocument]  # rgb, alpha, shadow, document


def _read(data: bytes, tmp_path: Path) -> GimpDocument:
    path = tmp_path / "out.xcf"  # gimpformats reads from a named file only
    path.write_bytes(data)
    document = GimpDocument()
    document.load(str(path))
    return document


@pytest.fixture(params=SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    """(rgb, alpha, shadow, the XCF encoded from them with the sRGB profile, read back)."""
    rgb, alpha = _image(*request.param)
    shadow = (alpha // 3).astype(np.uint8)
    data = encode_xcf(rgb, alpha, SRGB_ICC, shadow=shadow)
    return rgb, alpha, shadow, _read(data, tmp_path)


def _layer(document: GimpDocument, name: str) -> GimpLayer:
    (layer,) = [layer for layer in document.raw_layers if layer.name == name]
    return layer


def test_document_is_an_rgb_image_of_the_input_size(case: Case) -> None:
    rgb, _, _, document = case
    assert (document.width, document.height) == (rgb.shape[1], rgb.shape[0])
    assert document.baseColorMode == 0  # RGB


def test_layers_top_to_bottom_cutout_shadow_hidden_original(case: Case) -> None:
    _, _, _, document = case
    layers = document.raw_layers
    assert [layer.name for layer in layers] == ["Cutout", "Shadow", "Original"]
    assert [layer.visible for layer in layers] == [True, True, False]
    assert [layer.opacity for layer in layers] == [255, 255, 255]  # 0..255 in XCF
    assert [layer.colorMode for layer in layers] == [1, 1, 0]  # RGBA, RGBA, RGB


def test_original_layer_is_the_image(case: Case) -> None:
    rgb, _, _, document = case
    pixels = np.asarray(_layer(document, "Original").image)
    np.testing.assert_array_equal(pixels, rgb)


def test_cutout_layer_is_opaque_image_with_alpha_as_its_applied_mask(case: Case) -> None:
    rgb, alpha, _, document = case
    cutout = _layer(document, "Cutout")
    pixels = np.asarray(cutout.image)
    np.testing.assert_array_equal(pixels[..., :3], rgb)
    assert (pixels[..., 3] == 255).all()
    assert cutout.applyMask
    assert cutout.mask is not None
    np.testing.assert_array_equal(np.asarray(cutout.mask.image), alpha)


def test_shadow_layer_is_black_with_the_shadow_as_alpha(case: Case) -> None:
    _, _, shadow, document = case
    layer = _layer(document, "Shadow")
    pixels = np.asarray(layer.image)
    assert (pixels[..., :3] == 0).all()
    np.testing.assert_array_equal(pixels[..., 3], shadow)
    assert layer.mask is None


def test_only_the_cutout_has_a_mask(case: Case) -> None:
    _, _, _, document = case
    assert [layer.mask is not None for layer in document.raw_layers] == [True, False, False]


def test_icc_profile_is_the_icc_profile_parasite_verbatim(case: Case) -> None:
    _, _, _, document = case
    (parasite,) = [p for p in document.parasites if p.name == "icc-profile"]
    assert parasite.data == SRGB_ICC


def test_header_says_version_8_and_8_bit_non_linear_precision() -> None:
    # Read from the header here: gimpformats maps version-7+ precision codes one row off.
    rgb, alpha = _image(*SIZES[0])
    data = encode_xcf(rgb, alpha)
    assert data[:14] == b"gimp xcf v008\0"
    width, height, base, precision = struct.unpack_from(">4I", data, 14)
    assert (width, height, base, precision) == (130, 70, 0, 150)


def test_without_shadow_or_profile_there_are_two_layers_and_no_parasite(tmp_path: Path) -> None:
    rgb, alpha = _image(*SIZES[0])
    document = _read(encode_xcf(rgb, alpha), tmp_path)
    assert [layer.name for layer in document.raw_layers] == ["Cutout", "Original"]
    assert not [p for p in document.parasites if p.name == "icc-profile"]


def test_cutout_layer_can_carry_other_colours_than_the_original(tmp_path: Path) -> None:
    rgb = np.zeros((6, 5, 3), np.uint8)
    clean = np.full((6, 5, 3), 200, np.uint8)  # e.g. a decontaminated foreground
    alpha = np.full((6, 5), 255, np.uint8)
    document = _read(encode_xcf(rgb, alpha, cutout=clean), tmp_path)
    assert np.array_equal(np.asarray(_layer(document, "Cutout").image)[..., :3], clean)
    assert np.array_equal(np.asarray(_layer(document, "Original").image), rgb)


@pytest.mark.parametrize("icc", [None, SRGB_ICC], ids=["no-icc", "srgb"])
def test_same_input_same_bytes(icc: bytes | None) -> None:
    rgb, alpha = _image(*SIZES[0])
    first = encode_xcf(rgb, alpha, icc, shadow=alpha)
    assert encode_xcf(rgb.copy(), alpha.copy(), icc, shadow=alpha.copy()) == first


def test_accepts_non_contiguous_views(tmp_path: Path) -> None:
    rgb, alpha = _image(64, 48)
    view_rgb, view_alpha = rgb.transpose(1, 0, 2), alpha.T  # 48 x 64, Fortran-ordered
    document = _read(encode_xcf(view_rgb, view_alpha), tmp_path)
    np.testing.assert_array_equal(np.asarray(_layer(document, "Original").image), view_rgb)


@pytest.mark.parametrize(
    ("rgb_shape", "rgb_dtype", "alpha_shape", "alpha_dtype"),
    [
        ((4, 5, 3), np.uint8, (5, 4), np.uint8),  # alpha transposed
        ((4, 5, 4), np.uint8, (4, 5), np.uint8),  # RGBA in
        ((4, 5), np.uint8, (4, 5), np.uint8),  # grey in
        ((4, 5, 3), np.float32, (4, 5), np.uint8),  # float rgb
        ((4, 5, 3), np.uint8, (4, 5), np.float32),  # float alpha
        ((0, 5, 3), np.uint8, (0, 5), np.uint8),  # empty
    ],
)
def test_rejects_other_shapes_and_dtypes(rgb_shape, rgb_dtype, alpha_shape, alpha_dtype) -> None:
    with pytest.raises(ValueError, match="expected"):
        encode_xcf(np.zeros(rgb_shape, rgb_dtype), np.zeros(alpha_shape, alpha_dtype))


def test_rejects_a_shadow_of_another_size() -> None:
    rgb, alpha = _image(8, 6)
    with pytest.raises(ValueError, match="shadow"):
        encode_xcf(rgb, alpha, shadow=alpha[:-1])
