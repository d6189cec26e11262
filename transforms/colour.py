"""Colour management for decoded images: embedded ICC profiles -> sRGB with LittleCMS.

Transforms are built once per (profile, mode) and cached per process, so a catalog shot in one
camera profile pays for it once.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache
from typing import cast

import numpy as np
from PIL import Image, ImageCms

__all__ = ["to_srgb_rgb"]

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# Modes LittleCMS converts directly; everything else is first brought to one of these.
_CMS_MODES = {"RGB", "L", "CMYK"}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L")


@lru_cache(maxsize=64)
def _transform(icc: bytes, mode: str) -> tuple[ImageCms.ImageCmsTransform, str]:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    description = ImageCms.getProfileDescription(profile).strip()
    transform = ImageCms.buildTransform(
        profile, _SRGB, mode, "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL
    )
    return transform, description


def _cms_mode(img: Image.Image) -> Image.Image:
    if img.mode in _CMS_MODES:
        return img
    if img.mode in _SIXTEEN_BIT:
        # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them;
        # 65535 / 257 = 255 exactly, so this maps the full range onto 0..255.
        wide = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.rint(wide / 257.0).astype(np.uint8))
    if img.mode in ("LA", "I", "F", "1"):
        return img.convert("L") if img.mode != "LA" else img.getchannel("L")
    return img.convert("RGB")


def to_srgb_rgb(img: Image.Image) -> tuple[Image.Image, str, tuple[str, ...]]:
    """Return (8-bit RGB image in sRGB, source profile description, warnings).

    Untagged images are taken as sRGB. A profile LittleCMS cannot read or apply is reported as
    the warning "decode/corrupt_icc" and the pixels are taken as sRGB.
    """
    icc = img.info.get("icc_profile")
    base = _cms_mode(img)
    if not icc:
        return base.convert("RGB"), "", ()
    try:
        transform, description = _transform(icc, base.mode)
        converted = cast(Image.Image, ImageCms.applyTransform(base, transform))
        return converted, description, ()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        digest = hashlib.sha256(icc).hexdigest()[:12]
        return base.convert("RGB"), f"unusable profile {digest}", ("decode/corrupt_icc",)
