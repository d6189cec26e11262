"""Camera RAW sources for decode.py: DNG, CR2/CR3, NEF, ARW, RAF, ORF, RW2, ... -> 16-bit sRGB.

LibRaw (through rawpy) demosaics at 16 bits, applies the white balance and the camera's colour
matrix to sRGB with the sRGB tone curve, at a fixed exposure (no auto-brightening, so a
catalog shot under one light renders alike). The Orientation LibRaw reads (its `flip`) is
returned as an EXIF orientation for decode.py's `orient`, as for every other format.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

from matteflow.transforms.failures import DecodeError

__all__ = ["RAW_EXTENSIONS", "RAW_WHITE_BALANCES", "RawPixels", "is_raw", "render_raw"]

RAW_EXTENSIONS = frozenset(
    [
        ".dng",
        ".cr2",
        ".cr3",
        ".crw",
        ".nef",
        ".nrw",
        ".arw",
        ".srf",
        ".sr2",
        ".raf",
        ".orf",
        ".rw2",
        ".pef",
        ".srw",
        ".raw",
        ".rwl",
        ".3fr",
        ".iiq",
        ".erf",
        ".kdc",
        ".dcr",
        ".mrw",
        ".x3f",
    ]
)
# camera: the white balance the camera recorded; auto: LibRaw's grey-world estimate; daylight:
# the camera's D65 balance from its colour matrix, the same for every shot.
RAW_WHITE_BALANCES = ("camera", "auto", "daylight")
# LibRaw's flip -> the EXIF Orientation that turns the stored pixels upright.
_FLIP_TO_ORIENTATION = {0: 1, 3: 3, 5: 8, 6: 6}
_DNG_VERSION = 50706
# Leading bytes of RAW containers that are not TIFF-shaped: CR3 (ISO box), RAF, ORF, RW2.
_SIGNATURES = (b"FUJIFILMCCD-RAW", b"IIRO", b"IIRS", b"MMOR", b"IIU\0")
# Leading bytes of formats Pillow reads that no RAW starts with: a JPEG, PNG, GIF or WebP named
# .dng or .nef goes to Pillow, not to LibRaw.
_NOT_RAW = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF")
_SRGB_TONE = (2.4, 12.92)  # LibRaw's gamma (power, toe slope) for the sRGB curve


@dataclass(frozen=True)
class RawPixels:
    """A rendered RAW: H x W x 3 uint16 sRGB as stored, and the orientation to apply."""

    rgb16: np.ndarray
    orientation: int


def _is_dng(data: bytes) -> bool:
    """Whether a TIFF's first directory has a DNGVersion tag."""
    order = {b"II*\0": "<", b"MM\0*": ">"}.get(data[:4])
    if order is None or len(data) < 8:
        return False
    offset = struct.unpack_from(f"{order}I", data, 4)[0]
    if offset + 2 > len(data):
        return False
    count = struct.unpack_from(f"{order}H", data, offset)[0]
    for i in range(count):
        entry = offset + 2 + 12 * i
        if entry + 2 > len(data):
            return False
        if struct.unpack_from(f"{order}H", data, entry)[0] == _DNG_VERSION:
            return True
    return False


def is_raw(uri: str, data: bytes) -> bool:
    """Whether `data` is a camera RAW: by its extension, a DNG's tag or a RAW signature (never
    when it starts as a JPEG, PNG, GIF or WebP does)."""
    if data.startswith(_NOT_RAW):
        return False
    name = uri.rsplit("/", 1)[-1].split("?", 1)[0].lower()
    if any(name.endswith(ext) for ext in RAW_EXTENSIONS):
        return True
    is_cr3 = data[4:12] == b"ftypcrx "
    return is_cr3 or data.startswith(_SIGNATURES) or _is_dng(data)


def render_raw(
    uri: str, data: bytes, *, white_balance: str, exposure: float, max_pixels: int
) -> RawPixels:
    """Demosaic and colour-render RAW bytes to 16-bit sRGB, `exposure` stops brighter
    (LibRaw allows -2..+3).

    Raises DecodeError: unsupported_format (LibRaw does not know the file), corrupt (it knows
    it but cannot read its data), too_many_pixels.
    """
    import rawpy  # LibRaw: loaded by the first RAW file a run meets, not at every start-up

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            if sizes.width * sizes.height > max_pixels:
                raise DecodeError(
                    f"{uri}: {sizes.width}x{sizes.height} is over the {max_pixels}-pixel limit",
                    code="too_many_pixels",
                )
            rgb16 = raw.postprocess(
                use_camera_wb=white_balance == "camera",
                use_auto_wb=white_balance == "auto",
                output_color=rawpy.ColorSpace.sRGB,
                output_bps=16,
                gamma=_SRGB_TONE,
                no_auto_bright=True,
                exp_shift=2.0**exposure,
                user_flip=0,  # decode.py's orient() turns every format alike
            )
            orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
    except rawpy.LibRawFileUnsupportedError:
        raise DecodeError(f"{uri}: not a RAW format LibRaw can read") from None
    except (rawpy.LibRawError, MemoryError) as err:
        # LibRaw reports cut-short and damaged data alike (an I/O or data error).
        reason = type(err).__name__
        raise DecodeError(
            f"{uri}: RAW data unreadable ({reason}); the file is damaged or cut short",
            code="corrupt",
        ) from None
    return RawPixels(np.ascontiguousarray(rgb16, dtype=np.uint16), orientation)
