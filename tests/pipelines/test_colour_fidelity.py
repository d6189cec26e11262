"""Acceptance: for each colour case, the opaque interior of a clear subject in the cutout matches
ImageCms's own sRGB conversion of the source (mean CIEDE2000 < 1), and the cutout says sRGB.

One run of the real job (`main`, tiny-isnet, in-process runner) writes every case. The tiny
model's alpha is arbitrary, but a PNG cutout keeps its RGB channels whatever the alpha, so the
comparison reads the RGB over the interior of the disc the source was drawn with.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image, ImageCms
from skimage.color import deltaE_ciede2000, rgb2lab

from matteflow.pipelines.remove_background import main
from matteflow.transforms.colour import SRGB_ICC
from matteflow.transforms.metrics import read_metrics
from tests.images import (
    adobe_rgb_profile,
    colour_subject,
    colour_subject_interior,
    display_p3_profile,
    encode,
    encode16,
)

SOURCE = colour_subject()  # 96 x 80 RGB
INTERIOR = colour_subject_interior()  # the disc, 4 px in from its edge
INTER_COLOUR_PROFILE = 34675  # TIFF/EXIF tag that embeds an ICC profile
_PNG_BIT_DEPTH = 24  # byte offset of the IHDR bit depth


def _srgb_reference(data: bytes) -> np.ndarray:
    """H x W x 3 uint8: Pillow's decode of `data`, converted by ImageCms from its embedded
    profile to sRGB (perceptual, the job's default), or taken as sRGB when untagged."""
    with Image.open(io.BytesIO(data)) as img:
        icc = img.info.get("icc_profile")
        if not icc:
            return np.asarray(img.convert("RGB"))
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.createProfile("sRGB")
        converted = ImageCms.profileToProfile(img, source, srgb, outputMode="RGB")
        assert converted is not None
        return np.asarray(converted)


def _sixteen_bit_reference(_: bytes) -> np.ndarray:
    """The 16-bit TIFF holds SOURCE x 257: its reference is ImageCms's 8-bit conversion of
    the 8-bit picture (Pillow cannot hold 16-bit RGB)."""
    return _srgb_reference(encode(SOURCE, "PNG", icc=adobe_rgb_profile()))


@dataclass(frozen=True)
class Case:
    file: str
    data: bytes
    reference: Callable[[bytes], np.ndarray] = _srgb_reference
    bit_depth: int = 8


def _sixteen_bit_adobe_tiff() -> bytes:
    return encode16(np.asarray(SOURCE).astype(np.uint16) * 257, "TIFF", icc=adobe_rgb_profile())


CASES = {
    case.file.split(".")[0]: case
    for case in [
        Case("srgb-jpeg.jpg", encode(SOURCE, "JPEG", quality=90)),
        Case("adobe-rgb-jpeg.jpg", encode(SOURCE, "JPEG", quality=90, icc=adobe_rgb_profile())),
        Case("display-p3-jpeg.jpg", encode(SOURCE, "JPEG", quality=90, icc=display_p3_profile())),
        Case("display-p3-png.png", encode(SOURCE, "PNG", icc=display_p3_profile())),
        # Untagged CMYK: the reference is Pillow's own convert("RGB"), as for untagged RGB.
        Case("cmyk-jpeg.jpg", encode(SOURCE.convert("CMYK"), "JPEG", quality=90)),
        Case("grey-png.png", encode(SOURCE.convert("L"), "PNG")),
        Case("adobe-rgb-tiff-16.tif", _sixteen_bit_adobe_tiff(), _sixteen_bit_reference, 16),
        Case("adobe-rgb-webp.webp", encode(SOURCE, "WEBP", quality=90, icc=adobe_rgb_profile())),
        Case("adobe-rgb-tiff.tif", encode(SOURCE, "TIFF", icc=adobe_rgb_profile())),
    ]
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every case through one run of the job; returns its output prefix."""
    root = tmp_path_factory.mktemp("colour")
    for case in CASES.values():
        (root / case.file).write_bytes(case.data)
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["uri"])
        writer.writeheader()
        writer.writerows({"uri": str(root / case.file)} for case in CASES.values())
    out = root / "out"
    # The tiny model's alpha is soft everywhere, so decontamination (which recolours soft
    # pixels on purpose) is off: this run checks colour management alone.
    argv = ["--manifest", str(manifest), "--output", str(out), "--model", "tiny-isnet"]
    assert main([*argv, "--set", "refine.decontaminate=false"]) == 0
    return out


def _cutout(out: Path, key: str) -> tuple[bytes, np.ndarray]:
    """(PNG bytes, H x W x 3 uint8 RGB) of the cutout of `key`; fails naming the row's error
    when the job wrote none."""
    rows = {r["id"]: r for r in read_metrics(str(out)).to_pylist()}
    row = rows[key]
    assert row["status"] == "ok", (
        f"{row['error_stage']}/{row['error_code']}: {row['error_message']}"
    )
    data = (out / "cutouts" / f"{key}.png").read_bytes()
    if data[_PNG_BIT_DEPTH] == 16:
        # Pillow truncates 16-bit RGBA to its high byte; round to 8 bits as the 8-bit path does.
        wide = imagecodecs.png_decode(data)[..., :3]
        return data, np.rint(wide / 257.0).astype(np.uint8)
    with Image.open(io.BytesIO(data)) as img:
        return data, np.asarray(img.convert("RGBA"))[..., :3]


def _mean_delta_e(actual: np.ndarray, expected: np.ndarray) -> float:
    """Mean CIEDE2000 between two sRGB uint8 images over INTERIOR."""
    lab_actual = rgb2lab(actual[INTERIOR].astype(np.float64) / 255.0)
    lab_expected = rgb2lab(expected[INTERIOR].astype(np.float64) / 255.0)
    return float(np.mean(deltaE_ciede2000(lab_actual, lab_expected)))


@pytest.mark.parametrize("key", list(CASES))
def test_cutout_interior_matches_imagecms_srgb_conversion(run: Path, key: str) -> None:
    case = CASES[key]
    data, rgb = _cutout(run, key)
    expected = case.reference(case.data)
    assert rgb.shape == expected.shape == (80, 96, 3)
    delta_e = _mean_delta_e(rgb, expected)
    assert delta_e < 1.0, f"{key}: mean CIEDE2000 {delta_e:.3f} over the subject's interior"
    assert data[_PNG_BIT_DEPTH] == case.bit_depth


@pytest.mark.parametrize("key", list(CASES))
def test_cutout_declares_srgb_and_no_other_profile(run: Path, key: str) -> None:
    data, _ = _cutout(run, key)
    with Image.open(io.BytesIO(data)) as img:
        assert img.info.get("icc_profile") == SRGB_ICC
        exif = img.getexif()
    # An InterColorProfile tag in the EXIF would be a second, contradicting profile.
    assert INTER_COLOUR_PROFILE not in exif, f"EXIF tags in the cutout: {sorted(exif)}"


def test_control_an_unconverted_adobe_rgb_source_fails_the_check(run: Path) -> None:
    # Proof that the check can fail: the cutout against the Adobe RGB numbers read as sRGB
    # (what a job that ignored the profile would write) is far over the threshold (~3.3).
    _, rgb = _cutout(run, "adobe-rgb-jpeg")
    with Image.open(io.BytesIO(CASES["adobe-rgb-jpeg"].data)) as img:
        unconverted = np.asarray(img.convert("RGB"))
    assert _mean_delta_e(rgb, unconverted) > 1.0
