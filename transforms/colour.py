"""Colour management for decoded images: embedded ICC profiles -> sRGB with LittleCMS.

8-bit images go through Pillow's ImageCms; 16-bit pixels (which Pillow cannot hold in colour)
go through imagecodecs' LittleCMS binding at 16 bits. Transforms are built once per
(profile, mode, intent) and cached per process, so a catalog shot in one camera profile pays for
it once. Untagged images are taken as sRGB; a profile LittleCMS cannot read or apply is the
warning "decode/corrupt_icc" and the pixels are taken as sRGB.
"""

from __future__ import annotations

import hashlib
import io
import struct
from functools import lru_cache
from typing import cast

import imagecodecs
import numpy as np
from PIL import Image, ImageCms

__all__ = ["INTENTS", "SIXTEEN_BIT_GREY", "SRGB_ICC", "to_srgb_rgb", "wide_to_srgb"]

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# The profile converted to, and embedded in every output. LittleCMS stamps its header with the
# time it was made (bytes 24-35); a fixed date keeps outputs byte-identical across processes.
SRGB_ICC: bytes = (
    _SRGB.tobytes()[:24] + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + _SRGB.tobytes()[36:]
)
INTENTS = {
    "perceptual": ImageCms.Intent.PERCEPTUAL,
    "relative": ImageCms.Intent.RELATIVE_COLORIMETRIC,
    "saturation": ImageCms.Intent.SATURATION,
    "absolute": ImageCms.Intent.ABSOLUTE_COLORIMETRIC,
}
# Modes LittleCMS converts directly; everything else is first brought to one of these.
_CMS_MODES = {"RGB", "L", "CMYK"}
SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L")  # the 16-bit modes Pillow holds (grey only)
# LittleCMS's optimised 16-bit pipelines interpolate a table and miss clipped, out-of-gamut
# colours by up to 15/255 against the exact (and 8-bit) result; unoptimised they agree within 1.
_CMS_NOOPTIMIZE = 0x0100
_CMS_ERRORS = (ImageCms.PyCMSError, OSError, ValueError, TypeError, RuntimeError)


def _describe(icc: bytes) -> str:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.getProfileDescription(profile).strip()


def _unusable(icc: bytes) -> str:
    return f"unusable profile {hashlib.sha256(icc).hexdigest()[:12]}"


@lru_cache(maxsize=64)
def _transform(icc: bytes, mode: str, intent: str) -> tuple[ImageCms.ImageCmsTransform, str]:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    transform = ImageCms.buildTransform(
        profile, _SRGB, mode, "RGB", renderingIntent=INTENTS[intent]
    )
    return transform, _describe(icc)


def _cms_mode(img: Image.Image) -> Image.Image:
    if img.mode in _CMS_MODES:
        return img
    if img.mode in SIXTEEN_BIT_GREY:
        # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them;
        # 65535 / 257 = 255 exactly, so this maps the full range onto 0..255.
        wide = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.rint(wide / 257.0).astype(np.uint8))
    if img.mode in ("LA", "I", "F", "1"):
        return img.convert("L") if img.mode != "LA" else img.getchannel("L")
    return img.convert("RGB")


def to_srgb_rgb(
    img: Image.Image, intent: str = "perceptual"
) -> tuple[Image.Image, str, tuple[str, ...]]:
    """Return (8-bit RGB image in sRGB, source profile description, warnings)."""
    icc = img.info.get("icc_profile")
    base = _cms_mode(img)
    if not icc:
        return base.convert("RGB"), "", ()
    try:
        transform, description = _transform(icc, base.mode, intent)
        converted = cast(Image.Image, ImageCms.applyTransform(base, transform))
        return converted, description, ()
    except _CMS_ERRORS:
        return base.convert("RGB"), _unusable(icc), ("decode/corrupt_icc",)


def wide_to_srgb(
    colour: np.ndarray, icc: bytes | None, intent: str = "perceptual"
) -> tuple[np.ndarray, str, tuple[str, ...]]:
    """H x W x 3 (RGB) or H x W x 1 (grey) uint16 -> (H x W x 3 uint16 sRGB, description,
    warnings), converted at 16 bits."""
    grey = colour.shape[2] == 1
    untagged = np.repeat(colour, 3, axis=2) if grey else colour
    if not icc:
        return np.ascontiguousarray(untagged), "", ()
    try:
        description = _describe(icc)
        srgb = imagecodecs.cms_transform(
            np.ascontiguousarray(colour[..., 0] if grey else colour),
            icc,
            SRGB_ICC,
            colorspace="gray" if grey else "rgb",
            outcolorspace="rgb",
            outdtype=np.uint16,
            intent=int(INTENTS[intent]),
            flags=_CMS_NOOPTIMIZE,
        )
        return srgb, description, ()
    except _CMS_ERRORS:
        return np.ascontiguousarray(untagged), _unusable(icc), ("decode/corrupt_icc",)
