"""encode_xcf against GIMP itself: gimp-console (2.10) loads the file in batch mode, reports its
layers, masks and profile, and flattens it; the flattened image is the cutout plus its shadow.
Skipped where GIMP is not installed (apt-get install --no-install-recommends gimp)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matteflow.transforms.colour import SRGB_ICC
from matteflow.transforms.xcf import encode_xcf
from tests.transforms.test_psd import _image

GIMP = shutil.which("gimp-console-2.10") or shutil.which("gimp-console")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(GIMP is None, reason="GIMP (gimp-console) is not installed"),
]

_SCRIPT = """
(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE "{xcf}" "{xcf}")))
       (layers (vector->list (cadr (gimp-image-get-layers image)))))
  (gimp-message (string-append "precision "
    (number->string (car (gimp-image-get-precision image)))))
  (for-each
    (lambda (layer)
      (gimp-message (string-append
        "layer " (car (gimp-item-get-name layer))
        " " (number->string (car (gimp-item-get-visible layer)))
        " " (number->string (if (= (car (gimp-layer-get-mask layer)) -1) 0 1))
        " " (number->string (car (gimp-layer-get-apply-mask layer))))))
    layers)
  (gimp-message (string-append "icc " (number->string
    (car (gimp-image-get-color-profile image)))))
  (let ((merged (car (gimp-image-merge-visible-layers image CLIP-TO-IMAGE))))
    (file-png-save-defaults RUN-NONINTERACTIVE image merged "{png}" "{png}"))
  (gimp-quit 0))
"""


def test_gimp_opens_the_layers_and_flattens_to_cutout_over_shadow(tmp_path: Path) -> None:
    rgb, alpha = _image(70, 130)
    shadow = (alpha // 2).astype(np.uint8)
    shadow[:, 1:] = shadow[:, :-1]  # moved one pixel right, so it shows beside the subject
    xcf, png = tmp_path / "t.xcf", tmp_path / "merged.png"
    xcf.write_bytes(encode_xcf(rgb, alpha, SRGB_ICC, shadow=shadow))
    assert GIMP is not None
    result = subprocess.run(
        [GIMP, "-i", "-d", "-f", "-b", _SCRIPT.format(xcf=xcf, png=png)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    said = [
        line.split("Warning: ", 1)[1] for line in result.stderr.splitlines() if "Warning: " in line
    ]
    assert said == [
        "precision 150",  # 8-bit non-linear integer
        "layer Cutout 1 1 1",  # name, visible, has a mask, mask applied
        "layer Shadow 1 0 0",
        "layer Original 0 0 0",
        f"icc {len(SRGB_ICC)}",  # the profile GIMP uses: the parasite's, in bytes
    ], result.stderr
    merged = np.asarray(Image.open(png).convert("RGBA")).astype(np.float64)
    a, s = alpha / 255.0, shadow / 255.0
    expected_alpha = a + s * (1 - a)  # the cutout over its black shadow, on nothing
    assert np.abs(merged[..., 3] / 255.0 - expected_alpha).max() <= 0.5 / 255 + 1e-9
    # Colour: the cutout's, darkened by the black shadow where it shows through; GIMP stores
    # un-premultiplied 8-bit colour, so compare where the result is not nearly transparent.
    expected = rgb * a[..., None] / np.maximum(expected_alpha, 1e-9)[..., None]
    shown = expected_alpha > 0.2
    assert np.abs(merged[..., :3] - expected)[shown].max() <= 1.0
