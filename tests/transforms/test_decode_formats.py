"""decode(): every input format, animation, 16-bit precision, source alpha, EXIF and intent."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pillow_heif
import pytest
from PIL import ExifTags, Image, ImageCms

from matteflow.transforms.decode import DecodeSettings, decode
from matteflow.transforms.types import ImageTask
from tests.images import (
    adobe_rgb_profile,
    animated,
    colour_subject,
    encode,
    encode16,
    oriented,
    palette_with_transparency,
    pattern,
    sixteen_bit_rgb,
    with_alpha,
)

SETTINGS = DecodeSettings(max_pixels=100_000)
UPRIGHT = np.asarray(pattern())  # 11 x 17 x 3
FIRST_FRAME_ONLY = "decode/first_frame_only"
ORIENTATION = ExifTags.Base.Orientation


def _task(uri: str = "mem://x") -> ImageTask:
    return ImageTask(id="x", source_uri=uri, output_key="x")


def _error(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.abs(actual.astype(np.int32) - expected.astype(np.int32))


def _heic(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # quality=-1 is libheif's lossless mode; 4:4:4 keeps the chroma of the pattern's sharp
    # corner block (4:2:0 smears it by up to 29 levels).
    pillow_heif.from_pillow(img).save(buf, quality=-1, chroma=444)
    return buf.getvalue()


def _srgb(profile: bytes, pixels: np.ndarray) -> np.ndarray:
    """Pillow's own 8-bit ImageCms conversion of `pixels` from `profile` to sRGB."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    converted = ImageCms.profileToProfile(
        Image.fromarray(pixels), source, ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    assert converted is not None
    return np.asarray(converted)


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "source_format"),
    [
        ("WEBP", {"lossless": True}, "WEBP"),
        ("BMP", {}, "BMP"),
        ("TIFF", {}, "TIFF"),
        ("PNG", {}, "PNG"),
        # The pattern has 173 colours, so a GIF palette holds it exactly.
        ("GIF", {}, "GIF"),
    ],
)
def test_lossless_formats_decode_to_the_exact_pixels(
    fmt: str, options: dict[str, Any], source_format: str
) -> None:
    image = decode(_task(), encode(pattern(), fmt, **options), SETTINGS)
    assert (image.rgb.dtype, image.source_format) == (np.uint8, source_format)
    assert np.array_equal(image.rgb, UPRIGHT)
    assert (image.frames, image.bit_depth, image.rgb16, image.warnings) == (1, 8, None, ())


def test_palette_gif_decodes_to_its_palette_colours() -> None:
    quantised = pattern(48, 32).quantize(colors=16)  # 16 colours for 48 x 32 = 1536 pixels
    image = decode(_task(), encode(quantised, "GIF"), SETTINGS)
    assert image.source_format == "GIF"
    assert np.array_equal(image.rgb, np.asarray(quantised.convert("RGB")))


@pytest.mark.parametrize(
    ("data", "source_format", "max_error", "mean_error"),
    [
        # Measured on the 17 x 11 pattern: AVIF q100 4:4:4 max 2 / mean 0.54, HEIC lossless
        # 4:4:4 (YCbCr rounding only) max 1 / mean 0.30, JPEG q95 4:4:4 max 10 / mean 1.4.
        # A flipped or rotated decode is off by a mean of about 85.
        (encode(pattern(), "AVIF", quality=100, subsampling="4:4:4"), "AVIF", 4, 1.5),
        (_heic(pattern()), "HEIF", 2, 1.0),
        (encode(pattern(), "JPEG", quality=95, subsampling=0), "JPEG", 16, 3.0),
    ],
    ids=["AVIF", "HEIC", "JPEG"],
)
def test_lossy_formats_decode_to_close_pixels(
    data: bytes, source_format: str, max_error: int, mean_error: float
) -> None:
    image = decode(_task(), data, SETTINGS)
    assert image.source_format == source_format
    assert image.rgb.shape == UPRIGHT.shape
    error = _error(image.rgb, UPRIGHT)
    assert error.max() <= max_error and error.mean() < mean_error, (error.max(), error.mean())
    assert (image.frames, image.bit_depth, image.warnings) == (1, 8, ())


# --- animation -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"], ids=["GIF", "WebP", "APNG"])
def test_animated_file_gives_its_first_frame_and_says_so(fmt: str) -> None:
    image = decode(_task(), animated(fmt, [(200, 30, 30), (40, 160, 60), (30, 90, 200)]), SETTINGS)
    assert image.frames == 3
    assert FIRST_FRAME_ONLY in image.warnings
    assert image.rgb.shape == (11, 17, 3)
    assert (image.rgb == (200, 30, 30)).all()  # lossless, flat frames: exact


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_single_frame_file_has_one_frame_and_no_warning(fmt: str) -> None:
    image = decode(_task(), animated(fmt, [(40, 160, 60)]), SETTINGS)
    assert image.frames == 1
    assert FIRST_FRAME_ONLY not in image.warnings
    assert (image.rgb == (40, 160, 60)).all()


# --- 16 bits -------------------------------------------------------------------------------


def _rounded(rgb16: np.ndarray) -> np.ndarray:
    return np.rint(rgb16 / 257.0).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_untagged_sixteen_bit_rgb_keeps_every_value(fmt: str) -> None:
    source = sixteen_bit_rgb()
    image = decode(_task(), encode16(source, fmt), SETTINGS)
    assert (image.bit_depth, image.source_format) == (16, fmt)
    assert image.rgb16 is not None and image.rgb16.dtype == np.uint16
    assert np.array_equal(image.rgb16, source)  # untagged is sRGB: nothing to convert
    assert np.array_equal(image.rgb, _rounded(source))
    assert image.source_alpha is None


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_rgba_keeps_its_sixteen_bit_alpha(fmt: str) -> None:
    source = sixteen_bit_rgb(alpha=True)
    image = decode(_task(), encode16(source, fmt), SETTINGS)
    assert image.rgb16 is not None and np.array_equal(image.rgb16, source[..., :3])
    assert image.source_alpha is not None and image.source_alpha.dtype == np.uint16
    assert np.array_equal(image.source_alpha, source[..., 3])


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_adobe_rgb_matches_pillows_eight_bit_conversion(fmt: str) -> None:
    # Saturated primaries and secondaries included: Adobe RGB green is outside sRGB and clips.
    eight = np.asarray(colour_subject(40, 32))
    data = encode16(eight.astype(np.uint16) * 257, fmt, icc=adobe_rgb_profile())
    image = decode(_task(), data, SETTINGS)
    assert image.icc_description == "Adobe RGB (1998) compatible"
    assert image.rgb16 is not None
    expected = _srgb(adobe_rgb_profile(), eight)
    assert _error(_rounded(image.rgb16), expected).max() <= 1
    assert _error(image.rgb, expected).max() <= 1
    assert not np.array_equal(image.rgb, eight)  # the conversion did something


def test_sixteen_bit_conversion_keeps_more_than_eight_bits() -> None:
    # 3072 distinct grey levels; converted at 16 bits they stay about 3064 distinct sRGB
    # levels, converted at 8 bits (and widened) they would be at most 256.
    ramp = np.rint(np.linspace(0, 65535, 48 * 64)).astype(np.uint16).reshape(48, 64)
    grey = np.repeat(ramp[..., None], 3, axis=2)
    image = decode(_task(), encode16(grey, "TIFF", icc=adobe_rgb_profile()), SETTINGS)
    assert image.rgb16 is not None
    levels = [len(np.unique(image.rgb16[..., c])) for c in range(3)]
    assert min(levels) > 1024, levels
    assert np.all(np.diff(image.rgb16[..., 1].ravel().astype(np.int64)) >= 0)  # still a ramp


# --- orientation of every plane ------------------------------------------------------------


def _stored_for_orientation_6(pixels: np.ndarray) -> np.ndarray:
    """What a camera stores for upright `pixels` under EXIF orientation 6 (rotate 90° CW to
    view): the upright picture turned a quarter counter-clockwise."""
    return np.ascontiguousarray(np.rot90(pixels, 1))


def test_orientation_applies_to_eight_bit_source_alpha() -> None:
    rgba = with_alpha()
    image = decode(_task(), encode(oriented(rgba, 6), "PNG", exif_orientation=6), SETTINGS)
    assert image.orientation == 6
    assert np.array_equal(image.rgb, np.asarray(rgba)[..., :3])
    assert image.source_alpha is not None
    assert np.array_equal(image.source_alpha, np.asarray(rgba)[..., 3])


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_orientation_applies_to_rgb16_and_sixteen_bit_alpha(fmt: str) -> None:
    upright = sixteen_bit_rgb(alpha=True)  # 11 x 17 x 4
    data = encode16(_stored_for_orientation_6(upright), fmt, exif_orientation=6)
    image = decode(_task(), data, SETTINGS)
    assert image.rgb16 is not None and image.source_alpha is not None
    assert image.rgb16.shape == (11, 17, 3), "rgb16 was not turned upright"
    assert np.array_equal(image.rgb16, upright[..., :3])
    assert np.array_equal(image.rgb, _rounded(upright[..., :3]))
    assert np.array_equal(image.source_alpha, upright[..., 3])


@pytest.mark.parametrize("bits", [8, 16])
def test_tiff_orientation_is_recorded(bits: int) -> None:
    # The orientation column of the metrics row must say 6 for a TIFF as it does for a PNG.
    if bits == 8:
        data = encode(oriented(pattern(), 6), "TIFF", exif_orientation=6)
    else:
        data = encode16(_stored_for_orientation_6(sixteen_bit_rgb()), "TIFF", exif_orientation=6)
    image = decode(_task(), data, SETTINGS)
    assert image.orientation == 6


# --- source alpha --------------------------------------------------------------------------


def test_partial_alpha_is_kept_as_source_alpha() -> None:
    rgba = with_alpha()
    image = decode(_task(), encode(rgba, "PNG"), SETTINGS)
    assert image.source_alpha is not None and image.source_alpha.dtype == np.uint8
    assert np.array_equal(image.source_alpha, np.asarray(rgba)[..., 3])


def test_fully_opaque_alpha_is_none() -> None:
    image = decode(_task(), encode(pattern(mode="RGBA"), "PNG"), SETTINGS)
    assert image.source_alpha is None
    assert np.array_equal(image.rgb, UPRIGHT)


def test_palette_transparency_becomes_the_alpha_mask() -> None:
    img = palette_with_transparency()
    image = decode(_task(), encode(img, "PNG"), SETTINGS)
    expected = np.where(np.asarray(img) == 0, 0, 255).astype(np.uint8)
    assert image.source_alpha is not None
    assert (expected == 0).sum() > 0  # the builder's transparent block is there
    assert np.array_equal(image.source_alpha, expected)


def test_grey_with_alpha_keeps_its_alpha() -> None:
    alpha = with_alpha().getchannel("A")
    image = decode(_task(), encode(Image.merge("LA", [pattern(mode="L"), alpha]), "PNG"), SETTINGS)
    assert image.source_alpha is not None
    assert np.array_equal(image.source_alpha, np.asarray(alpha))
    grey = np.asarray(pattern(mode="L"))
    assert all(np.array_equal(image.rgb[..., c], grey) for c in range(3))


# --- EXIF ----------------------------------------------------------------------------------


def test_exif_is_carried_with_orientation_reset() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    exif[ORIENTATION] = 6
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (52.0, 22.0, 5.0),
    }
    buf = io.BytesIO()
    oriented(pattern(), 6).save(buf, "JPEG", exif=exif, quality=95, subsampling=0)
    image = decode(_task(), buf.getvalue(), SETTINGS)
    assert image.orientation == 6 and image.rgb.shape == UPRIGHT.shape
    assert _error(image.rgb, UPRIGHT).mean() < 3  # q95 4:4:4; a wrong turn is off by ~85
    carried = Image.Exif()
    carried.load(image.exif)
    assert carried[ExifTags.Base.Make] == "TestCam"
    assert carried[ORIENTATION] == 1  # the pixels are upright now
    gps = carried.get_ifd(ExifTags.IFD.GPSInfo)  # stripped later, at write, if asked
    assert gps[ExifTags.GPS.GPSLatitudeRef] == "N"
    assert gps[ExifTags.GPS.GPSLatitude] == (52.0, 22.0, 5.0)


def test_tiff_exif_carries_neither_the_source_profile_nor_its_strip_layout() -> None:
    # Pillow's getexif() on a TIFF is the whole image IFD: strip offsets, sample layout and the
    # embedded ICC profile (tag 34675). Carried as "the source's EXIF" into sRGB outputs, it
    # declares the source's Adobe RGB profile beside the sRGB one.
    buf = io.BytesIO()
    pattern().save(buf, "TIFF", icc_profile=adobe_rgb_profile())
    image = decode(_task(), buf.getvalue(), SETTINGS)
    carried = Image.Exif()
    if image.exif:
        carried.load(image.exif)
    inter_colour_profile, strip_offsets = 34675, 273
    assert inter_colour_profile not in carried, f"EXIF tags carried: {sorted(carried)}"
    assert strip_offsets not in carried, f"EXIF tags carried: {sorted(carried)}"


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """`jpeg` with an APP1 Exif segment holding `payload` right after SOI."""
    segment = b"Exif\0\0" + payload
    return jpeg[:2] + b"\xff\xe1" + (len(segment) + 2).to_bytes(2, "big") + segment + jpeg[2:]


@pytest.mark.parametrize(
    ("payload", "notes"),
    [
        # Pillow skips an Exif segment without a TIFF header silently: nothing to note.
        (b"\x13\x37 not a TIFF header, just garbage " * 3, ()),
        # A valid header whose IFD claims 5 entries of which only 8 bytes follow: Pillow warns
        # "Corrupt EXIF data" and gives an empty block.
        (b"MM\0\x2a\0\0\0\x08" + b"\0\x05" + b"\xff" * 8, ("decode/corrupt_exif",)),
    ],
    ids=["garbage", "truncated-ifd"],
)
def test_corrupt_exif_is_a_warning_not_a_failure(payload: bytes, notes: tuple[str, ...]) -> None:
    data = _with_app1(encode(pattern(), "JPEG", quality=95, subsampling=0), payload)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own warning becomes our classified note
        image = decode(_task(), data, SETTINGS)
    assert _error(image.rgb, UPRIGHT).mean() < 3
    assert image.orientation == 1
    assert image.exif == b""  # nothing malformed is handed on to the writer
    assert image.warnings == notes


# --- rendering intent ----------------------------------------------------------------------


def test_unknown_intent_is_refused() -> None:
    with pytest.raises(ValueError, match="intent: expected one of perceptual, relative"):
        DecodeSettings(intent="bogus")


@pytest.mark.parametrize(
    "data",
    [
        encode(colour_subject(40, 32), "PNG", icc=adobe_rgb_profile()),
        encode16(sixteen_bit_rgb(), "TIFF", icc=adobe_rgb_profile()),
    ],
    ids=["8-bit-png", "16-bit-tiff"],
)
def test_matrix_profile_gives_the_same_pixels_for_perceptual_and_relative(data: bytes) -> None:
    # A matrix/TRC profile has no perceptual table: LittleCMS falls back to colorimetric.
    perceptual = decode(_task(), data, DecodeSettings(intent="perceptual"))
    relative = decode(_task(), data, DecodeSettings(intent="relative"))
    assert perceptual.icc_description == relative.icc_description == "Adobe RGB (1998) compatible"
    assert perceptual.warnings == relative.warnings == ()
    assert np.array_equal(perceptual.rgb, relative.rgb)
    assert (perceptual.rgb16 is None) == (relative.rgb16 is None) == (perceptual.bit_depth == 8)
    if perceptual.rgb16 is not None and relative.rgb16 is not None:
        assert np.array_equal(perceptual.rgb16, relative.rgb16)
