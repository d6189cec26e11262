"""Layered Photoshop output for retouchers: a background-removal result -> PSD bytes.

Beside `write.py`'s PNGs; plain pixel code on arrays, encoded with psd-tools (no Beam here).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["encode_psd"]


def _check(rgb: np.ndarray, alpha: np.ndarray) -> None:
    """Raise ValueError unless rgb is H x W x 3 uint8 and alpha H x W uint8, both non-empty."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"rgb: expected H x W x 3 uint8, got {rgb.shape} {rgb.dtype}")
    if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha: expected {rgb.shape[:2]} uint8, got {alpha.shape} {alpha.dtype}")


def encode_psd(
    rgb: np.ndarray,
    alpha: np.ndarray,
    icc_profile: bytes | None = None,
    *,
    cutout: np.ndarray | None = None,
    shadow: np.ndarray | None = None,
) -> bytes:
    """A layered PSD: layer "Original" (the opaque image) below layer "Cutout" (the image, or
    `cutout` colours such as a decontaminated foreground, with the matte as its layer mask);
    the merged composite shows the cutout. With `shadow` (H x W uint8), a layer "Shadow"
    (black, `shadow` as its transparency) lies between them.

    `rgb` is H x W x 3 uint8 sRGB, `alpha` H x W uint8 (255 = subject). The document is 8-bit
    RGB plus a merged transparency channel, H x W. "Original" is hidden, so the document opens
    showing the cutout and the stored composite is the cutout; "Cutout" is fully opaque with a
    user mask equal to `alpha` over the whole canvas. `icc_profile`, when given, is embedded
    as image resource 1039. Same input, same bytes. Raises ValueError on other shapes or dtypes.
    """
    # psd-tools costs ~0.2 s to import: only runs that write PSD pay it (not start-up).
    from psd_tools import PSDImage
    from psd_tools.constants import Resource, Tag
    from psd_tools.psd.image_resources import ImageResource

    _check(rgb, alpha)
    if cutout is not None:
        _check(cutout, alpha)
    height, width = alpha.shape
    psd = PSDImage.new("RGBA", (width, height))
    psd.background_color = None  # a transparent backdrop: matted on white, not new()'s black
    image = Image.fromarray(rgb)
    # Hidden: "Cutout" is opaque pixels under a mask, so a visible "Original" below it would
    # fill the masked-out background back in, both on screen and in the stored composite.
    psd.create_pixel_layer(image, name="Original").visible = False
    if shadow is not None:
        if shadow.dtype != np.uint8 or shadow.shape != alpha.shape:
            raise ValueError(f"shadow: expected {alpha.shape} uint8, got {shadow.shape}")
        black = np.zeros((height, width, 3), np.uint8)
        psd.create_pixel_layer(Image.fromarray(np.dstack([black, shadow])), name="Shadow")
    cut = image if cutout is None else Image.fromarray(cutout)
    psd.create_pixel_layer(cut, name="Cutout").create_mask(Image.fromarray(alpha))
    # The document's fourth channel is the merged transparency only if the file says so; a
    # layered file with a positive layer count otherwise reads it as a spare alpha channel
    # and psd-tools' save() drops the composite's alpha. 'Mtrn' is the spec's flag for it.
    assert psd.tagged_blocks is not None  # created with the first layer
    psd.tagged_blocks.set_data(Tag.SAVING_MERGED_TRANSPARENCY)
    if icc_profile is not None:
        resource = ImageResource(key=Resource.ICC_PROFILE, data=icc_profile)
        psd.image_resources[Resource.ICC_PROFILE] = resource
    buf = io.BytesIO()
    psd.save(buf)  # renders the merged image from the layers (matted on white, as Photoshop)
    return buf.getvalue()
