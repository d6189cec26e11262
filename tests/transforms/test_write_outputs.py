"""render and WriteOutputs: every output kind, formats, composites, metadata, 16 bits, framing
and per-row settings, checked by decoding the written files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from io import BytesIO
from pathlib import Path

import apache_beam as beam
import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import ExifTags, Image
from psd_tools import PSDImage

from matteflow.transforms.colour import SRGB_ICC
from matteflow.transforms.encode import to_uint8
from matteflow.transforms.framing import FramingSettings
from matteflow.transforms.layout import OutputLayout
from matteflow.transforms.metrics import metrics_row
from matteflow.transforms.resume import Resume
from matteflow.transforms.settings import OutputSettings, with_overrides
from matteflow.transforms.types import DecodedImage, Failed, ImageTask, Matte, Written
from matteflow.transforms.write import _WriteFn, quantise_alpha, render
from tests.images import pattern, sixteen_bit_rgb

WIDTH, HEIGHT = 40, 30
# The subject: a disc centred on pixel (row 15, column 20), opaque to radius 7 and fading
# linearly to 0 at radius 11. Its box (alpha > 0.5/255) is rows 5..25, columns 10..30.
BOX = (5, 10, 26, 31)  # top, left, bottom, right (half-open)
HALF_PIXEL = (15, 29)  # radius 9: alpha 0.5 exactly
QUARTER_PIXEL = (15, 30)  # radius 10: alpha 0.25 exactly
MODEL_SHA = "ab" * 32
SOURCE_SHA = "cd" * 32
GPS_POINTER = 0x8825
NO_FRAMING = FramingSettings()
ALL_KINDS = OutputSettings(cutout=True, mask=True, composite=True, color=True, psd=True)
MATTEFLOW_NS = "{urn:matteflow:xmp:1/}"
RDF_DESCRIPTION = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description"


def _cleared(rgba: np.ndarray) -> np.ndarray:
    """What a cutout holds: no colour where alpha is 0."""
    out = rgba.copy()
    out[rgba[..., 3] == 0] = 0
    return out


def _disc_alpha() -> np.ndarray:
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    radius = np.hypot(x - 20, y - 15)
    return np.clip((11 - radius) / 4, 0.0, 1.0).astype(np.float32)


def _camera_exif() -> bytes:
    """EXIF as decode leaves it: Make, Orientation reset to 1, a GPS IFD."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "AcmeCam"
    exif[ExifTags.Base.Orientation] = 1
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (51.0, 30.0, 12.5),
        ExifTags.GPS.GPSMapDatum: "WGS-84",
    }
    return exif.tobytes()


def _matte(
    key: str = "shop/x",
    *,
    rgb16: np.ndarray | None = None,
    exif: bytes = b"",
    settings: tuple[tuple[str, str], ...] = (),
) -> Matte:
    """A 40 x 30 matte over the test pattern (or over `rgb16` rounded to 8 bits) with the disc
    as its alpha."""
    rgb = np.array(pattern(WIDTH, HEIGHT)) if rgb16 is None else to_uint8(rgb16)
    image = DecodedImage(
        ImageTask("x", "mem://x.png", key, settings=settings),
        rgb,
        "PNG",
        rgb16=rgb16,
        bit_depth=8 if rgb16 is None else 16,
        exif=exif,
        source_sha256=SOURCE_SHA,
    )
    return Matte(
        image,
        _disc_alpha(),
        "tiny-isnet",
        MODEL_SHA,
        "cpu",
        "float32",
        1,
        licence_class="permissive",
    )


def _render(
    matte: Matte, outputs: OutputSettings, framing: FramingSettings = NO_FRAMING
) -> dict[str, tuple[str, bytes]]:
    return render(matte, outputs, framing, OutputLayout("out/")).files


def _open(data: bytes) -> Image.Image:
    img = Image.open(BytesIO(data))
    img.load()
    return img


def _files(root: Path) -> list[str]:
    """Every file under root (hidden ones included), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _alpha8() -> np.ndarray:
    return quantise_alpha(_disc_alpha(), np.uint8)


def _xmp_attributes(img: Image.Image) -> dict[str, str]:
    """matteflow:* attributes (namespace stripped) of the XMP packet a PNG carries."""
    root = ET.fromstring(str(img.info["XML:com.adobe.xmp"]))
    [description] = root.iter(RDF_DESCRIPTION)
    return {
        name.removeprefix(MATTEFLOW_NS): value
        for name, value in description.attrib.items()
        if name.startswith(MATTEFLOW_NS)
    }


def _write(tmp_path: Path, matte: Matte, outputs: OutputSettings) -> dict[str, object]:
    out = str(tmp_path / "out")
    [row] = list(_WriteFn(out, outputs, NO_FRAMING, Resume(out, "settings")).process(matte))
    assert isinstance(row, Written), row
    return metrics_row(row).record()


# --- every kind at once -------------------------------------------------------------------


def test_every_kind_is_written_at_its_path_and_counted(tmp_path: Path) -> None:
    row = _write(tmp_path, _matte("shop/x"), ALL_KINDS)
    out = tmp_path / "out"
    written = {
        "cutout_uri": "cutouts/shop/x.png",
        "mask_uri": "masks/shop/x.png",
        "composite_uri": "composites/shop/x.jpg",
        "color_uri": "colors/shop/x.png",
        "psd_uri": "psd/shop/x.psd",
    }
    assert _files(tmp_path) == sorted(
        [f"out/{p}" for p in written.values()] + ["out/state/shop/x.json"]
    )
    assert {column: row[column] for column in written} == {
        column: f"{out}/{path}" for column, path in written.items()
    }
    assert (row["output_width"], row["output_height"]) == (WIDTH, HEIGHT)
    assert row["output_bytes"] == sum((out / p).stat().st_size for p in written.values())

    rgb, alpha8 = np.array(pattern(WIDTH, HEIGHT)), _alpha8()
    cutout = _open((out / written["cutout_uri"]).read_bytes())
    assert cutout.mode == "RGBA"
    assert np.array_equal(np.asarray(cutout), _cleared(np.dstack([rgb, alpha8])))
    mask = _open((out / written["mask_uri"]).read_bytes())
    assert mask.mode == "L" and np.array_equal(np.asarray(mask), alpha8)
    color = _open((out / written["color_uri"]).read_bytes())
    assert color.mode == "RGB" and np.array_equal(np.asarray(color), rgb)
    jpeg = _open((out / written["composite_uri"]).read_bytes())
    assert (jpeg.format, jpeg.mode, jpeg.size) == ("JPEG", "RGB", (WIDTH, HEIGHT))
    assert (np.asarray(jpeg)[0, 0] >= 250).all()  # a corner, outside the disc: white
    psd = PSDImage.open(BytesIO((out / written["psd_uri"]).read_bytes()))
    assert psd.size == (WIDTH, HEIGHT)

    state = json.loads((out / "state/shop/x.json").read_bytes())
    assert state["outputs"] == written  # relative to the output prefix (resume.py)


@pytest.mark.parametrize(("fmt", "ext"), [("webp", "webp"), ("tiff", "tif"), ("avif", "avif")])
def test_cutout_format_sets_extension_and_content(fmt: str, ext: str) -> None:
    files = _render(_matte("k"), OutputSettings(color=True, cutout_format=fmt))
    assert files["cutout_uri"][0] == f"out/cutouts/k.{ext}"
    assert files["color_uri"][0] == f"out/colors/k.{ext}"  # colour images use cutout_format
    assert files["mask_uri"][0] == "out/masks/k.png"  # masks are always PNG
    rgb, alpha8 = np.array(pattern(WIDTH, HEIGHT)), _alpha8()
    cutout, color = _open(files["cutout_uri"][1]), _open(files["color_uri"][1])
    assert (cutout.format, cutout.mode, cutout.size) == (fmt.upper(), "RGBA", (WIDTH, HEIGHT))
    assert (color.format, color.mode, color.size) == (fmt.upper(), "RGB", (WIDTH, HEIGHT))
    alpha_error = np.abs(np.asarray(cutout)[..., 3].astype(int) - alpha8).max()
    if fmt == "avif":  # lossy, alpha too: 1 level measured, see test_encode.py
        assert alpha_error <= 3
    else:
        assert alpha_error == 0
        assert np.array_equal(np.asarray(color), rgb)
        visible = alpha8 > 0  # lossless WebP drops the colour under alpha 0
        assert np.array_equal(np.asarray(cutout)[..., :3][visible], rgb[visible])


# --- composites ---------------------------------------------------------------------------


def test_composite_on_a_colour() -> None:
    settings = OutputSettings(
        cutout=False, mask=False, composite=True, composite_format="png", background="#1e6432"
    )
    files = _render(_matte("k"), settings)
    assert list(files) == ["composite_uri"]
    uri, data = files["composite_uri"]
    assert uri == "out/composites/k.png"
    img = _open(data)
    assert img.mode == "RGB"
    out, rgb, alpha = np.asarray(img), np.array(pattern(WIDTH, HEIGHT)), _disc_alpha()
    assert np.array_equal(out[alpha == 1], rgb[alpha == 1])
    assert (out[alpha == 0] == (30, 100, 50)).all()
    assert (alpha == 1).any() and (alpha == 0).any()
    row, col = QUARTER_PIXEL
    expected = np.rint(rgb[row, col] * 0.25 + np.array([30, 100, 50]) * 0.75)
    assert out[row, col].tolist() == expected.tolist()


def _bands(
    width: int, height: int, colours: list[tuple[int, int, int]], *, tall: bool
) -> Image.Image:
    """Bands of `colours` left to right (top to bottom when `tall`): two colours take a half
    each; three take a quarter, the middle half and a quarter."""
    pixels = np.zeros((height, width, 3), np.uint8)
    n = height if tall else width
    edges = [0, n // 4, n - n // 4, n] if len(colours) == 3 else [0, n // 2, n]
    for colour, start, stop in zip(colours, edges[:-1], edges[1:], strict=True):
        if tall:
            pixels[start:stop] = colour
        else:
            pixels[:, start:stop] = colour
    return Image.fromarray(pixels)


RED, GREEN, BLUE = (220, 20, 30), (10, 200, 40), (20, 30, 210)


@pytest.mark.parametrize(
    ("background", "left", "right", "top", "bottom"),
    [
        # Wide 40 x 10 red|green|blue: covering 40 x 30 scales it by 3 to 120 x 30 and the
        # centred crop shows only the green middle band (a stretch would show red and blue).
        (_bands(40, 10, [RED, GREEN, BLUE], tall=False), GREEN, GREEN, GREEN, GREEN),
        # Tall 10 x 40 red/green/blue: scaled by 4 to 40 x 160, again only green shows.
        (_bands(10, 40, [RED, GREEN, BLUE], tall=True), GREEN, GREEN, GREEN, GREEN),
        # Same aspect, half size: scaled by 2, red on the left and blue on the right.
        (_bands(20, 15, [RED, BLUE], tall=False), RED, BLUE, None, None),
        # Flat colour: the background everywhere outside the subject.
        (Image.new("RGB", (7, 5), RED), RED, RED, RED, RED),
    ],
    ids=["wide-bands", "tall-bands", "halves", "flat"],
)
def test_composite_on_an_image_covers_and_centres(
    tmp_path: Path,
    background: Image.Image,
    left: tuple[int, int, int],
    right: tuple[int, int, int],
    top: tuple[int, int, int] | None,
    bottom: tuple[int, int, int] | None,
) -> None:
    path = tmp_path / "backdrop.png"
    background.save(path)
    settings = OutputSettings(
        cutout=False, mask=False, composite=True, composite_format="png", background=str(path)
    )
    out = np.asarray(_open(_render(_matte("k"), settings)["composite_uri"][1]))
    assert out.shape == (HEIGHT, WIDTH, 3)
    # Columns 0..5 and 34..39 lie outside the disc and, at these scales, more than the
    # Lanczos support away from any band edge, so they hold the band colour exactly.
    assert (out[:, :6] == left).all() and (out[:, -6:] == right).all()
    if top is not None and bottom is not None:
        assert (out[:4] == top).all() and (out[-4:] == bottom).all()
    alpha = _disc_alpha()
    rgb = np.array(pattern(WIDTH, HEIGHT))
    assert np.array_equal(out[alpha == 1], rgb[alpha == 1])


# --- metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "make", "gps"),
    [
        (OutputSettings(color=True, composite=True, composite_format="png"), "AcmeCam", {}),
        (
            OutputSettings(color=True, composite=True, composite_format="png", strip_gps=False),
            "AcmeCam",
            {1: "N", 2: (51.0, 30.0, 12.5), 18: "WGS-84"},
        ),
        (
            OutputSettings(color=True, composite=True, composite_format="png", strip_metadata=True),
            None,
            {},
        ),
    ],
    ids=["default-strips-gps", "gps-kept", "all-stripped"],
)
def test_metadata_of_the_outputs(
    settings: OutputSettings, make: str | None, gps: dict[int, object]
) -> None:
    files = _render(_matte("k", exif=_camera_exif()), settings)
    for column in ("cutout_uri", "composite_uri", "color_uri"):
        img = _open(files[column][1])
        exif = img.getexif()
        assert exif.get(ExifTags.Base.Make) == make, column
        found = {
            tag: tuple(map(float, v)) if isinstance(v, tuple) else v
            for tag, v in exif.get_ifd(GPS_POINTER).items()
        }
        assert found == gps, column
        if make is None:
            assert len(exif) == 0 and "exif" not in img.info, column
        assert img.info["icc_profile"] == SRGB_ICC, column  # always, even when EXIF is stripped
        xmp = _xmp_attributes(img)
        assert (xmp["model"], xmp["modelSha256"], xmp["sourceSha256"]) == (
            "tiny-isnet",
            MODEL_SHA,
            SOURCE_SHA,
        ), column
        assert xmp["licenceClass"] == "permissive", column
        recorded = json.loads(xmp["settings"])
        assert recorded["outputs"]["strip_gps"] == settings.strip_gps
        assert recorded["framing"]["mode"] == "none"
    mask = _open(files["mask_uri"][1])  # grey: no RGB profile, no photo EXIF, but provenance
    assert "icc_profile" not in mask.info and len(mask.getexif()) == 0
    assert _xmp_attributes(mask)["model"] == "tiny-isnet"


# --- 16 bits ------------------------------------------------------------------------------


def test_sixteen_bit_source_gives_sixteen_bit_png_outputs() -> None:
    rgb16 = sixteen_bit_rgb(WIDTH, HEIGHT)
    alpha16 = quantise_alpha(_disc_alpha(), np.uint16)
    settings = OutputSettings(composite=True, composite_format="png", background="#1e6432")
    files = _render(_matte("k", rgb16=rgb16), settings)

    cutout = imagecodecs.png_decode(files["cutout_uri"][1])
    assert cutout.dtype == np.uint16
    assert np.array_equal(cutout, _cleared(np.dstack([rgb16, alpha16])))
    mask = imagecodecs.png_decode(files["mask_uri"][1])
    assert mask.dtype == np.uint16 and np.array_equal(mask.reshape(alpha16.shape), alpha16)
    composite = imagecodecs.png_decode(files["composite_uri"][1])
    assert composite.dtype == np.uint16
    outside = _disc_alpha() == 0
    assert (composite[outside] == (30 * 257, 100 * 257, 50 * 257)).all()
    inside = _disc_alpha() == 1
    assert np.array_equal(composite[inside], rgb16[inside])


def test_sixteen_bit_tiff_cutout() -> None:
    rgb16 = sixteen_bit_rgb(WIDTH, HEIGHT)
    files = _render(_matte("k", rgb16=rgb16), OutputSettings(cutout_format="tiff"))
    back = tifffile.imread(BytesIO(files["cutout_uri"][1]))
    alpha16 = quantise_alpha(_disc_alpha(), np.uint16)
    assert back.dtype == np.uint16 and np.array_equal(back, _cleared(np.dstack([rgb16, alpha16])))


def test_keep_16_bit_false_gives_eight_bits() -> None:
    rgb16 = sixteen_bit_rgb(WIDTH, HEIGHT)
    files = _render(_matte("k", rgb16=rgb16), OutputSettings(keep_16_bit=False))
    cutout = imagecodecs.png_decode(files["cutout_uri"][1])
    assert cutout.dtype == np.uint8
    assert np.array_equal(cutout, _cleared(np.dstack([to_uint8(rgb16), _alpha8()])))
    assert imagecodecs.png_decode(files["mask_uri"][1]).dtype == np.uint8


# --- framing ------------------------------------------------------------------------------


def _sizes(files: dict[str, tuple[str, bytes]]) -> dict[str, tuple[int, int]]:
    sizes = {}
    for column, (uri, data) in files.items():
        if uri.endswith(".psd"):
            sizes[column] = PSDImage.open(BytesIO(data)).size
        else:
            sizes[column] = _open(data).size
    return sizes


def test_canvas_framing_applies_to_every_output() -> None:
    framing = FramingSettings(mode="canvas", canvas_width=64, canvas_height=48)
    files = _render(_matte("k"), ALL_KINDS, framing)
    assert _sizes(files) == dict.fromkeys(files, (64, 48))
    assert len(files) == 5


def test_crop_framing_applies_to_every_output() -> None:
    framing = FramingSettings(mode="crop", margin="2")
    files = _render(_matte("k"), ALL_KINDS, framing)
    top, left, bottom, right = BOX
    size = (right - left + 4, bottom - top + 4)
    assert size == (25, 25)
    assert _sizes(files) == dict.fromkeys(files, size)
    crop = (slice(top - 2, bottom + 2), slice(left - 2, right + 2))
    rgb = np.array(pattern(WIDTH, HEIGHT))
    assert np.array_equal(np.asarray(_open(files["mask_uri"][1])), _alpha8()[crop])
    assert np.array_equal(np.asarray(_open(files["color_uri"][1])), rgb[crop])
    cutout = np.asarray(_open(files["cutout_uri"][1]))
    assert np.array_equal(cutout, _cleared(np.dstack([rgb[crop], _alpha8()[crop]])))


# --- per-row settings ---------------------------------------------------------------------


def test_row_settings_choose_kinds_and_framing(tmp_path: Path) -> None:
    row_settings = (("outputs", "mask,psd"), ("framing", "crop"))
    out = str(tmp_path / "out")
    resume = Resume(out, "settings")
    [row] = list(
        _WriteFn(out, OutputSettings(), NO_FRAMING, resume).process(
            _matte("k", settings=row_settings)
        )
    )
    assert isinstance(row, Written)
    row = metrics_row(row).record()
    assert _files(tmp_path) == ["out/masks/k.png", "out/psd/k.psd", "out/state/k.json"]
    assert (row["cutout_uri"], row["mask_uri"], row["psd_uri"]) == (
        None,
        f"{out}/masks/k.png",
        f"{out}/psd/k.psd",
    )
    top, left, bottom, right = BOX
    box = (right - left, bottom - top)
    assert (row["output_width"], row["output_height"]) == box
    assert _open((tmp_path / "out/masks/k.png").read_bytes()).size == box
    assert PSDImage.open(tmp_path / "out/psd/k.psd").size == box
    # The row's settings are part of its resume fingerprint.
    state = json.loads((tmp_path / "out/state/k.json").read_bytes())
    assert state["fingerprint"] == resume.fingerprint(SOURCE_SHA, row_settings)
    assert resume.fingerprint(SOURCE_SHA, row_settings) != resume.fingerprint(SOURCE_SHA)
    assert resume.current("k", SOURCE_SHA, row_settings) is not None
    assert resume.current("k", SOURCE_SHA) is None


def test_with_overrides_applies_values() -> None:
    outputs, framing = with_overrides(
        OutputSettings(),
        NO_FRAMING,
        {
            "outputs": " cutout , composite ",
            "cutout_format": "webp",
            "background": "#000000",
            "framing": "canvas",
            "canvas": "300x200",
        },
    )
    assert (outputs.cutout, outputs.mask, outputs.composite, outputs.color, outputs.psd) == (
        True,
        False,
        True,
        False,
        False,
    )
    assert (outputs.cutout_format, outputs.background) == ("webp", "#000000")
    assert (framing.mode, framing.canvas_width, framing.canvas_height) == ("canvas", 300, 200)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"outputs": "mask,gif"}, "^outputs: "),
        ({"outputs": " , "}, "^outputs: "),
        ({"cutout_format": "jpeg"}, "cutout_format"),
        ({"background": "#12345"}, "background"),
        ({"framing": "zoom"}, "framing"),
        ({"canvas": "20x"}, "^canvas: "),
        ({"canvas": "0x20"}, "canvas_width"),
        ({"colour": "red"}, "not a row setting: colour"),
    ],
    ids=[
        "bad-kind",
        "no-kind",
        "bad-format",
        "bad-background",
        "bad-framing",
        "bad-canvas",
        "zero-canvas",
        "unknown-column",
    ],
)
def test_with_overrides_rejects_bad_values(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        with_overrides(OutputSettings(), NO_FRAMING, overrides)


def test_a_bad_row_setting_fails_the_row_and_writes_nothing(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    matte = _matte("k", settings=(("outputs", "everything"),))
    [failure] = list(_WriteFn(out, OutputSettings(), NO_FRAMING, Resume(out, "s")).process(matte))
    assert isinstance(failure, beam.pvalue.TaggedOutput) and failure.tag == "failures"
    assert isinstance(failure.value, Failed) and "outputs" in failure.value.message
    assert _files(tmp_path) == []


# --- OutputSettings validation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cutout": False, "mask": False}, "no output selected"),
        ({"cutout_format": "jpeg"}, "cutout_format"),
        ({"composite_format": "webp"}, "composite_format"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"png_compress_level": 10}, "png_compress_level"),
        ({"background": "#fff"}, "background"),
        ({"background": "#gggggg"}, "background"),
        ({"background": "#ffffff0"}, "background"),
    ],
)
def test_output_settings_reject_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OutputSettings(**kwargs)  # type: ignore[arg-type]


# --- PSD ----------------------------------------------------------------------------------


def test_psd_has_the_original_and_the_cutout_layers() -> None:
    files = _render(_matte("k"), OutputSettings(cutout=False, mask=False, psd=True))
    assert list(files) == ["psd_uri"]
    uri, data = files["psd_uri"]
    assert uri == "out/psd/k.psd"
    psd = PSDImage.open(BytesIO(data))
    assert [layer.name for layer in psd] == ["Original", "Cutout"]
    assert psd.size == (WIDTH, HEIGHT)
    original_layer = psd[0].topil()
    assert original_layer is not None
    original = np.asarray(original_layer.convert("RGB"))
    assert np.array_equal(original, np.array(pattern(WIDTH, HEIGHT)))
    assert psd[1].mask is not None
    assert np.array_equal(np.asarray(psd[1].mask.topil()), _alpha8())
