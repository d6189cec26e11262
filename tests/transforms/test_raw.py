"""Camera RAW decoding (transforms/raw.py through decode()): size, orientation, colour, bits,
settings and failures, on a DNG made at test time (tests/raw_sample.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rawpy
from PIL import ExifTags, Image
from skimage.color import deltaE_ciede2000, rgb2lab

from matteflow.transforms.decode import DecodeSettings, decode
from matteflow.transforms.failures import DecodeError
from matteflow.transforms.raw import is_raw
from matteflow.transforms.types import ImageTask
from tests.images import colour_subject, colour_subject_interior, pattern
from tests.raw_sample import dng

SCENE = np.asarray(colour_subject())  # 96 x 80, stored as shot
INTERIOR = colour_subject_interior()
SETTINGS = DecodeSettings(max_pixels=100_000)
# Quarter turns that undo each orientation (EXIF 6: stored turned left, shown turned right).
_UPRIGHT = {1: lambda a: a, 3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1),
            8: lambda a: np.rot90(a, 1)}  # fmt: skip


def _task(uri: str = "mem://shot.dng") -> ImageTask:
    return ImageTask(id="shot", source_uri=uri, output_key="shot")


def _delta_e(actual: np.ndarray, expected: np.ndarray, where: np.ndarray) -> float:
    lab = [rgb2lab(x[where].astype(np.float64) / 255.0) for x in (actual, expected)]
    return float(np.mean(deltaE_ciede2000(*lab)))


def _rounded(rgb16: np.ndarray) -> np.ndarray:
    return np.rint(rgb16 / 257.0).astype(np.uint8)


@pytest.mark.parametrize("orientation", list(_UPRIGHT))
def test_raw_decodes_upright_at_its_size_with_sixteen_bits(orientation: int) -> None:
    image = decode(_task(), dng(SCENE, orientation), SETTINGS)
    upright = _UPRIGHT[orientation]
    assert image.rgb.shape == upright(SCENE).shape
    assert (image.source_format, image.bit_depth, image.orientation) == ("RAW", 16, orientation)
    assert image.rgb16 is not None and image.rgb16.dtype == np.uint16
    assert np.array_equal(image.rgb, _rounded(image.rgb16))  # the model's 8 bits
    # The scene's colours come back where the orientation puts them: a wrong turn (or none)
    # moves the disc off the interior mask and the error jumps (to ~75, measured).
    assert _delta_e(image.rgb, upright(SCENE), upright(INTERIOR)) < 2.0


def test_raw_colours_match_libraw_srgb_rendering() -> None:
    data = dng(SCENE, 1)
    image = decode(_task(), data, SETTINGS)
    with rawpy.imread(io.BytesIO(data)) as raw:  # LibRaw's own 8-bit sRGB, sRGB curve
        reference = raw.postprocess(
            use_camera_wb=True, no_auto_bright=True, gamma=(2.4, 12.92), output_bps=8
        )
    assert _delta_e(image.rgb, reference, INTERIOR) < 0.5


def test_raw_keeps_gradations_that_eight_bits_lose() -> None:
    image = decode(_task(), dng(SCENE, 1), SETTINGS)
    assert image.rgb16 is not None
    assert np.count_nonzero(image.rgb16 % 257) > image.rgb16.size // 2


def test_camera_white_balance_undoes_the_shot_light_and_daylight_does_not() -> None:
    data = dng(SCENE, 1, light=(0.9, 1.0, 0.35))  # a warm light: little blue reaches the sensor
    camera = decode(_task(), data, SETTINGS)
    daylight = decode(_task(), data, DecodeSettings(raw_white_balance="daylight"))
    assert _delta_e(camera.rgb, SCENE, INTERIOR) < 2.0
    assert _delta_e(daylight.rgb, SCENE, INTERIOR) > 5.0  # the light's cast stays


def test_raw_exposure_brightens_by_stops() -> None:
    data = dng(SCENE, 1)
    plain = decode(_task(), data, SETTINGS).rgb16
    brighter = decode(_task(), data, DecodeSettings(raw_exposure=1.0)).rgb16
    assert plain is not None and brighter is not None
    dark = plain[INTERIOR].astype(np.float64) < 20000  # unclipped after a doubling
    assert float(np.mean(brighter[INTERIOR][dark])) > 1.2 * float(np.mean(plain[INTERIOR][dark]))


@pytest.mark.parametrize(
    ("uri", "data", "expected"),
    [
        ("mem://a.NEF", b"", True),
        ("gs://b/c.cr3?generation=1", b"", True),
        ("mem://noext", dng(SCENE[:4, :4], 1), True),  # a DNG by its DNGVersion tag
        ("mem://noext", b"\0\0\0\x18ftypcrx \0\0\0\1", True),  # CR3 by its brand
        ("mem://a.tif", b"II*\0\x08\0\0\0\0\0", False),  # a TIFF without DNGVersion
        ("mem://a.jpg", b"\xff\xd8\xff\xe0", False),
        ("mem://mislabelled.nef", b"\xff\xd8\xff\xe0", False),  # a JPEG by its bytes
        ("mem://mislabelled.dng", b"\x89PNG\r\n\x1a\n", False),
    ],
)
def test_raw_is_recognised_by_extension_or_content(uri: str, data: bytes, expected: bool) -> None:
    assert is_raw(uri, data) is expected


@pytest.mark.parametrize(("uri", "fmt"), [("mem://x.tif", "TIFF"), ("mem://named.dng", "JPEG")])
def test_pillow_formats_do_not_take_the_raw_path(uri: str, fmt: str) -> None:
    buf = io.BytesIO()
    pattern().save(buf, fmt)
    assert decode(_task(uri), buf.getvalue(), SETTINGS).source_format == fmt


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"not a raw file at all" * 40, "unsupported_format"),
        (dng(SCENE, 1)[:200], "corrupt"),  # the header and no more
        (dng(SCENE, 1)[:8000], "corrupt"),  # cut short mid-data
    ],
    ids=["garbage", "header-only", "cut-short"],
)
def test_unreadable_raw_is_a_classified_decode_error(data: bytes, code: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_task(), data, SETTINGS)
    assert (caught.value.stage, caught.value.code) == ("decode", code)
    assert "mem://shot.dng" in str(caught.value)


def test_raw_over_the_pixel_limit_is_refused() -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_task(), dng(SCENE, 1), DecodeSettings(max_pixels=96 * 80 - 1))
    assert caught.value.code == "too_many_pixels"


@pytest.mark.parametrize(
    ("field", "value"), [("raw_white_balance", "tungsten"), ("raw_exposure", 4.0)]
)
def test_raw_settings_are_checked(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        DecodeSettings(**{field: value})  # type: ignore[arg-type]


def test_raw_keeps_its_descriptive_exif_with_orientation_reset() -> None:
    image = decode(_task(), dng(SCENE, 6), SETTINGS)
    exif = Image.Exif()
    exif.load(image.exif)
    assert (exif[ExifTags.Base.Make], exif[ExifTags.Base.Model]) == ("matteflow", "test camera")
    assert exif[ExifTags.Base.Orientation] == 1  # applied to the pixels already
