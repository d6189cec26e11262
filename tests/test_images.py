"""Checks of the in-memory test images in tests/images.py, which the decode tests rely on."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, ImageOps

from tests import images
from tests.images import (
    adobe_rgb_profile,
    cmyk,
    display_p3_profile,
    encode,
    oriented,
    palette_with_transparency,
    pattern,
    sixteen_bit_grey,
    truncated,
    with_alpha,
)

ORIENTATIONS = range(1, 9)
ORIENTATION_TAG = ExifTags.Base.Orientation


def _decode(data: bytes) -> Image.Image:
    with Image.open(BytesIO(data)) as img:
        img.load()
        return img


def _to_srgb(profile: bytes, rgb: tuple[int, int, int]) -> tuple[int, ...]:
    src = ImageCms.ImageCmsProfile(BytesIO(profile))
    srgb = ImageCms.createProfile("sRGB")
    out = ImageCms.profileToProfile(Image.new("RGB", (1, 1), rgb), src, srgb)
    assert out is not None
    return tuple(out.getpixel((0, 0)))  # type: ignore[arg-type]


def test_all_names_exist() -> None:
    assert all(hasattr(images, name) for name in images.__all__)


def test_pattern_is_odd_and_non_square() -> None:
    img = pattern()
    assert (img.size, img.mode) == ((17, 11), "RGB")


@pytest.mark.parametrize("orientation", range(2, 9))
def test_pattern_changes_under_every_flip_and_rotation(orientation: int) -> None:
    square = pattern(11, 11)  # same size either way, so only the pixels can differ
    assert not np.array_equal(np.asarray(oriented(square, orientation)), np.asarray(square))


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA"])
def test_pattern_converts_to_mode(mode: str) -> None:
    assert pattern(mode=mode).mode == mode


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_oriented_png_round_trips_through_exif_transpose(orientation: int) -> None:
    img = pattern()
    data = encode(oriented(img, orientation), "PNG", exif_orientation=orientation)
    upright = ImageOps.exif_transpose(_decode(data))
    assert np.array_equal(np.asarray(upright), np.asarray(img))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_oriented_jpeg_round_trips_within_codec_error(orientation: int) -> None:
    img = pattern()
    data = encode(oriented(img, orientation), "JPEG", exif_orientation=orientation)
    upright = np.asarray(ImageOps.exif_transpose(_decode(data)), dtype=np.int16)
    # q75 4:2:0 on 17x11 hard edges gives about 6 mean error; a wrong orientation gives >= 60.
    assert np.abs(upright - np.asarray(img, dtype=np.int16)).mean() < 10


@pytest.mark.parametrize("orientation", [0, 9])
def test_oriented_rejects_values_outside_exif(orientation: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.8"):
        oriented(pattern(), orientation)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_encode_embeds_orientation_and_profile(fmt: str) -> None:
    data = encode(pattern(), fmt, exif_orientation=6, icc=adobe_rgb_profile())
    with Image.open(BytesIO(data)) as img:
        assert img.format == fmt
        assert img.getexif()[ORIENTATION_TAG] == 6
        assert img.info["icc_profile"] == adobe_rgb_profile()


def test_encode_keeps_invalid_orientation_values() -> None:
    with Image.open(BytesIO(encode(pattern(), exif_orientation=9))) as img:
        assert img.getexif()[ORIENTATION_TAG] == 9


@pytest.mark.parametrize("fmt", ["BMP", "GIF"])
def test_encode_refuses_formats_that_drop_the_tag(fmt: str) -> None:
    with pytest.raises(ValueError, match="did not keep"):
        encode(pattern(), fmt, exif_orientation=6)


@pytest.mark.parametrize(
    ("profile", "description", "rgb", "srgb"),
    [
        (adobe_rgb_profile(), "Adobe RGB (1998) compatible", (219, 0, 0), (255, 0, 0)),
        (display_p3_profile(), "Display P3", (234, 51, 35), (255, 0, 0)),
    ],
    ids=["adobe-rgb", "display-p3"],
)
def test_profiles_convert_their_red_to_srgb_red(
    profile: bytes, description: str, rgb: tuple[int, int, int], srgb: tuple[int, int, int]
) -> None:
    parsed = ImageCms.ImageCmsProfile(BytesIO(profile))
    assert ImageCms.getProfileDescription(parsed).strip() == description
    # One 8-bit step of slack: LittleCMS versions round the last step differently.
    assert np.abs(np.subtract(_to_srgb(profile, rgb), srgb)).max() <= 1


def test_sixteen_bit_grey_survives_png_with_low_bytes() -> None:
    img = sixteen_bit_grey()
    values = np.asarray(img)
    assert img.mode == "I;16"
    assert values.max() > 255 and np.any(values % 256 != 0)
    assert np.array_equal(np.asarray(_decode(encode(img))), values)


def test_cmyk_uses_the_black_channel() -> None:
    img = cmyk()
    assert img.mode == "CMYK"
    assert np.asarray(img)[..., 3].max() > 0


def test_palette_has_transparent_and_opaque_pixels() -> None:
    img = _decode(encode(palette_with_transparency()))
    alpha = np.asarray(img.convert("RGBA"))[..., 3]
    assert img.mode == "P"
    assert set(np.unique(alpha)) == {0, 255}


def test_with_alpha_is_soft() -> None:
    alpha = np.asarray(with_alpha())[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255
    assert np.any((alpha > 0) & (alpha < 255))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_bytes_fail_to_load(fmt: str) -> None:
    with pytest.raises(OSError):
        _decode(truncated(encode(pattern(), fmt)))


@pytest.mark.parametrize("keep", [-0.1, 1.0])
def test_truncated_rejects_keep_outside_range(keep: float) -> None:
    with pytest.raises(ValueError, match="keep"):
        truncated(b"abcd", keep)
