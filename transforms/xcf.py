"""Layered GIMP output for retouchers: a background-removal result -> XCF bytes.

Beside psd.py (the same layers, in the open editor's own format); plain code on arrays, written
here from GIMP's format description (devel-docs/xcf.txt): version 8 (32-bit offsets, zlib
tiles), 8-bit non-linear ("gamma") RGB precision, layers in legacy Normal mode so they blend
in sRGB values as our composites and the PSD do.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["encode_xcf"]

_MAGIC = b"gimp xcf v008\0"
_RGB, _RGBA = 0, 1  # layer types; the image's base type RGB is 0 too
_PRECISION_U8_NON_LINEAR = 150
_TILE = 64
# Property types (xcf.txt "PROP_*").
_END, _OPACITY, _MODE, _VISIBLE, _APPLY_MASK = 0, 6, 7, 8, 11
_EDIT_MASK, _SHOW_MASK, _SHOW_MASKED, _OFFSETS, _COLOR = 12, 13, 14, 15, 16
_COMPRESSION, _PARASITES = 17, 21
_ZLIB = 2
_NORMAL_LEGACY = 0  # layer mode: GIMP 2.10's "Normal (legacy)", composited in sRGB values
_PERSISTENT_UNDOABLE = 3  # parasite flags GIMP gives "icc-profile"


def _u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def _string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return _u32(len(data)) + data


def _prop(kind: int, payload: bytes = b"") -> bytes:
    return _u32(kind, len(payload)) + payload


class _Writer:
    """Appends blocks to a file and patches the 32-bit offsets that point at them."""

    def __init__(self) -> None:
        self.data = bytearray()

    def append(self, block: bytes) -> int:
        """Append `block`; return its offset."""
        offset = len(self.data)
        self.data += block
        return offset

    def reserve(self, count: int) -> int:
        """Append `count` zero offsets (also the list's terminator when one is spare)."""
        return self.append(bytes(4 * count))

    def patch(self, where: int, offset: int) -> None:
        struct.pack_into(">I", self.data, where, offset)


def _hierarchy(writer: _Writer, pixels: np.ndarray) -> int:
    """Write H x W x bpp uint8 pixels as a hierarchy (one level of zlib tiles); its offset."""
    height, width, bpp = pixels.shape
    hierarchy = writer.append(_u32(width, height, bpp))
    level_slot = writer.reserve(2)  # level 0, then the terminator (no reduced levels)
    writer.patch(level_slot, writer.append(_u32(width, height)))
    rows, cols = -(-height // _TILE), -(-width // _TILE)
    tile_slots = writer.reserve(rows * cols + 1)
    for i in range(rows * cols):  # row-major; edge tiles are smaller
        top, left = (i // cols) * _TILE, (i % cols) * _TILE
        tile = np.ascontiguousarray(pixels[top : top + _TILE, left : left + _TILE])
        writer.patch(tile_slots + 4 * i, writer.append(zlib.compress(tile.tobytes(), 6)))
    return hierarchy


def _layer(
    writer: _Writer, name: str, pixels: np.ndarray, *, visible: bool, mask: np.ndarray | None
) -> int:
    """Write one layer (RGB or RGBA pixels at offset 0, opacity 100%, its mask); its offset."""
    height, width, bpp = pixels.shape
    props = (
        _prop(_OPACITY, _u32(255))
        + _prop(_VISIBLE, _u32(int(visible)))
        + _prop(_OFFSETS, _u32(0, 0))
        + _prop(_MODE, _u32(_NORMAL_LEGACY))
    )
    if mask is not None:
        props += _prop(_APPLY_MASK, _u32(1)) + _prop(_EDIT_MASK, _u32(0))
        props += _prop(_SHOW_MASK, _u32(0))
    kind = _RGBA if bpp == 4 else _RGB
    layer = writer.append(_u32(width, height, kind) + _string(name) + props + _prop(_END))
    slots = writer.reserve(2)  # hierarchy, mask
    writer.patch(slots, _hierarchy(writer, pixels))
    if mask is not None:
        channel_props = (
            _prop(_OPACITY, _u32(255))
            + _prop(_VISIBLE, _u32(0))
            + _prop(_SHOW_MASKED, _u32(0))
            + _prop(_COLOR, bytes(3))
            + _prop(_END)
        )
        channel = writer.append(_u32(width, height) + _string(f"{name} mask") + channel_props)
        channel_slot = writer.reserve(1)
        writer.patch(channel_slot, _hierarchy(writer, mask[..., None]))
        writer.patch(slots + 4, channel)
    return layer


def _check(name: str, pixels: np.ndarray, shape: tuple[int, ...]) -> None:
    if pixels.dtype != np.uint8 or pixels.shape != shape:
        raise ValueError(f"{name}: expected {shape} uint8, got {pixels.shape} {pixels.dtype}")


def encode_xcf(
    rgb: np.ndarray,
    alpha: np.ndarray,
    icc_profile: bytes | None = None,
    *,
    cutout: np.ndarray | None = None,
    shadow: np.ndarray | None = None,
) -> bytes:
    """A GIMP XCF: top to bottom, layer "Cutout" (the image, or `cutout` colours such as a
    decontaminated foreground, opaque, with `alpha` as its applied layer mask), layer
    "Shadow" when `shadow` is given (black, `shadow` as its alpha), and layer "Original" (the
    opaque image, hidden), so the file opens showing the cutout.

    `rgb` and `cutout` are H x W x 3 uint8 sRGB, `alpha` and `shadow` H x W uint8 (255 =
    opaque). `icc_profile`, when given, is the image's "icc-profile" parasite. Same input,
    same bytes. Raises ValueError on other shapes or dtypes, or an empty image.
    """
    if rgb.ndim != 3 or 0 in rgb.shape:
        raise ValueError(f"rgb: expected H x W x 3 uint8, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    _check("rgb", rgb, (height, width, 3))
    _check("alpha", alpha, (height, width))
    colour = rgb if cutout is None else cutout
    _check("cutout", colour, (height, width, 3))
    opaque = np.full((height, width, 1), 255, np.uint8)
    layers: list[tuple[str, np.ndarray, bool, np.ndarray | None]] = [
        ("Cutout", np.concatenate([colour, opaque], axis=2), True, alpha)
    ]
    if shadow is not None:
        _check("shadow", shadow, (height, width))
        black = np.zeros((height, width, 3), np.uint8)
        layers.append(("Shadow", np.dstack([black, shadow]), True, None))
    layers.append(("Original", rgb, False, None))

    writer = _Writer()
    props = _prop(_COMPRESSION, bytes([_ZLIB]))
    if icc_profile:
        parasite = _string("icc-profile") + _u32(_PERSISTENT_UNDOABLE, len(icc_profile))
        props += _prop(_PARASITES, parasite + icc_profile)
    writer.append(_MAGIC + _u32(width, height, _RGB, _PRECISION_U8_NON_LINEAR) + props)
    writer.append(_prop(_END))
    layer_slots = writer.reserve(len(layers) + 1)  # layer offsets, top first; terminator
    writer.reserve(1)  # no channels: an empty list
    for i, (name, pixels, visible, mask) in enumerate(layers):
        offset = _layer(writer, name, pixels, visible=visible, mask=mask)
        writer.patch(layer_slots + 4 * i, offset)
    return bytes(writer.data)
