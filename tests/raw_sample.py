"""A small camera RAW file made at test time: a Bayer (RGGB) DNG of a known sRGB scene.

Origin: written here with tifffile from the DNG 1.4 specification (Adobe, 2012): one raw IFD
(NewSubfileType 0) holding uncompressed 16-bit CFA samples (PhotometricInterpretation 32803,
CFARepeatPatternDim, CFAPattern), with DNGVersion, UniqueCameraModel, BlackLevel, WhiteLevel,
ColorMatrix1 (XYZ -> camera), CalibrationIlluminant1 (D65) and AsShotNeutral. No camera file
is committed; nothing here is redistributed from anyone.

The made-up camera sees linear sRGB scaled per channel by `neutral` (its response to white):
ColorMatrix1 = diag(neutral) x (XYZ -> linear sRGB), so a renderer that applies the camera's
white balance and colour matrix gives back the scene's sRGB colours. A shot under another
`light` (the camera's response to white under it, recorded as AsShotNeutral) comes back
right only with the camera's white balance.
"""

from __future__ import annotations

import io

import numpy as np
import tifffile

__all__ = ["BLACK", "NEUTRAL", "WHITE", "dng"]

BLACK, WHITE = 256, 4095  # a 12-bit sensor with a black pedestal
NEUTRAL = (0.5, 1.0, 0.7)  # camera response to white: green-heavy, as real sensors are
# Linear sRGB (D65) -> XYZ, IEC 61966-2-1.
_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_D65 = 21  # EXIF LightSource code of CalibrationIlluminant1
_DENOMINATOR = 1_000_000


def _linear(srgb: np.ndarray) -> np.ndarray:
    v = srgb.astype(np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _rationals(values: np.ndarray) -> tuple[int, ...]:
    """(numerator, denominator) pairs, flattened, as tifffile writes RATIONAL/SRATIONAL."""
    return tuple(v for x in values.ravel() for v in (round(x * _DENOMINATOR), _DENOMINATOR))


def dng(
    scene: np.ndarray, orientation: int = 1, light: tuple[float, float, float] = NEUTRAL
) -> bytes:
    """DNG bytes of `scene` (H x W x 3 uint8 sRGB, H and W even), stored as a camera holding
    it under EXIF `orientation` stores it: the file's pixels are `scene` as given, and its
    Orientation tag says how to turn them upright. `light`: the camera's response to white
    under the shot's light (channels at most 1), recorded as AsShotNeutral."""
    height, width = scene.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"scene: expected even sides for the 2x2 CFA, got {width}x{height}")
    camera = _linear(scene) * np.asarray(light)  # the sensor's per-channel response
    colour = np.zeros((height, width), np.intp)  # RGGB: which channel each photosite sees
    colour[0::2, 1::2] = colour[1::2, 0::2] = 1
    colour[1::2, 1::2] = 2
    rows, cols = np.indices((height, width))
    mosaic = camera[rows, cols, colour]
    samples = np.rint(BLACK + np.clip(mosaic, 0, 1) * (WHITE - BLACK)).astype(np.uint16)
    colour_matrix = np.diag(NEUTRAL) @ np.linalg.inv(_SRGB_TO_XYZ)
    tags = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: R G / G B
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "matteflow test camera", True),  # UniqueCameraModel
        (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor
        (50711, "H", 1, 1, True),  # CFALayout: rectangular
        (50714, "H", 1, BLACK, True),  # BlackLevel
        (50717, "H", 1, WHITE, True),  # WhiteLevel
        (50721, 10, 9, _rationals(colour_matrix), True),  # ColorMatrix1 (SRATIONAL)
        (50778, "H", 1, _D65, True),  # CalibrationIlluminant1
        (50728, 5, 3, _rationals(np.asarray(light)), True),  # AsShotNeutral (RATIONAL)
        (274, "H", 1, orientation, True),  # Orientation
        (271, "s", 0, "matteflow", True),  # Make
        (272, "s", 0, "test camera", True),  # Model
    ]
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        samples,
        photometric=32803,  # CFA
        subfiletype=0,
        extratags=tags,
        metadata=None,
    )
    return buf.getvalue()
