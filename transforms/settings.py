"""Output settings of a run, and the per-row overrides a manifest may make.

A manifest row may change only the settings in ROW_SETTINGS (an allow-list); any other column
is carried to the metrics as metadata and changes nothing. A bad value fails that row as
`manifest/bad_setting` before anything is fetched.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

from matteflow.models.registry import get_spec
from matteflow.transforms.encode import FORMATS
from matteflow.transforms.framing import FramingSettings, check_framing
from matteflow.transforms.shadow import check_shadow

__all__ = [
    "KINDS",
    "ROW_SETTINGS",
    "OutputSettings",
    "background_colour",
    "with_overrides",
]

KINDS = ("cutout", "mask", "composite", "color", "psd", "xcf")  # the files a row can get
_CUTOUT_FORMATS = ("png", "webp", "tiff", "avif")
_COMPOSITE_FORMATS = ("jpeg", "png")
_HEX_COLOUR = re.compile(r"#([0-9a-fA-F]{6})")
ROW_SETTINGS = {
    "outputs": "comma-separated kinds to write, e.g. cutout,mask,psd (replaces the run's)",
    "cutout_format": "png | webp | tiff | avif",
    "background": "composite background: #rrggbb or an image URI",
    "framing": "none | crop | canvas",
    "canvas": "canvas size WIDTHxHEIGHT, e.g. 2000x2000",
    "model": "registry model for this row, e.g. rvm-mobilenetv3 (see `matteflow models list`)",
}


def background_colour(background: str) -> tuple[int, int, int] | None:
    """(r, g, b) of a "#rrggbb" background; None when it names an image instead."""
    match = _HEX_COLOUR.fullmatch(background)
    if not match:
        return None
    value = int(match.group(1), 16)
    return (value >> 16, (value >> 8) & 255, value & 255)


@dataclass(frozen=True)
class OutputSettings:
    """Which files to write and how to encode them."""

    cutout: bool = True  # RGBA cutout, in cutout_format
    mask: bool = True  # grey alpha PNG
    composite: bool = False  # the subject over `background`, in composite_format
    color: bool = False  # the opaque colour image; with `mask`, a colour + matte pair
    psd: bool = False  # layered PSD: the original, and the cutout with its mask
    xcf: bool = False  # layered GIMP XCF: the same layers as the PSD
    cutout_format: str = "png"  # png | webp | tiff | avif (also used by `color`)
    keep_16_bit: bool = True  # 16-bit sources give 16-bit PNG/TIFF outputs
    lossless: bool = True  # WebP
    quality: int = 90  # lossy WebP, AVIF and JPEG
    composite_format: str = "jpeg"  # jpeg | png
    background: str = "#ffffff"  # composite background: #rrggbb or an image URI
    strip_gps: bool = True  # drop the EXIF GPS block (the privacy default for published files)
    strip_metadata: bool = False  # drop all EXIF (the sRGB profile and provenance stay)
    png_compress_level: int = 1  # zlib level; 1 is several times faster than 6, files ~15% bigger
    # A shadow under the subject in composites, and as a layer in the PSD and XCF (shadow.py):
    # none | contact | drop. Blur (Gaussian sigma) and offset are in subject heights.
    shadow: str = "none"
    shadow_opacity: float = 0.5
    shadow_blur: float = 0.02
    shadow_offset_x: float = 0.0  # to the right
    shadow_offset_y: float = 0.02  # downwards

    def __post_init__(self) -> None:
        if not any(getattr(self, kind) for kind in KINDS):
            raise ValueError(f"cutout: no output selected ({', '.join(KINDS)} are all false)")
        if self.cutout_format not in _CUTOUT_FORMATS:
            raise ValueError(
                f"cutout_format: expected one of {', '.join(_CUTOUT_FORMATS)},"
                f" got {self.cutout_format!r}"
            )
        if self.composite_format not in _COMPOSITE_FORMATS:
            raise ValueError(
                f"composite_format: expected one of {', '.join(_COMPOSITE_FORMATS)},"
                f" got {self.composite_format!r}"
            )
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality: expected 1..100, got {self.quality}")
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"png_compress_level: expected 0..9, got {self.png_compress_level}")
        check_shadow(self.shadow, self.shadow_opacity, self.shadow_blur)
        if not self.background.startswith("#") or background_colour(self.background):
            return
        raise ValueError(f"background: expected #rrggbb or an image URI, got {self.background!r}")

    @property
    def extension(self) -> str:
        """File extension of cutouts and colour images."""
        extension: str = FORMATS[self.cutout_format]
        return extension


def with_overrides(
    outputs: OutputSettings, framing: FramingSettings, overrides: Mapping[str, str]
) -> tuple[OutputSettings, FramingSettings]:
    """The settings of one row: the run's, changed by the row's ROW_SETTINGS columns.

    Raises ValueError naming the column when a value is not valid.
    """
    unknown = set(overrides) - set(ROW_SETTINGS)
    if unknown:
        raise ValueError(f"not a row setting: {', '.join(sorted(unknown))}")
    if "model" in overrides:
        get_spec(overrides["model"])  # an unknown name raises RegistryError, a ValueError
    changes: dict[str, object] = {}
    if "outputs" in overrides:
        kinds = {k.strip() for k in overrides["outputs"].split(",") if k.strip()}
        if not kinds or kinds - set(KINDS):
            raise ValueError(
                f"outputs: expected kinds from {', '.join(KINDS)}, got {overrides['outputs']!r}"
            )
        changes.update({kind: kind in kinds for kind in KINDS})
    for name in ("cutout_format", "background"):
        if name in overrides:
            changes[name] = overrides[name]
    frame_changes: dict[str, object] = {}
    if "framing" in overrides:
        frame_changes["mode"] = overrides["framing"]
    if "canvas" in overrides:
        size = re.fullmatch(r"(\d+)x(\d+)", overrides["canvas"])
        if not size:
            raise ValueError(f"canvas: expected WIDTHxHEIGHT, got {overrides['canvas']!r}")
        frame_changes.update(canvas_width=int(size.group(1)), canvas_height=int(size.group(2)))
    try:
        new_outputs = dataclasses.replace(outputs, **changes)  # type: ignore[arg-type]
        # unused-ignore: mypy types FramingSettings only when it resolves matteflow.* imports
        new_framing = dataclasses.replace(
            framing,
            **frame_changes,  # type: ignore[arg-type, unused-ignore]
        )
        check_framing(new_framing)
    except ValueError as err:
        raise ValueError(f"row setting {err}") from None
    return new_outputs, new_framing
