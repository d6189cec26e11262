"""The hostile-input corpus: broken, misleading and oversized files a catalog meets, each with
the outcome the pipeline must give it (an output of known size, or one classified failure).

Everything is generated, nothing is committed: `write_corpus(folder)` writes the files and a
manifest (`manifest.csv`, columns id, uri) into folder. As a script it does the same:

    .venv/bin/python -m tests.hostile out/hostile      # then: matteflow run --manifest ...
"""

from __future__ import annotations

import csv
import gzip
import io
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from tests.images import (
    HEIGHT,
    WIDTH,
    animated,
    cmyk,
    encode,
    oriented,
    palette_with_transparency,
    pattern,
    png_chunk,
    sixteen_bit_grey,
    truncated,
    with_alpha,
)

__all__ = ["CASES", "Case", "write_corpus"]

# Trailing junk after a PNG's IEND: big enough that reading all of it is the cost, not the image.
JUNK_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One hostile file: its name (row id and file stem), extension, bytes, and what the
    pipeline must make of it: "ok" with outputs of `size` (width, height, after EXIF
    orientation) and `warnings`, or one failure "stage/code"."""

    name: str
    ext: str
    build: Callable[[], bytes]
    expect: str
    size: tuple[int, int] | None = None
    warnings: tuple[str, ...] = ()


def _png(width: int, height: int, *, depth: int = 8, colour: int = 2, idat: bytes = b"") -> bytes:
    """A PNG from its parts: IHDR as given, one IDAT holding `idat` (already compressed)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def _png_bomb(side: int) -> bytes:
    """A side x side 8-bit grey PNG of zeros: a few hundred KB that inflate to side**2 bytes."""
    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the row
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return _png(side, side, colour=0, idat=idat)


def _bad_idat_crc() -> bytes:
    data = bytearray(encode(pattern(), "PNG"))
    at = data.index(b"IDAT") + 4  # first byte of the IDAT body
    data[at + 2] ^= 0xFF  # the CRC no longer matches
    return bytes(data)


def _jpeg(img: Image.Image | None = None, **kwargs: object) -> bytes:
    return encode(img or pattern(), "JPEG", quality=95, **kwargs)  # type: ignore[arg-type]


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """`jpeg` with an APP1 Exif segment holding `payload` right after SOI."""
    segment = b"Exif\0\0" + payload
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + jpeg[2:]


def _jpeg_sof_size(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(_jpeg())
    at = data.index(b"\xff\xc0") + 5  # marker, length (2), precision (1), then height, width
    data[at : at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def _exif_ifd_loop() -> bytes:
    """EXIF whose IFD0 points its Exif sub-directory back at IFD0 (a cycle)."""
    entry = struct.pack(">HHII", ExifTags.IFD.Exif, 4, 1, 8)  # LONG offset 8 = IFD0 itself
    tiff = b"MM\0\x2a\0\0\0\x08" + struct.pack(">H", 1) + entry + b"\0\0\0\0"
    return _with_app1(_jpeg(), tiff)


def _bmp_header(width: int, height: int) -> bytes:
    """A BMP file and info header claiming width x height at 24 bits, with no pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def _tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one IFD claims width x height, 8-bit grey, one empty strip."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (262, 3, 1), (273, 4, 8)]
    tags += [(277, 3, 1), (278, 4, height), (279, 4, 0)]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags
    )
    return b"II\x2a\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0"


def _gif_header(width: int, height: int) -> bytes:
    """A GIF whose logical screen and one image claim width x height, with no image data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x00"
    return screen + image + b"\x3b"


def _polyglot() -> bytes:
    """A valid JPEG that is also a ZIP archive and carries an HTML script in a comment."""
    jpeg = _jpeg()
    script = b"<html><script>alert('polyglot')</script></html>"
    comment = b"\xff\xfe" + struct.pack(">H", len(script) + 2) + script
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.html", script)
    return jpeg[:2] + comment + jpeg[2:] + archive.getvalue()


def _zip() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.jpg", _jpeg())
    return archive.getvalue()


def _trailing_junk() -> bytes:
    junk = bytes(range(256)) * (JUNK_BYTES // 256)
    return encode(pattern(), "PNG") + junk


def _rgba_webp() -> bytes:
    return encode(with_alpha(), "WEBP", lossless=True)


_MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
_SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="17" height="11">'
    b'<rect width="17" height="11" fill="red"/></svg>'
)
_SIZE = (WIDTH, HEIGHT)
TRUNCATED = "decode/truncated"
UNSUPPORTED = "decode/unsupported_format"
TOO_MANY = "decode/too_many_pixels"

CASES: tuple[Case, ...] = (
    # empty, cut short
    Case("zero_bytes", "jpg", lambda: b"", "decode/empty"),
    Case("truncated_jpeg", "jpg", lambda: truncated(_jpeg(pattern(64, 48))), TRUNCATED),
    Case("jpeg_headers_only", "jpg", lambda: _jpeg()[:20], TRUNCATED),
    Case("truncated_png", "png", lambda: truncated(encode(pattern(64, 48), "PNG")), TRUNCATED),
    Case("png_signature_only", "png", lambda: b"\x89PNG\r\n\x1a\n", TRUNCATED),
    Case("truncated_webp", "webp", lambda: truncated(encode(pattern(64, 48), "WEBP")), TRUNCATED),
    Case("truncated_gif", "gif", lambda: truncated(encode(pattern(64, 48), "GIF")), TRUNCATED),
    Case("truncated_tiff", "tif", lambda: truncated(encode(pattern(64, 48), "TIFF")), TRUNCATED),
    Case("png_bad_idat_crc", "png", _bad_idat_crc, "decode/corrupt"),
    # not images, or not what the name says
    Case("png_named_jpg", "jpg", lambda: encode(pattern(), "PNG"), "ok", _SIZE),
    Case("html_named_jpg", "jpg", lambda: b"<!doctype html><p>Sign in</p>", UNSUPPORTED),
    Case("json_named_jpg", "jpg", lambda: b'{"error": "AccessDenied"}', UNSUPPORTED),
    Case("text_named_jpg", "jpg", lambda: b"image coming soon\n", UNSUPPORTED),
    Case("svg", "svg", lambda: _SVG, UNSUPPORTED),
    Case("pdf", "pdf", lambda: _MINIMAL_PDF, UNSUPPORTED),
    Case("zip_named_jpg", "jpg", _zip, UNSUPPORTED),
    Case("gzip_named_png", "png", lambda: gzip.compress(encode(pattern(), "PNG")), UNSUPPORTED),
    Case("random_bytes", "png", lambda: np.random.default_rng(8).bytes(4096), UNSUPPORTED),
    Case("polyglot_jpeg_zip_html", "jpg", _polyglot, "ok", _SIZE),
    # sizes: declared, inflated, extreme
    Case("png_declares_100000x100000", "png", lambda: _png(100_000, 100_000), TOO_MANY),
    Case("png_bomb_11000x11000", "png", lambda: _png_bomb(11_000), TOO_MANY),
    Case("jpeg_declares_65500x65500", "jpg", lambda: _jpeg_sof_size(65_500, 65_500), TOO_MANY),
    Case("gif_declares_65535x65535", "gif", lambda: _gif_header(65_535, 65_535), TOO_MANY),
    Case("bmp_declares_100000x100000", "bmp", lambda: _bmp_header(100_000, 100_000), TOO_MANY),
    Case("tiff_declares_100000x100000", "tif", lambda: _tiff_header(100_000, 100_000), TOO_MANY),
    Case("png_zero_width", "png", lambda: _png(0, 11), "decode/corrupt"),
    Case("png_zero_height", "png", lambda: _png(17, 0), "decode/corrupt"),
    Case("gif_zero_size", "gif", lambda: _gif_header(0, 0), "decode/corrupt"),
    Case("one_by_one", "png", lambda: encode(pattern(1, 1), "PNG"), "ok", (1, 1)),
    Case("one_by_10000", "png", lambda: encode(pattern(1, 10_000), "PNG"), "ok", (1, 10_000)),
    Case("10000_by_one", "png", lambda: encode(pattern(10_000, 1), "PNG"), "ok", (10_000, 1)),
    Case("png_100mb_trailing_junk", "png", _trailing_junk, "ok", _SIZE),
    # metadata: broken, looping, out of range
    Case(
        "corrupt_icc",
        "png",
        lambda: encode(pattern(), "PNG", icc=b"not a profile"),
        "ok",
        _SIZE,
        ("decode/corrupt_icc",),
    ),
    Case(
        "corrupt_exif",
        "jpg",
        lambda: _with_app1(_jpeg(), b"MM\0\x2a\0\0\0\x08\0\x05" + b"\xff" * 8),
        "ok",
        _SIZE,
        ("decode/corrupt_exif",),
    ),
    Case("exif_ifd_loop", "jpg", _exif_ifd_loop, "ok", _SIZE),
    Case("orientation_9", "png", lambda: encode(pattern(), "PNG", exif_orientation=9), "ok", _SIZE),
    Case(
        "orientation_6",
        "jpg",
        lambda: _jpeg(oriented(pattern(), 6), exif_orientation=6),
        "ok",
        _SIZE,
    ),
    # modes and containers
    Case("animated_gif", "gif", lambda: animated("GIF"), "ok", _SIZE, ("decode/first_frame_only",)),
    Case("grey_16_bit_tiff", "tif", lambda: encode(sixteen_bit_grey(), "TIFF"), "ok", _SIZE),
    Case("cmyk_jpeg_no_profile", "jpg", lambda: _jpeg(cmyk()), "ok", _SIZE),
    Case("palette_transparency", "png", lambda: encode(palette_with_transparency()), "ok", _SIZE),
    Case("rgba_webp", "webp", _rgba_webp, "ok", _SIZE),
)


def write_corpus(folder: Path) -> Path:
    """Write every case's file and `manifest.csv` (id, uri relative to folder) into folder;
    returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "uri"])
        for case in CASES:
            name = f"{case.name}.{case.ext}"
            (folder / name).write_bytes(case.build())
            writer.writerow([case.name, name])
    return manifest


if __name__ == "__main__":
    print(write_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "out/hostile")))
