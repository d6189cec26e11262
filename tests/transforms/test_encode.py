"""encode: every output format round-tripped through a real decoder, with its metadata."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
import zlib
from io import BytesIO

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import ExifTags, Image, TiffImagePlugin

from matteflow.transforms import encode as encode_module
from matteflow.transforms.colour import SRGB_ICC
from matteflow.transforms.encode import Metadata, encode, output_exif, provenance_xmp, to_uint8
from tests.images import pattern, sixteen_bit_rgb

MATTEFLOW_NS = "{urn:matteflow:xmp:1/}"
RDF_DESCRIPTION = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description"
XMP_NS = "{http://ns.adobe.com/xap/1.0/}"
GPS_POINTER = 0x8825  # ExifTags.IFD.GPSInfo
# AVIF is lossy even for its alpha plane: at quality 90 the 17 x 11 test alpha came back with a
# largest error of 1 level (measured with Pillow 12.3's libavif); 3 leaves room for encoder
# updates while still catching a dropped or inverted alpha.
AVIF_ALPHA_TOLERANCE = 3
ALL_FORMATS = ["png", "webp", "tiff", "avif", "jpeg"]


def _alpha(width: int = 17, height: int = 11) -> np.ndarray:
    """H x W uint8: five transparent columns, a ramp of partial values, five opaque columns."""
    alpha = np.zeros((height, width), np.uint8)
    alpha[:, 5:-5] = np.linspace(17, 240, width - 10).round().astype(np.uint8)[None, :]
    alpha[:, -5:] = 255
    return alpha


def _rgba() -> np.ndarray:
    return np.dstack([np.array(pattern()), _alpha()])


def _source_exif(*, gps: bool = True) -> bytes:
    """A camera's EXIF after decode: Make, Orientation reset to 1, and (with `gps`) a GPS IFD
    whose strings are easy to look for in the raw bytes."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "AcmeCam"
    exif[ExifTags.Base.Orientation] = 1
    if gps:
        exif[ExifTags.IFD.GPSInfo] = {
            ExifTags.GPS.GPSLatitudeRef: "N",
            ExifTags.GPS.GPSLatitude: (51.0, 30.0, 12.5),
            ExifTags.GPS.GPSLongitudeRef: "W",
            ExifTags.GPS.GPSLongitude: (0.0, 7.0, 39.0),
            ExifTags.GPS.GPSMapDatum: "WGS-84-SECRET",
        }
    return exif.tobytes()


def _exif(block: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(block)
    return exif


def _meta() -> Metadata:
    exif = output_exif(_source_exif(gps=False), strip_gps=True, strip_metadata=False)
    return Metadata(SRGB_ICC, exif, provenance_xmp({"model": "tiny-isnet", "run": "r1"}))


def _open(data: bytes) -> Image.Image:
    img = Image.open(BytesIO(data))
    img.load()
    return img


def _xmp(img: Image.Image) -> bytes:
    """The XMP packet where each format keeps it."""
    if img.format == "PNG":
        return str(img.info["XML:com.adobe.xmp"]).encode()
    if isinstance(img, TiffImagePlugin.TiffImageFile):
        return bytes(img.tag_v2[700])
    return bytes(img.info["xmp"])


def _matteflow_attributes(xmp: bytes) -> dict[str, str]:
    """The matteflow:* attributes (namespace stripped) and xmp:CreatorTool of a packet."""
    root = ET.fromstring(xmp)
    [description] = root.iter(RDF_DESCRIPTION)
    found = {
        name.removeprefix(MATTEFLOW_NS): value
        for name, value in description.attrib.items()
        if name.startswith(MATTEFLOW_NS)
    }
    found["CreatorTool"] = description.attrib[XMP_NS + "CreatorTool"]
    return found


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes, int]]:
    """(type, body, stored CRC) of every chunk of a PNG file."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        chunks.append((kind, body, crc))
        pos += 12 + length
    assert pos == len(data)
    return chunks


def test_all_names_exist() -> None:
    assert all(hasattr(encode_module, name) for name in encode_module.__all__)


# --- 8-bit round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "webp", "tiff", "avif"])
def test_rgba_round_trip_keeps_alpha(fmt: str) -> None:
    pixels = _rgba()
    img = _open(encode(pixels, fmt, _meta(), lossless=True))
    assert (img.format, img.mode, img.size) == (fmt.upper(), "RGBA", (17, 11))
    back = np.asarray(img)
    alpha_error = np.abs(back[..., 3].astype(int) - pixels[..., 3]).max()
    if fmt == "avif":
        assert alpha_error <= AVIF_ALPHA_TOLERANCE
        assert (back[:, :5, 3] <= AVIF_ALPHA_TOLERANCE).all()  # the clear columns stay clear
        assert (back[:, -5:, 3] >= 255 - AVIF_ALPHA_TOLERANCE).all()
    else:
        assert alpha_error == 0
        # Lossless: the colour of every visible pixel is exact. (libwebp drops the colour
        # under alpha 0 unless asked for `exact`; nothing shows there.)
        visible = pixels[..., 3] > 0
        assert np.array_equal(back[..., :3][visible], pixels[..., :3][visible])


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_srgb_profile_is_embedded(fmt: str) -> None:
    img = _open(encode(_rgba(), fmt, _meta()))
    assert img.info["icc_profile"] == SRGB_ICC


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_exif_is_carried(fmt: str) -> None:
    exif = _open(encode(_rgba(), fmt, _meta())).getexif()
    assert exif.get(ExifTags.Base.Make) == "AcmeCam"
    assert str(exif.get(ExifTags.Base.Software)).startswith("matteflow ")


@pytest.mark.parametrize("fmt", [f for f in ALL_FORMATS if f != "tiff"])
def test_gps_is_carried_when_not_stripped(fmt: str) -> None:
    exif = output_exif(_source_exif(), strip_gps=False, strip_metadata=False)
    meta = Metadata(SRGB_ICC, exif, provenance_xmp({"model": "tiny-isnet"}))
    gps = _open(encode(_rgba(), fmt, meta)).getexif().get_ifd(GPS_POINTER)
    assert gps.get(ExifTags.GPS.GPSMapDatum) == "WGS-84-SECRET"


def test_tiff_keeps_descriptive_exif_tags_but_no_sub_directories() -> None:
    # Documented in encode.py: neither tifffile nor Pillow's compressed TIFF writer can write
    # the Exif and GPS directories, so a TIFF never carries GPS, even when asked to keep it.
    exif = output_exif(_source_exif(), strip_gps=False, strip_metadata=False)
    data = encode(_rgba(), "tiff", Metadata(SRGB_ICC, exif, b""))
    tags = _open(data).getexif()
    assert tags.get(ExifTags.Base.Make) == "AcmeCam"
    assert GPS_POINTER not in tags and b"WGS-84-SECRET" not in data


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_provenance_xmp_is_carried(fmt: str) -> None:
    xmp = _xmp(_open(encode(_rgba(), fmt, _meta())))
    attributes = _matteflow_attributes(xmp)
    assert (attributes["model"], attributes["run"]) == ("tiny-isnet", "r1")
    assert attributes["CreatorTool"].startswith("matteflow ")


def test_encoding_without_metadata_adds_none() -> None:
    img = _open(encode(_rgba(), "png", Metadata()))
    assert "icc_profile" not in img.info
    assert "XML:com.adobe.xmp" not in img.info
    assert len(img.getexif()) == 0


# --- 16 bits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pixels",
    [sixteen_bit_rgb(alpha=True), sixteen_bit_rgb()[..., 2]],
    ids=["rgba", "grey"],
)
def test_sixteen_bit_png_round_trips_exactly_with_metadata(pixels: np.ndarray) -> None:
    meta = _meta()
    data = encode(pixels, "png", meta, compress_level=6)

    back = imagecodecs.png_decode(data)
    assert back.dtype == np.uint16
    assert np.array_equal(back.reshape(pixels.shape), pixels)

    chunks = _png_chunks(data)
    for kind, body, crc in chunks:
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
    kinds = [kind for kind, _, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    # The metadata chunks come before the image data, as the PNG spec requires.
    first_idat = kinds.index(b"IDAT")
    assert {b"iCCP", b"eXIf", b"iTXt"} <= set(kinds[:first_idat])
    ihdr = chunks[0][1]
    assert ihdr[8] == 16  # bit depth

    img = _open(data)  # Pillow checks the CRCs and parses every chunk
    assert img.info["icc_profile"] == SRGB_ICC
    assert _xmp(img) == meta.xmp
    assert img.getexif().get(ExifTags.Base.Make) == "AcmeCam"


def test_sixteen_bit_tiff_round_trips_exactly_with_metadata() -> None:
    pixels = sixteen_bit_rgb(alpha=True)
    meta = _meta()
    data = encode(pixels, "tiff", meta)
    assert np.array_equal(tifffile.imread(BytesIO(data)), pixels)
    with tifffile.TiffFile(BytesIO(data)) as tif:
        page = tif.pages.first
        assert page.dtype == np.uint16
        assert page.tags[34675].value == SRGB_ICC  # InterColorProfile
        assert bytes(page.tags[700].value) == meta.xmp  # XMP
        assert str(page.tags[305].value).startswith("matteflow ")  # Software
        assert page.tags["ExtraSamples"].value == (2,)  # unassociated alpha
    img = _open(data)  # Pillow reads it too
    assert (img.size, img.info["icc_profile"]) == ((17, 11), SRGB_ICC)


def test_to_uint8_rounds() -> None:
    # 386 -> 1.502 and 65400 -> 254.47: rounding, not truncation (which gives 1 and 255).
    wide = np.array([0, 128, 129, 386, 32896, 65400, 65535], np.uint16)
    assert to_uint8(wide).tolist() == [0, 0, 1, 2, 128, 254, 255]
    assert to_uint8(wide).dtype == np.uint8
    narrow = np.array([0, 7, 255], np.uint8)
    assert to_uint8(narrow) is narrow


@pytest.mark.parametrize("fmt", ["webp", "jpeg", "avif"])
def test_eight_bit_formats_round_sixteen_bit_input(fmt: str) -> None:
    wide = sixteen_bit_rgb(alpha=True)
    narrow = to_uint8(wide)
    assert not np.array_equal(narrow, (wide >> 8).astype(np.uint8))  # rounding matters here
    data = encode(wide, fmt, Metadata(), quality=80)
    # The encoders are deterministic: same 8-bit pixels, same bytes.
    assert data == encode(narrow, fmt, Metadata(), quality=80)
    img = _open(data)
    assert img.mode == ("RGB" if fmt == "jpeg" else "RGBA")
    if fmt == "webp":  # lossless by default, and every alpha is > 0: exact
        assert np.array_equal(np.asarray(img), narrow)


# --- JPEG -----------------------------------------------------------------------------------


def test_jpeg_drops_alpha_and_quality_changes_the_size() -> None:
    pixels = np.dstack([np.array(pattern(64, 48)), np.full((48, 64), 9, np.uint8)])
    low = encode(pixels, "jpeg", Metadata(), quality=50)
    high = encode(pixels, "jpeg", Metadata(), quality=95)
    assert len(low) < len(high)
    img = _open(high)
    assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (64, 48))
    # The colour is kept, not premultiplied by the faint alpha (that would be near black): the
    # mean error is 0.86 levels at quality 95; 2 allows for encoder changes.
    error = np.abs(np.asarray(img).astype(int) - pixels[..., :3]).mean()
    assert error < 2


# --- EXIF and XMP ---------------------------------------------------------------------------


def test_output_exif_strips_the_gps_ifd_and_keeps_the_rest() -> None:
    source = _source_exif()
    assert b"WGS-84-SECRET" in source and GPS_POINTER in _exif(source)
    out = output_exif(source, strip_gps=True, strip_metadata=False)
    assert out.startswith(b"Exif\0\0")
    assert b"WGS-84-SECRET" not in out
    exif = _exif(out)
    assert GPS_POINTER not in exif
    assert exif.get_ifd(GPS_POINTER) == {}
    assert exif[ExifTags.Base.Make] == "AcmeCam"
    assert exif[ExifTags.Base.Orientation] == 1
    assert str(exif[ExifTags.Base.Software]).startswith("matteflow ")


def test_output_exif_keeps_gps_when_asked() -> None:
    exif = _exif(output_exif(_source_exif(), strip_gps=False, strip_metadata=False))
    gps = exif.get_ifd(GPS_POINTER)
    assert gps[ExifTags.GPS.GPSLatitudeRef] == "N"
    assert tuple(float(v) for v in gps[ExifTags.GPS.GPSLatitude]) == (51.0, 30.0, 12.5)
    assert gps[ExifTags.GPS.GPSMapDatum] == "WGS-84-SECRET"
    assert exif[ExifTags.Base.Make] == "AcmeCam"


@pytest.mark.parametrize(
    ("source", "strip_metadata"),
    [(_source_exif(), True), (b"", False), (b"", True)],
    ids=["stripped", "absent", "absent-and-stripped"],
)
def test_output_exif_is_empty_when_stripped_or_absent(source: bytes, strip_metadata: bool) -> None:
    assert output_exif(source, strip_gps=False, strip_metadata=strip_metadata) == b""


def test_provenance_xmp_escapes_values_and_parses() -> None:
    fields = {
        "model": 'isnet "general" <use> & more',
        "modelSha256": "ab" * 32,
        "settings": '{"background": "#ffffff", "note": "it\'s"}',
    }
    xmp = provenance_xmp(fields)
    text = xmp.decode()
    assert text.startswith("<?xpacket begin=") and text.endswith('<?xpacket end="w"?>')
    assert "<use>" not in text and "& more" not in text  # escaped, not raw
    # The packet without its processing instructions parses alone too.
    body = text[text.index("?>") + 2 : text.rindex("<?xpacket")].encode()
    for document in (xmp, body):
        attributes = _matteflow_attributes(document)
        assert {name: attributes[name] for name in fields} == fields
        assert attributes["CreatorTool"].startswith("matteflow ")


def test_unknown_format_raises() -> None:
    with pytest.raises(ValueError, match="unknown output format 'bmp'"):
        encode(_rgba(), "bmp", Metadata())
    with pytest.raises(ValueError, match="unknown output format 'jpg'"):  # the extension, not a key
        encode(_rgba(), "jpg", Metadata())
