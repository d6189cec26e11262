"""to_srgb_rgb: embedded ICC profiles -> sRGB, untagged and CMYK images, corrupt profiles."""

from __future__ import annotations

import struct
from io import BytesIO

import numpy as np
import pytest
from PIL import Image, ImageCms

from matteflow.transforms import colour
from matteflow.transforms.colour import SRGB_ICC, to_srgb_rgb
from tests.images import adobe_rgb_profile, cmyk, encode, pattern, sixteen_bit_grey


def _open(data: bytes) -> Image.Image:
    img = Image.open(BytesIO(data))
    img.load()
    return img


def _solid(rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (3, 2), rgb)


def _xy_to_xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _rgb_to_xyz(primaries: list[tuple[float, float]]) -> np.ndarray:
    """Linear RGB -> XYZ for the primaries and a D65 white."""
    prim = np.stack([_xy_to_xyz(*p) for p in primaries], axis=1)
    return prim * np.linalg.solve(prim, _xy_to_xyz(0.3127, 0.3290))


def _adobe_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """Reference N x 3 Adobe RGB (1998) -> sRGB in float 0..255, by the published definitions
    rather than LittleCMS: both spaces share the D65 white, so no adaptation is needed, and a
    matrix/TRC profile's perceptual intent is colorimetric, clipped to the sRGB gamut."""
    adobe = _rgb_to_xyz([(0.64, 0.33), (0.21, 0.71), (0.15, 0.06)])
    srgb = _rgb_to_xyz([(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)])
    linear = (rgb / 255.0) ** (563 / 256)
    out = np.clip(np.linalg.solve(srgb, adobe @ linear.T).T, 0.0, 1.0)
    encoded = np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)
    return 255.0 * encoded


def test_all_names_exist() -> None:
    assert all(hasattr(colour, name) for name in colour.__all__)


def test_adobe_red_becomes_srgb_red() -> None:
    img = _open(encode(_solid((219, 0, 0)), "PNG", icc=adobe_rgb_profile()))
    out, description, warnings = to_srgb_rgb(img)
    assert (out.mode, out.size) == ("RGB", (3, 2))
    red = np.asarray(out)[0, 0]
    assert red[0] >= 254 and red[1] <= 1 and red[2] <= 1, red
    assert description == "Adobe RGB (1998) compatible"
    assert warnings == ()


def test_adobe_rgb_matches_the_reference_conversion() -> None:
    colours = np.random.default_rng(0).integers(0, 256, size=(40, 3))
    colours[:3] = [(0, 219, 0), (0, 0, 219), (128, 128, 128)]
    img = Image.fromarray(colours.astype(np.uint8)[None])
    out, _, _ = to_srgb_rgb(_open(encode(img, "PNG", icc=adobe_rgb_profile())))
    # 1 = 0.5 for rounding to 8 bits plus LittleCMS's 16-bit interpolation (seen: 0.55).
    diff = np.abs(np.asarray(out, np.float64)[0] - _adobe_to_srgb(colours.astype(np.float64)))
    assert diff.max() <= 1.0


def test_untagged_rgb_is_unchanged() -> None:
    img = _open(encode(pattern(), "PNG"))
    out, description, warnings = to_srgb_rgb(img)
    assert np.array_equal(np.asarray(out), np.asarray(pattern()))
    assert (description, warnings) == ("", ())


@pytest.mark.parametrize("blob", [b"not a profile", bytes(200)])
def test_corrupt_profile_warns_and_keeps_pixels(blob: bytes) -> None:
    img = _open(encode(pattern(), "PNG", icc=blob))
    out, description, warnings = to_srgb_rgb(img)
    assert warnings == ("decode/corrupt_icc",)
    assert description.startswith("unusable profile ")
    assert np.array_equal(np.asarray(out), np.asarray(pattern()))


def test_untagged_cmyk_converts_to_rgb() -> None:
    src = np.asarray(cmyk(), np.float64)
    out, description, warnings = to_srgb_rgb(cmyk())
    assert (out.mode, out.size, description, warnings) == ("RGB", (17, 11), "", ())
    # Without a profile CMYK has only the naive meaning R = (1 - C)(1 - K), same for G and B.
    ink, black = src[..., :3] / 255, src[..., 3:] / 255
    expected = 255 * (1 - ink) * (1 - black)
    # Tolerance 1: Pillow's integer arithmetic rounds each product once.
    assert np.abs(np.asarray(out, np.float64) - expected).max() <= 1


def test_cmyk_conversion_uses_black() -> None:
    # A decoder that dropped K would give white where K is the only ink.
    out, _, _ = to_srgb_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 255)))
    assert np.array_equal(np.asarray(out), np.zeros((2, 2, 3), np.uint8))


def test_sixteen_bit_grey_scales_to_eight_bits() -> None:
    grey = np.asarray(sixteen_bit_grey(), np.int64)
    out, _, _ = to_srgb_rgb(sixteen_bit_grey())
    expected = (grey * 255 + 32767) // 65535  # round(v * 255 / 65535); never a tie
    assert np.array_equal(np.asarray(out), np.repeat(expected[..., None], 3, axis=2))


def test_embedded_srgb_profile_has_a_fixed_date_so_outputs_are_reproducible() -> None:
    # LittleCMS stamps a new profile with the current time; outputs must not depend on it.
    assert SRGB_ICC[24:36] == struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
    assert ImageCms.ImageCmsProfile(BytesIO(SRGB_ICC)).profile.profile_description
