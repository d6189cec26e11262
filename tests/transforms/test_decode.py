"""FetchAndDecode: bytes -> upright sRGB pixels, and every failure classified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline  # not collected
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from matteflow.transforms import decode as decode_module
from matteflow.transforms.decode import DecodeSettings, FetchAndDecode, _DecodeFn, decode
from matteflow.transforms.failures import DecodeError
from matteflow.transforms.resume import Resume
from matteflow.transforms.types import DecodedImage, Failed, ImageTask
from tests.images import (
    adobe_rgb_profile,
    cmyk,
    encode,
    oriented,
    palette_with_transparency,
    pattern,
    sixteen_bit_grey,
    truncated,
    with_alpha,
)

MAX_PIXELS = 10_000
SETTINGS = DecodeSettings(max_pixels=MAX_PIXELS)
# An output prefix with no state records: every row is processed.
NO_RESUME = Resume("/nonexistent/matteflow-test-output", "settings")
UPRIGHT = np.asarray(pattern())  # 11 x 17 x 3


def _task(uri: str = "mem://x.png") -> ImageTask:
    return ImageTask(id="x", source_uri=uri, output_key="x")


@pytest.fixture
def restore_pillow_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """_DecodeFn.setup() lifts Pillow's global bomb limit; put it back after the test."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def test_all_names_exist() -> None:
    assert all(hasattr(decode_module, name) for name in decode_module.__all__)


# --- plain functions ---------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    data = encode(oriented(pattern(), orientation), "PNG", exif_orientation=orientation)
    image = decode(_task(), data, SETTINGS)
    assert image.rgb.dtype == np.uint8
    assert np.array_equal(image.rgb, UPRIGHT)
    assert (image.orientation, image.width, image.height) == (orientation, 17, 11)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_jpeg(orientation: int) -> None:
    data = encode(oriented(pattern(), orientation), "JPEG", exif_orientation=orientation)
    image = decode(_task("mem://x.jpg"), data, SETTINGS)
    error = np.abs(image.rgb.astype(np.int16) - UPRIGHT).mean()
    # q75 4:2:0 on 17x11 hard edges gives about 6 mean error; a wrong orientation gives >= 60.
    assert error < 10
    assert (image.source_format, image.orientation) == ("JPEG", orientation)


@pytest.mark.parametrize("tag", [0, 9])
def test_invalid_orientation_is_ignored_and_recorded_as_none(tag: int) -> None:
    image = decode(_task(), encode(pattern(), "PNG", exif_orientation=tag), SETTINGS)
    assert np.array_equal(image.rgb, UPRIGHT)
    assert image.orientation == 1


@pytest.mark.parametrize(
    "img",
    [
        pattern(mode="L"),
        pattern(mode="LA"),
        pattern(mode="RGBA"),
        with_alpha(),
        palette_with_transparency(),
    ],
    ids=["L", "LA", "RGBA", "soft-alpha", "P+tRNS"],
)
def test_other_modes_decode_to_rgb(img: Image.Image) -> None:
    image = decode(_task(), encode(img, "PNG"), SETTINGS)
    assert (image.rgb.shape, image.rgb.dtype) == ((11, 17, 3), np.uint8)
    assert np.array_equal(image.rgb, np.asarray(img.convert("RGB")))


def test_sixteen_bit_grey_keeps_its_range() -> None:
    # Regression: Pillow's convert("L") clipped I;16 at 255, leaving a black-and-white image.
    grey = np.asarray(sixteen_bit_grey(), np.int64)
    image = decode(_task(), encode(sixteen_bit_grey(), "PNG"), SETTINGS)
    assert np.array_equal(image.rgb[..., 1], (grey * 255 + 32767) // 65535)


def test_cmyk_tiff_decodes_to_rgb() -> None:
    image = decode(_task("mem://x.tif"), encode(cmyk(), "TIFF"), SETTINGS)
    assert (image.source_format, image.rgb.shape) == ("TIFF", (11, 17, 3))
    assert np.array_equal(image.rgb, np.asarray(cmyk().convert("RGB")))


def test_icc_profile_is_converted_and_described() -> None:
    data = encode(Image.new("RGB", (5, 3), (219, 0, 0)), "PNG", icc=adobe_rgb_profile())
    image = decode(_task(), data, SETTINGS)
    assert image.icc_description == "Adobe RGB (1998) compatible"
    assert image.rgb[0, 0, 0] >= 254  # test_colour checks the conversion in detail
    assert image.warnings == ()


def test_corrupt_icc_is_a_warning_not_a_failure() -> None:
    image = decode(_task(), encode(pattern(), "PNG", icc=b"not a profile"), SETTINGS)
    assert image.warnings == ("decode/corrupt_icc",)
    assert np.array_equal(image.rgb, UPRIGHT)


def test_decoded_array_is_writable() -> None:
    # torch.from_numpy warns on (and cannot share) a read-only array.
    assert decode(_task(), encode(pattern(), "PNG"), SETTINGS).rgb.flags.writeable


# Cut points for the 17 x 11 pattern (a 740-byte JPEG whose tables take 620 bytes, a 124-byte
# PNG); mid-segment cuts here, cuts exactly between segments below.
@pytest.mark.parametrize(
    ("fmt", "keep"),
    [
        ("JPEG", 0.5),  # inside the header tables: Pillow says "Truncated File Read"
        ("JPEG", 0.9),  # inside the scan: "image file is truncated (n bytes not processed)"
        ("PNG", 0.5),  # inside IDAT
    ],
)
def test_truncated_file_is_classified_truncated(fmt: str, keep: float) -> None:
    uri = f"mem://x.{fmt.lower()}"
    with pytest.raises(DecodeError) as info:
        decode(_task(uri), truncated(encode(pattern(), fmt), keep), SETTINGS)
    assert (info.value.stage, info.value.code) == ("decode", "truncated")
    assert uri in str(info.value)


@pytest.mark.parametrize(
    ("fmt", "cut"),
    [("JPEG", 2 + 18), ("PNG", 8 + 25)],  # after SOI + JFIF APP0; after signature + IHDR
    ids=["jpeg-after-app0", "png-after-ihdr"],
)
def test_file_cut_between_segments_is_truncated(fmt: str, cut: int) -> None:
    with pytest.raises(DecodeError) as info:
        decode(_task(), encode(pattern(), fmt)[:cut], SETTINGS)
    assert info.value.code == "truncated"


@pytest.mark.parametrize(
    "data",
    [b"<html><body>Not found</body></html>", b"\x00" * 64],
    ids=["html", "zeros"],
)
def test_non_image_bytes_are_unsupported_format(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode(_task("mem://x.jpg"), data, SETTINGS)
    assert (info.value.stage, info.value.code) == ("decode", "unsupported_format")


def test_empty_file_is_its_own_code() -> None:
    with pytest.raises(DecodeError) as info:
        decode(_task("mem://x.jpg"), b"", SETTINGS)
    assert (info.value.stage, info.value.code) == ("decode", "empty")


def test_image_at_the_pixel_limit_decodes() -> None:
    assert (
        decode(_task(), encode(pattern(), "PNG"), DecodeSettings(max_pixels=17 * 11)).height == 11
    )


def test_image_over_the_pixel_limit_is_refused() -> None:
    with pytest.raises(DecodeError) as info:
        decode(_task(), encode(pattern(), "PNG"), DecodeSettings(max_pixels=17 * 11 - 1))
    assert (info.value.stage, info.value.code) == ("decode", "too_many_pixels")
    assert "17x11" in str(info.value)


# --- the DoFn ------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """name -> path of a good rotated PNG, an HTML page named .jpg and a missing file."""
    (tmp_path / "good.png").write_bytes(encode(oriented(pattern(), 6), "PNG", exif_orientation=6))
    (tmp_path / "page.jpg").write_text("<html>not an image</html>")
    return {name: str(tmp_path / name) for name in ("good.png", "page.jpg", "gone.png")}


def _run(fn: _DecodeFn, task: ImageTask) -> list[object]:
    out: Iterator[object] = fn.process(task)
    return list(out)


def test_dofn_emits_decoded_image_with_timings(
    files: dict[str, str], restore_pillow_limit: None
) -> None:
    fn = _DecodeFn(SETTINGS, NO_RESUME)
    fn.setup()
    [image] = _run(fn, ImageTask("good", files["good.png"], "good"))
    assert isinstance(image, DecodedImage)
    assert np.array_equal(image.rgb, UPRIGHT) and image.orientation == 6
    assert image.timings.fetch_ms >= 0 and image.timings.decode_ms >= 0
    assert image.timings.total_ms == image.timings.fetch_ms + image.timings.decode_ms


@pytest.mark.parametrize(
    ("name", "stage", "code"),
    [
        ("page.jpg", "decode", "unsupported_format"),
        ("gone.png", "fetch", "not_found"),
        ("", "manifest", "missing_uri"),
    ],
)
def test_dofn_emits_failures_under_the_failures_tag(
    files: dict[str, str], restore_pillow_limit: None, name: str, stage: str, code: str
) -> None:
    fn = _DecodeFn(SETTINGS, NO_RESUME)
    fn.setup()
    task = ImageTask("t", files.get(name, ""), "t")
    [out] = _run(fn, task)
    assert isinstance(out, beam.pvalue.TaggedOutput) and out.tag == "failures"
    failure = out.value
    assert isinstance(failure, Failed)
    assert (failure.task, failure.stage, failure.code) == (task, stage, code)


def test_dofn_applies_its_own_pixel_limit(
    files: dict[str, str], restore_pillow_limit: None
) -> None:
    fn = _DecodeFn(DecodeSettings(max_pixels=100), NO_RESUME)
    fn.setup()
    [out] = _run(fn, ImageTask("good", files["good.png"], "good"))
    assert isinstance(out, beam.pvalue.TaggedOutput)
    assert (out.value.stage, out.value.code) == ("decode", "too_many_pixels")


def test_dofn_classifies_unforeseen_errors(
    files: dict[str, str], restore_pillow_limit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object) -> DecodedImage:
        raise RuntimeError("boom")

    monkeypatch.setattr(decode_module, "decode", explode)
    fn = _DecodeFn(SETTINGS, NO_RESUME)
    fn.setup()
    [out] = _run(fn, ImageTask("good", files["good.png"], "good"))
    assert isinstance(out, beam.pvalue.TaggedOutput) and out.tag == "failures"
    assert (out.value.stage, out.value.code) == ("decode", "unexpected")
    assert "RuntimeError: boom" in out.value.message


# --- the transform -------------------------------------------------------------------------


def test_fetch_and_decode_splits_images_and_failures(
    files: dict[str, str], restore_pillow_limit: None
) -> None:
    tasks = [ImageTask(n, files[n], n) for n in ("good.png", "page.jpg", "gone.png")]
    with BeamPipeline(runner="FnApiRunner") as p:
        outputs = (
            p
            | "Tasks" >> beam.Create(tasks)
            | "FetchAndDecode" >> FetchAndDecode(SETTINGS, NO_RESUME)
        )
        shapes = outputs.ok | "Shape" >> beam.Map(
            lambda im: (im.task.id, im.rgb.shape, im.orientation)
        )
        codes = outputs.failures | "Code" >> beam.Map(lambda f: (f.task.id, f.stage, f.code))
        assert_that(shapes, equal_to([("good.png", (11, 17, 3), 6)]), label="CheckImages")
        assert_that(
            codes,
            equal_to(
                [("page.jpg", "decode", "unsupported_format"), ("gone.png", "fetch", "not_found")]
            ),
            label="CheckFailures",
        )
