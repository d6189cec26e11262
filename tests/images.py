"""Tiny test images built in memory, for the decode, colour and orientation tests.

Every builder returns a fresh `PIL.Image` (or encoded bytes) at an odd, non-square default size,
with an asymmetric layout so that a wrong rotation, flip or transpose changes the pixels.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any

import imagecodecs
import numpy as np
import tifffile
from PIL import ExifTags, Image

__all__ = [
    "adobe_rgb_profile",
    "animated",
    "cmyk",
    "colour_subject",
    "colour_subject_interior",
    "display_p3_profile",
    "encode",
    "encode16",
    "oriented",
    "palette_with_transparency",
    "pattern",
    "png_chunk",
    "sixteen_bit_grey",
    "sixteen_bit_rgb",
    "truncated",
    "with_alpha",
]

WIDTH, HEIGHT = 17, 11

# The transpose that undoes each EXIF orientation, as `ImageOps.exif_transpose` applies it.
# `oriented` applies the inverse, which differs only for the two quarter turns.
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE = {
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
}


def _ramp(n: int) -> np.ndarray:
    """0..255 uint8 over `n` steps (a single step is 0)."""
    return np.round(np.linspace(0, 255, n)).astype(np.uint8)


def _pattern_rgb(width: int, height: int) -> np.ndarray:
    """H x W x 3 uint8: red rises left to right, green top to bottom, blue is 64; a white block
    of a third by a third in the top-left corner and a pure blue pixel in the bottom-right."""
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = _ramp(width)[None, :]
    rgb[..., 1] = _ramp(height)[:, None]
    rgb[..., 2] = 64
    rgb[: max(1, height // 3), : max(1, width // 3)] = 255
    rgb[-1, -1] = (0, 0, 255)
    return rgb


def pattern(width: int = WIDTH, height: int = HEIGHT, *, mode: str = "RGB") -> Image.Image:
    """The asymmetric RGB pattern of `_pattern_rgb`, converted to `mode` ("L", "RGBA", ...).

    Every one of the seven non-identity flips and rotations changes the pixels, also for a
    square size, so comparing arrays catches a wrong orientation.
    """
    img = Image.fromarray(_pattern_rgb(width, height))
    return img if mode == "RGB" else img.convert(mode)


def with_alpha(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """RGBA: the pattern with a soft alpha, 0 at the left edge, 255 at the right edge and a
    ramp between whose position moves with the row, so every row holds partial values."""
    x = np.linspace(0.0, 1.0, width)[None, :]
    y = np.linspace(0.0, 1.0, height)[:, None]
    alpha = np.clip(np.round(255 * (2 * x - y)), 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([_pattern_rgb(width, height), alpha]))


def sixteen_bit_grey(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """Mode "I;16": a raster-order ramp, pixel (x, y) = (y * width + x) * step, spanning close to
    0..65535. Values are distinct and their low bytes vary, so a flip, a rotation or a silent
    truncation to 8 bits all change them."""
    step = 65535 // max(1, width * height - 1)
    values = np.arange(width * height, dtype=np.uint32).reshape(height, width) * step
    return Image.fromarray(values.astype(np.uint16))


def cmyk(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """Mode "CMYK": the pattern with its grey component moved into K (K = min(C, M, Y)), so a
    decoder that drops the K channel gets visibly wrong colours."""
    cmy = 255 - _pattern_rgb(width, height)
    k = cmy.min(axis=2, keepdims=True)
    return Image.fromarray(np.dstack([cmy - k, k]), mode="CMYK")


def palette_with_transparency(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """Mode "P" with `info["transparency"] = 0`: six colour bands left to right, palette index
    7 (white) in the top-left block, and index 0 (opaque green in the palette, transparent
    through tRNS) over the bottom-right block."""
    colours = [
        (0, 255, 0),
        (200, 30, 30),
        (220, 120, 20),
        (210, 200, 40),
        (40, 160, 60),
        (30, 90, 200),
        (120, 40, 160),
        (255, 255, 255),
    ]
    index = np.repeat((np.arange(width) * 6 // width + 1)[None, :], height, axis=0)
    index[: max(1, height // 3), : max(1, width // 3)] = 7
    index[height // 2 :, 2 * width // 3 :] = 0
    img = Image.frombytes("P", (width, height), index.astype(np.uint8).tobytes())
    img.putpalette([channel for colour in colours for channel in colour])
    img.info["transparency"] = 0
    return img


def oriented(img: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for `img` under EXIF `orientation` (1..8): applying that
    orientation, as `ImageOps.exif_transpose` does, gives back `img`. Raises ValueError for
    any other value."""
    if orientation == 1:
        return img.copy()
    if orientation not in _EXIF_TRANSPOSE:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation!r}")
    method = _EXIF_TRANSPOSE[orientation]
    return img.transpose(_INVERSE.get(method, method))


def encode(
    img: Image.Image,
    fmt: str = "PNG",
    *,
    exif_orientation: int | None = None,
    icc: bytes | None = None,
    **save_kwargs: Any,
) -> bytes:
    """`img` saved as `fmt`, with an EXIF orientation tag and/or an ICC profile embedded.

    Any orientation value is written as given (0 and 9 included, for tests of invalid tags).
    Other keyword arguments go to `Image.save` (`quality=`, `subsampling=`, ...). Raises
    ValueError when `fmt` does not keep the requested tag or profile (BMP, GIF, ...).
    """
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = exif_orientation
        save_kwargs["exif"] = exif.tobytes()
    if icc is not None:
        save_kwargs["icc_profile"] = icc
    buf = BytesIO()
    img.save(buf, fmt, **save_kwargs)
    data = buf.getvalue()

    with Image.open(BytesIO(data)) as check:
        kept_orientation = check.getexif().get(ExifTags.Base.Orientation)
        kept_icc = check.info.get("icc_profile")
    if exif_orientation is not None and kept_orientation != exif_orientation:
        raise ValueError(f"{fmt} did not keep EXIF orientation {exif_orientation}")
    if icc is not None and kept_icc != icc:
        raise ValueError(f"{fmt} did not keep the ICC profile")
    return data


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first `keep` fraction of `data` (0 <= keep < 1), as a cut-off download leaves it."""
    if not 0 <= keep < 1:
        raise ValueError(f"keep must be in [0, 1), got {keep!r}")
    return data[: int(len(data) * keep)]


# ICC v2 matrix/TRC display profiles. The facts used: ICC.1:2001-04 (v2.4) header and tag
# layout; primaries from Adobe RGB (1998) and SMPTE EG 432-1 (Display P3); colourants adapted
# from D65 to the D50 PCS with the Bradford transform, as ICC v2 display profiles expect.

_D50 = np.array([0.9642, 1.0, 0.8249])
_D65 = (0.3127, 0.3290)
_BRADFORD = np.array(
    [
        [0.8951, 0.2664, -0.1614],
        [-0.7502, 1.7135, 0.0367],
        [0.0389, -0.0685, 1.0296],
    ]
)


def _xy_to_xyz(x: float, y: float) -> np.ndarray:
    """CIE XYZ with Y = 1 for chromaticity (x, y)."""
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _colourants(primaries: Sequence[tuple[float, float]], white: tuple[float, float]) -> np.ndarray:
    """3 x 3 RGB -> XYZ matrix, D50-adapted; its columns are the rXYZ, gXYZ, bXYZ tags."""
    prim = np.stack([_xy_to_xyz(*p) for p in primaries], axis=1)
    white_xyz = _xy_to_xyz(*white)
    rgb_to_xyz = prim * np.linalg.solve(prim, white_xyz)
    cone_ratio = np.diag((_BRADFORD @ _D50) / (_BRADFORD @ white_xyz))
    adapt = np.linalg.inv(_BRADFORD) @ cone_ratio @ _BRADFORD
    return np.asarray(adapt @ rgb_to_xyz)


def _s15fixed16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_type(xyz: np.ndarray) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15fixed16(v) for v in xyz)


def _gamma_curve(gamma: float) -> bytes:
    """curveType with one entry: a pure power law, gamma as u8Fixed8Number."""
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def _table_curve(eotf: Callable[[np.ndarray], np.ndarray], entries: int = 1024) -> bytes:
    """curveType sampling `eotf` (encoded value in [0, 1] -> linear) at `entries` points."""
    linear = np.clip(np.round(eotf(np.linspace(0.0, 1.0, entries)) * 65535), 0, 65535)
    return b"curv\0\0\0\0" + struct.pack(">I", entries) + linear.astype(">u2").tobytes()


def _text_description(text: str) -> bytes:
    """textDescriptionType: ASCII part only; empty Unicode and ScriptCode parts."""
    ascii_z = text.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(ascii_z))
        + ascii_z
        + struct.pack(">IIHB", 0, 0, 0, 0)
        + bytes(67)
    )


def _text(text: str) -> bytes:
    return b"text\0\0\0\0" + text.encode("ascii") + b"\0"


def _srgb_eotf(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _rgb_display_profile(
    description: str,
    primaries: Sequence[tuple[float, float]],
    white: tuple[float, float],
    trc: bytes,
) -> bytes:
    """An ICC v2.1 'mntr' RGB -> XYZ profile: colourants, one TRC shared by R, G and B."""
    colourants = _colourants(primaries, white)
    tags = [
        (b"desc", _text_description(description)),
        (b"cprt", _text("No copyright; generated for matteflow tests")),
        (b"wtpt", _xyz_type(_D50)),
        (b"rXYZ", _xyz_type(colourants[:, 0])),
        (b"gXYZ", _xyz_type(colourants[:, 1])),
        (b"bXYZ", _xyz_type(colourants[:, 2])),
        (b"rTRC", trc),
        (b"gTRC", trc),
        (b"bTRC", trc),
    ]
    data_start = 128 + 4 + 12 * len(tags)
    table = b""
    data = b""
    for signature, body in tags:
        data += bytes(-(data_start + len(data)) % 4)  # every tag starts on a 4-byte boundary
        table += signature + struct.pack(">II", data_start + len(data), len(body))
        data += body
    data += bytes(-len(data) % 4)
    size = data_start + len(data)
    header = (
        struct.pack(">I", size)
        + bytes(4)  # preferred CMM: none
        + struct.pack(">I", 0x02100000)  # version 2.1.0
        + b"mntrRGB XYZ "  # display device, RGB data, XYZ connection space
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(24)  # platform, flags, manufacturer, model, attributes
        + struct.pack(">I", 0)  # rendering intent: perceptual
        + b"".join(_s15fixed16(v) for v in _D50)  # PCS illuminant
        + bytes(48)  # creator, reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


@functools.cache
def adobe_rgb_profile() -> bytes:
    """An Adobe RGB (1998) compatible ICC v2 profile: its primaries, D65 white, gamma 563/256."""
    return _rgb_display_profile(
        "Adobe RGB (1998) compatible",
        [(0.64, 0.33), (0.21, 0.71), (0.15, 0.06)],
        _D65,
        _gamma_curve(563 / 256),
    )


@functools.cache
def display_p3_profile() -> bytes:
    """A Display P3 ICC v2 profile: DCI-P3 primaries, D65 white, the sRGB transfer curve."""
    return _rgb_display_profile(
        "Display P3",
        [(0.680, 0.320), (0.265, 0.690), (0.150, 0.060)],
        _D65,
        _table_curve(_srgb_eotf),
    )


# --- 16-bit RGB, animation and a colour subject (added for test_decode_formats and
# test_colour_fidelity) ----------------------------------------------------------------------


def _not_multiple_of_257(values: np.ndarray) -> np.ndarray:
    """uint16 samples in 1..65533 nudged off multiples of 257, the values an 8-bit source
    widened by x257 holds, so a truncation to 8 bits and back always changes them."""
    wide = values.astype(np.uint32)
    return np.where(wide % 257 == 0, wide + 1, wide).astype(np.uint16)


def sixteen_bit_rgb(width: int = WIDTH, height: int = HEIGHT, *, alpha: bool = False) -> np.ndarray:
    """H x W x 3 (x 4 with `alpha`) uint16: red rises left to right, green top to bottom, blue
    is a raster-order ramp (distinct at every pixel, so any flip or rotation shows), alpha a
    diagonal ramp from 1000 to 64000. No sample is a multiple of 257 (see above), none is 0
    or 65535, so the alpha is never read as opaque."""
    x = np.linspace(1, 65533, width)[None, :]
    y = np.linspace(1, 65533, height)[:, None]
    raster = np.linspace(1, 65533, width * height).reshape(height, width)
    planes = [x + 0 * y, y + 0 * x, raster]
    if alpha:
        planes.append(1000 + 63000 * (x / 65533 + y / 65533) / 2)
    return _not_multiple_of_257(np.rint(np.dstack(planes)))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode16(
    pixels: np.ndarray,
    fmt: str = "PNG",
    *,
    icc: bytes | None = None,
    exif_orientation: int | None = None,
) -> bytes:
    """H x W x C uint16 `pixels` (C = 3 RGB or 4 RGBA) as a 16-bit "PNG" (libpng through
    imagecodecs; profile in iCCP, orientation in eXIf, both before IDAT) or "TIFF" (tifffile;
    profile in tag 34675, orientation in tag 274). Raises ValueError for other formats or
    pixels that are not uint16."""
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected H x W x 3|4 uint16, got {pixels.shape} {pixels.dtype}")
    if fmt == "TIFF":
        buf = BytesIO()
        tifffile.imwrite(
            buf,
            pixels,
            photometric="rgb",
            extrasamples=["unassalpha"] if pixels.shape[2] == 4 else None,
            iccprofile=icc,
            extratags=[(274, "H", 1, exif_orientation, True)] if exif_orientation else None,
            metadata=None,
        )
        return buf.getvalue()
    if fmt != "PNG":
        raise ValueError(f"16-bit {fmt} is not built here: PNG or TIFF")
    data = bytes(imagecodecs.png_encode(pixels))
    chunks = b""
    if icc is not None:
        chunks += png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(icc))
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = exif_orientation
        chunks += png_chunk(b"eXIf", exif.tobytes())
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length and type, IHDR body, CRC
    return data[:ihdr_end] + chunks + data[ihdr_end:]


def animated(
    fmt: str,
    colours: Sequence[tuple[int, int, int]] = ((200, 30, 30), (40, 160, 60), (30, 90, 200)),
    width: int = WIDTH,
    height: int = HEIGHT,
) -> bytes:
    """An animated "GIF", lossless "WEBP" or "PNG" (APNG), one flat frame per colour (100 ms
    each)."""
    frames = [Image.new("RGB", (width, height), colour) for colour in colours]
    options: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    buf = BytesIO()
    frames[0].save(
        buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options
    )
    return buf.getvalue()


# The colour subject: a disc left of and above the centre, on a plain, pale background.
_SUBJECT_BACKGROUND = (236, 233, 226)


def _subject_geometry(width: int, height: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(distance from the disc's centre, angle around it, radius) per pixel."""
    cx, cy, radius = 0.45 * width, 0.47 * height, 0.38 * min(width, height)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.hypot(x - cx, y - cy), np.arctan2(y - cy, x - cx), radius


def colour_subject(width: int = 96, height: int = 80) -> Image.Image:
    """RGB: a clear subject for colour tests, a disc whose hue turns once around its centre
    and whose saturation rises from 0.3 at the centre to 1 from 0.7 of its radius outwards,
    with a soft ripple in value (0.7..1), on a plain pale background. The interior holds
    fully saturated primaries and secondaries, so a missed or doubled conversion between
    wide gamuts and sRGB shows, and smooth gradients, so a lost bit depth shows."""
    distance, angle, radius = _subject_geometry(width, height)
    hue = (angle / (2 * np.pi)) % 1.0
    saturation = np.clip(0.3 + distance / radius, 0.0, 1.0)
    y, x = np.mgrid[0:height, 0:width]
    value = 0.85 + 0.15 * np.sin(x / 3.0) * np.cos(y / 5.0)
    # HSV -> RGB, the standard six-sector formula.
    sector = np.floor(hue * 6.0)
    f = hue * 6.0 - sector
    p, q, t = (
        value * (1 - saturation),
        value * (1 - f * saturation),
        value * (1 - (1 - f) * saturation),
    )
    choices = [
        (value, t, p),
        (q, value, p),
        (p, value, t),
        (p, q, value),
        (t, p, value),
        (value, p, q),
    ]
    index = sector.astype(int) % 6
    rgb = np.zeros((height, width, 3))
    for i, (r, g, b) in enumerate(choices):
        rgb[index == i] = np.dstack([r, g, b])[index == i]
    pixels = np.rint(rgb * 255).astype(np.uint8)
    pixels[distance > radius] = _SUBJECT_BACKGROUND
    return Image.fromarray(pixels)


def colour_subject_interior(width: int = 96, height: int = 80, inset: float = 4.0) -> np.ndarray:
    """H x W bool: the pixels of `colour_subject`'s disc at least `inset` pixels inside its
    edge, clear of the JPEG ringing and chroma bleed that the edge gets."""
    distance, _, radius = _subject_geometry(width, height)
    return np.asarray(distance <= radius - inset)
